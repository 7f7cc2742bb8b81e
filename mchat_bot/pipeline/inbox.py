"""The durable inbox: at least once in (deduped by post id), exactly once out (sent-log).

States: ``pending`` -> ``claimed`` -> ``done`` | ``failed``; ``retry_later`` and ``recover`` put an
item back to ``pending``. Done items stay (until :meth:`Inbox.prune`) so a replayed or caught-up
post is still recognised as a duplicate. A thread (channel + root) has at most one claimed item and
its items are handed out in ``create_at`` order, so answers in one thread never overtake each other.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import structlog

from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboxItem:
    post_id: str
    message: IncomingMessage
    attempts: int  # failed attempts so far
    enqueued_at: float  # epoch s
    last_error: str
    reply: str | None  # the reply text computed by an earlier attempt, reused so parts stay stable


def thread_key(msg: IncomingMessage) -> str:
    return f"{msg.channel_id}:{msg.thread_root}"


class Inbox:
    """SQLite-backed queue on a :class:`Storage`; ``changed`` is set whenever work may be claimable."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.changed = asyncio.Event()

    @staticmethod
    def _now() -> float:
        return time.time()

    async def put(self, msg: IncomingMessage) -> bool:
        """Enqueue; False if this post id was seen before (pending, done or failed)."""
        now = self._now()
        async with self.storage.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO inbox"
                " (post_id, thread_key, create_at, payload, enqueued_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    msg.post_id,
                    thread_key(msg),
                    msg.create_at,
                    json.dumps(msg.to_dict(), ensure_ascii=False),
                    now,
                    now,
                ),
            )
            added = cur.rowcount == 1
        if added:
            self.changed.set()
        return added

    async def claim(self, limit: int = 1) -> list[InboxItem]:
        """Hand out up to ``limit`` due items, at most one per thread, the oldest post of each thread."""
        if limit <= 0:
            return []
        now = self._now()
        async with self.storage.transaction() as db:
            async with db.execute(
                """
                SELECT i.post_id, i.payload, i.attempts, i.enqueued_at, i.last_error, i.reply
                FROM inbox i
                WHERE i.state = 'pending'
                  AND i.not_before <= ?
                  AND NOT EXISTS (SELECT 1 FROM inbox c
                                  WHERE c.thread_key = i.thread_key AND c.state = 'claimed')
                  AND NOT EXISTS (SELECT 1 FROM inbox e
                                  WHERE e.thread_key = i.thread_key AND e.state = 'pending'
                                    AND (e.create_at < i.create_at
                                         OR (e.create_at = i.create_at AND e.seq < i.seq)))
                ORDER BY i.create_at, i.seq
                LIMIT ?
                """,
                (now, limit),
            ) as cur:
                rows = list(await cur.fetchall())
            items = []
            for row in rows:
                await db.execute(
                    "UPDATE inbox SET state = 'claimed', updated_at = ? WHERE post_id = ?", (now, row[0])
                )
                items.append(
                    InboxItem(
                        post_id=row[0],
                        message=IncomingMessage.from_dict(json.loads(row[1])),
                        attempts=int(row[2]),
                        enqueued_at=float(row[3]),
                        last_error=row[4],
                        reply=row[5],
                    )
                )
        return items

    async def _set_state(self, post_id: str, sql: str, params: tuple[object, ...]) -> None:
        async with self.storage.transaction() as db:
            await db.execute(sql, (*params, self._now(), post_id))
        # a finished or released item may unblock the next one of its thread
        self.changed.set()

    async def ack(self, post_id: str) -> None:
        """The reply is posted: done for good."""
        await self._set_state(
            post_id, "UPDATE inbox SET state = 'done', updated_at = ? WHERE post_id = ?", ()
        )

    async def save_reply(self, post_id: str, text: str) -> None:
        """Keep the computed reply so a retry sends the same parts instead of asking the LLM again."""
        async with self.storage.transaction() as db:
            await db.execute("UPDATE inbox SET reply = ? WHERE post_id = ?", (text, post_id))

    async def retry_later(self, post_id: str, error: str, delay: float) -> int:
        """Back to pending after ``delay`` seconds; returns the number of failed attempts so far."""
        async with self.storage.transaction() as db:
            await db.execute(
                "UPDATE inbox SET state = 'pending', attempts = attempts + 1, last_error = ?,"
                " not_before = ?, updated_at = ? WHERE post_id = ?",
                (error[:2000], self._now() + max(0.0, delay), self._now(), post_id),
            )
            async with db.execute("SELECT attempts FROM inbox WHERE post_id = ?", (post_id,)) as cur:
                row = await cur.fetchone()
        self.changed.set()
        return int(row[0]) if row else 0

    async def fail(self, post_id: str, error: str) -> None:
        """Give up on an item (it stays for dedupe and inspection)."""
        await self._set_state(
            post_id,
            "UPDATE inbox SET state = 'failed', attempts = attempts + 1, last_error = ?, updated_at = ?"
            " WHERE post_id = ?",
            (error[:2000],),
        )

    async def release(self, post_id: str) -> None:
        """Claimed -> pending without counting an attempt (shutdown mid-work)."""
        await self._set_state(
            post_id,
            "UPDATE inbox SET state = 'pending', updated_at = ? WHERE post_id = ? AND state = 'claimed'",
            (),
        )

    async def recover(self) -> int:
        """On start: items claimed by a process that died go back to pending. Returns how many."""
        async with self.storage.transaction() as db:
            cur = await db.execute(
                "UPDATE inbox SET state = 'pending', updated_at = ? WHERE state = 'claimed'", (self._now(),)
            )
            n = cur.rowcount
        if n:
            log.info("inbox.recovered", items=n)
            self.changed.set()
        return int(n)

    async def state(self, post_id: str) -> str | None:
        row = await self.storage.fetchone("SELECT state FROM inbox WHERE post_id = ?", (post_id,))
        return str(row[0]) if row else None

    async def depth(self) -> int:
        """Items not finished yet (pending or claimed)."""
        row = await self.storage.fetchone("SELECT COUNT(*) FROM inbox WHERE state IN ('pending', 'claimed')")
        return int(row[0]) if row else 0

    async def oldest_age(self) -> float:
        """Seconds since the oldest unfinished item was enqueued; 0.0 when empty."""
        row = await self.storage.fetchone(
            "SELECT MIN(enqueued_at) FROM inbox WHERE state IN ('pending', 'claimed')"
        )
        if not row or row[0] is None:
            return 0.0
        return max(0.0, self._now() - float(row[0]))

    async def prune(self, older_than: float = 14 * 86400.0) -> int:
        """Forget finished items (and their sent-log) older than ``older_than`` seconds."""
        cutoff = self._now() - older_than
        async with self.storage.transaction() as db:
            await db.execute(
                "DELETE FROM sent_log WHERE source_post_id IN (SELECT post_id FROM inbox"
                " WHERE state IN ('done', 'failed') AND updated_at < ?)",
                (cutoff,),
            )
            cur = await db.execute(
                "DELETE FROM inbox WHERE state IN ('done', 'failed') AND updated_at < ?", (cutoff,)
            )
            return int(cur.rowcount)

    async def record_sent(self, source_post_id: str, part: int, reply_post_id: str) -> None:
        async with self.storage.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO sent_log (source_post_id, part, reply_post_id, sent_at)"
                " VALUES (?, ?, ?, ?)",
                (source_post_id, part, reply_post_id, self._now()),
            )

    async def sent_parts(self, source_post_id: str) -> dict[int, str]:
        """part index -> reply post id, for the parts of this answer already posted."""
        rows = await self.storage.fetchall(
            "SELECT part, reply_post_id FROM sent_log WHERE source_post_id = ? ORDER BY part",
            (source_post_id,),
        )
        return {int(r[0]): str(r[1]) for r in rows}
