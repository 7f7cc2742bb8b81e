"""The web doors' waiting requests, and what a late slash answer needs (kept in SQLite).

When an HTTP request is still waiting for this post's answer (an outgoing webhook or slash command
inside its budget), the reply writer (:mod:`mchat_bot.pipeline.replying`) hands the text to it here
and the item is acknowledged without a REST post; when the waiter has already given up, the writer
takes the door's late path (``response_url`` for slash commands; REST in the thread, or an incoming
webhook, for outgoing webhooks).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

DOOR_OUTGOING = "outgoing_webhook"
DOOR_SLASH = "slash"
RESPONSE_URL_USES = 5  # Mattermost accepts at most five posts per response_url (section 8)


class Waiters:
    """post id -> the future an HTTP request awaits. Single event loop: no locks needed."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[str]] = {}

    def register(self, post_id: str) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._futures[post_id] = fut
        return fut

    def discard(self, post_id: str) -> None:
        fut = self._futures.pop(post_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def deliver(self, post_id: str, text: str) -> bool:
        """Hand ``text`` to a request still waiting; False when none is (it gave up, or never was)."""
        fut = self._futures.pop(post_id, None)
        if fut is None or fut.done():
            return False
        fut.set_result(text)
        return True

    def __len__(self) -> int:
        return len(self._futures)


async def wait_answer(waiters: Waiters, post_id: str, fut: asyncio.Future[str], budget: float) -> str | None:
    """The answer within ``budget`` seconds, or None (the waiter is withdrawn atomically on timeout)."""
    try:
        async with asyncio.timeout(max(0.0, budget)):
            return await asyncio.shield(fut)
    except TimeoutError:
        if fut.done() and not fut.cancelled():  # delivered in the same loop turn as the timeout
            return fut.result()
        return None
    finally:
        waiters.discard(post_id)


@dataclass(frozen=True, slots=True)
class DoorContext:
    post_id: str
    door: str
    response_url: str
    response_type: str
    uses: int


class DoorContexts:
    """What a late slash answer needs (``response_url``, ``response_type``), kept in SQLite.

    Durable, so an item recovered after a restart still knows where its answer goes.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def save(self, post_id: str, door: str, response_url: str, response_type: str) -> None:
        await self.storage.execute(
            "INSERT INTO door_context (post_id, door, response_url, response_type, uses, created_at)"
            " VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (post_id) DO UPDATE SET door = excluded.door,"
            " response_url = excluded.response_url, response_type = excluded.response_type, uses = 0,"
            " created_at = excluded.created_at",
            (post_id, door, response_url, response_type, time.time()),
        )

    async def get(self, post_id: str) -> DoorContext | None:
        row = await self.storage.fetchone(
            "SELECT post_id, door, response_url, response_type, uses FROM door_context WHERE post_id = ?",
            (post_id,),
        )
        if row is None:
            return None
        return DoorContext(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]))

    async def add_uses(self, post_id: str, n: int) -> None:
        await self.storage.execute("UPDATE door_context SET uses = uses + ? WHERE post_id = ?", (n, post_id))

    async def prune(self, older_than: float = 86400.0) -> None:
        await self.storage.execute(
            "DELETE FROM door_context WHERE created_at < ?", (time.time() - older_than,)
        )
