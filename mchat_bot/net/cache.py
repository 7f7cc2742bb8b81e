"""A small expiring map for what a remote service answered, asked again within seconds."""

from __future__ import annotations

import time
from typing import Any


class TTLCache:
    """Entries live ``ttl`` seconds; at ``max_entries`` expired rows (else the oldest) make room."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._rows: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        row = self._rows.get(key)
        if row is None or row[0] < time.monotonic():
            self._rows.pop(key, None)
            return False, None
        return True, row[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._rows) >= self.max_entries:
            now = time.monotonic()
            for k in [k for k, (until, _) in self._rows.items() if until < now] or list(self._rows)[:1]:
                self._rows.pop(k, None)
        self._rows[key] = (time.monotonic() + self.ttl, value)

    def drop(self, key: Any) -> None:
        self._rows.pop(key, None)
