"""Usernames by user id, asked of the server once each (the catch-up, the backfill, threads and
summaries all name the authors of posts they read)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Lookup = Callable[[str], Awaitable[Mapping[str, Any]]]


class UserNames:
    """``of(user_id)`` is the user's username, looked up once and kept. A failed lookup is not kept
    (asked again next time) and gives the fallback: the id itself with ``fallback_to_id``, else ""."""

    def __init__(
        self, lookup: Lookup, known: Mapping[str, str] | None = None, *, fallback_to_id: bool = False
    ) -> None:
        self._lookup = lookup
        self._names: dict[str, str] = dict(known or {})
        self._fallback_to_id = fallback_to_id

    async def of(self, user_id: str) -> str:
        if user_id not in self._names:
            fallback = user_id if self._fallback_to_id else ""
            try:
                self._names[user_id] = str((await self._lookup(user_id)).get("username", fallback))
            except Exception:
                return fallback
        return self._names[user_id]
