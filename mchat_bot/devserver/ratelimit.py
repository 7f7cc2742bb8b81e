"""GCRA rate limiter as in throttled/throttled v2, which Mattermost wraps around its router (section 6)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class Verdict:
    limited: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until the next request is allowed (limited only)

    def headers(self) -> dict[str, str]:
        h = {
            "X-Ratelimit-Limit": str(self.limit),
            "X-Ratelimit-Remaining": str(self.remaining),
            "X-Ratelimit-Reset": str(math.ceil(self.reset_after)),
        }
        if self.limited:
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return h


class Gcra:
    """Per-key theoretical arrival times; `limit` = burst + 1 requests may pass at once."""

    def __init__(self, per_sec: float = 10.0, burst: int = 100, max_keys: int = 10_000) -> None:
        self.interval = 1.0 / per_sec
        self.tolerance = self.interval * (burst + 1)
        self.limit = burst + 1
        self.max_keys = max_keys
        self._tat: dict[str, float] = {}

    def check(self, key: str, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + self.interval
        allow_at = new_tat - self.tolerance
        diff = now - allow_at
        if diff < 0:
            ttl = tat - now
            limited, retry = True, -diff
        else:
            if len(self._tat) >= self.max_keys and key not in self._tat:
                self._tat.pop(next(iter(self._tat)))
            self._tat[key] = new_tat
            ttl = new_tat - now
            limited, retry = False, 0.0
        nxt = self.tolerance - ttl
        remaining = int(nxt / self.interval + 1e-9) if nxt > -self.interval else 0
        return Verdict(limited, self.limit, max(0, remaining), ttl, retry)
