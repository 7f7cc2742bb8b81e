"""The background indexer: embeds the backlog of learning channels' lines, a small batch at a time.

It runs beside the workers as a supervised part. The embedder is one model behind one lock, and a
line with its context costs it ~150-250 ms of CPU here, so lines are embedded one per call and
never while a question waits (MessageIndex.add): a question waits for one line at most. A batch
is what is read from the log and written to the index together. A batch that fails raises, and
the supervisor restarts the loop with the one retry policy;
nothing is lost, since the backlog is the table itself. Expiry runs here too, every hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.lines import ChatLog

log = structlog.get_logger(__name__)

IDLE_POLL_S = 5.0  # a safety net only: `wake` is called on every new line
EXPIRE_EVERY_S = 3600.0


class Indexer:
    def __init__(
        self, lines: ChatLog, index: MessageIndex, *, batch: int = 8, retention_days: int = 365
    ) -> None:
        self.lines = lines
        self.index = index
        self.batch = batch
        self.retention_days = retention_days
        self._wake = asyncio.Event()
        self._expired_at = 0.0
        self.indexed = 0  # lines embedded since start
        self.expired = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """For the supervisor: index the backlog until cancelled."""
        while True:
            if time.monotonic() - self._expired_at >= EXPIRE_EVERY_S:
                await self.expire()
            done = await self.step()
            if not done:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def step(self) -> int:
        """Index one batch of the backlog; how many lines it indexed (0 = the backlog is empty)."""
        lines = await self.lines.backlog(self.batch)
        if not lines:
            return 0
        await self.index.add(lines)
        await self.lines.mark_indexed(lines)
        present = await self.lines.present([line.post_id for line in lines])
        gone = [line.post_id for line in lines if line.post_id not in present]
        if gone:  # deleted while being embedded: the upsert must not bring them back
            await self.index.store.delete_many(gone)
        await self.lines.requeue(await self.index.context_gained(lines), only_indexed=True)
        self.indexed += len(lines)
        return len(lines)

    async def drain(self) -> int:
        """Index until the backlog is empty (the CLI's backfill, tests)."""
        total = 0
        while n := await self.step():
            total += n
        return total

    async def expire(self) -> int:
        """Delete lines older than the retention, from the table and the index."""
        self._expired_at = time.monotonic()
        cutoff = int((time.time() - self.retention_days * 86400) * 1000)
        total = 0
        while ids := await self.lines.older_than(cutoff):
            await self.index.forget(ids)  # the newer lines they were context of are embedded again
            total += len(ids)
        if total:
            self.expired += total
            log.info("knowledge_expired", lines=total, retention_days=self.retention_days)
        return total
