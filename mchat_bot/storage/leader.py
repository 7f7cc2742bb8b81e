"""Which daemon runs the singleton jobs (catch-up, auto-join, pruning, backfill) when several share
one PostgreSQL: the holder of a session-level advisory lock, taken over when the holder dies.

The lock is held on a connection of its own, outside the pool: PostgreSQL releases it when that
session ends, i.e. when the holder is killed, its machine vanishes (TCP keepalives end the session
within seconds) or it loses the database. Every other daemon tries to take it about once a second.
The holder asks its connection every few seconds; a connection that no longer answers means the
lock may be someone else's now, so its jobs stop at once. On SQLite one daemon owns the file and
always leads.

A job is wrapped once, where the daemon starts it (:meth:`Leadership.singleton`): it runs while
this daemon leads and is cancelled when it stops leading; each job resumes from what it keeps in
storage (the cursor, a backfill's page), so the next leader finishes what the last one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from mchat_bot.net.retry import RetryPolicy
from mchat_bot.storage.base import Storage

log = structlog.get_logger(__name__)

# pg_advisory_lock key of the singleton jobs (any constant; the same for every daemon)
LEADER_LOCK = 0x6D63_6861_746C_6561  # "mchatlea"
TRY_EVERY_S = 1.0
CHECK_EVERY_S = 2.0
CHECK_TIMEOUT_S = 3.0
RECONNECT_POLICY = RetryPolicy(first_delay=0.5, max_delay=10.0, tries=None, retryable=lambda exc: True)

Job = Callable[[], Coroutine[Any, Any, None]]


class Leadership:
    """``run()`` is a supervised part; ``held`` is set while this daemon leads."""

    def __init__(
        self,
        storage: Storage,
        *,
        instance: str = "",
        try_every: float = TRY_EVERY_S,
        check_every: float = CHECK_EVERY_S,
    ) -> None:
        self.storage = storage
        self.instance = instance
        self.try_every = try_every
        self.check_every = check_every
        self.held = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost.set()
        self.terms = 0  # how many times this daemon took the lead

    def _set(self, held: bool) -> None:
        if held == self.held.is_set():
            return
        if held:
            self.terms += 1
            self.lost.clear()
            self.held.set()
            log.info("leader.acquired", instance=self.instance, term=self.terms)
        else:
            self.held.clear()
            self.lost.set()
            log.warning("leader.lost", instance=self.instance)

    async def run(self) -> None:
        """For the supervisor: lead while the lock is ours. A lost database is waited out here with
        the retry policy (not a crash: the part keeps running, so the watchdog is still fed)."""
        if self.storage.dialect == "sqlite":
            self._set(True)
            await asyncio.Event().wait()
        delays = RECONNECT_POLICY.backoff()
        while True:
            started = time.monotonic()
            try:
                await self._lead()
            except Exception as exc:  # the connection broke or the database is away
                if time.monotonic() - started > self.check_every * 3:
                    delays.reset()
                delay = delays.next(exc)
                log.warning(
                    "leader.connection_lost",
                    error=f"{type(exc).__name__}: {exc}"[:200],
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _lead(self) -> None:
        """Wait for the lock on a connection of our own, then hold it until that connection fails."""
        from mchat_bot.storage.postgres import PostgresStorage  # the driver only for PostgreSQL

        if not isinstance(self.storage, PostgresStorage):
            raise RuntimeError(f"{type(self.storage).__name__} cannot hold a lock")
        conn = await self.storage.dedicated_connection()
        try:
            while True:
                if await self._ask(conn, "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)):
                    break
                await asyncio.sleep(self.try_every)  # another daemon leads: ask again shortly
            self._set(True)
            while True:
                await asyncio.sleep(self.check_every)
                await self._ask(conn, "SELECT true", ())
        finally:
            self._set(False)
            with contextlib.suppress(Exception):
                await conn.close()  # ends the session: the lock is free for another daemon

    @staticmethod
    async def _ask(conn: Any, sql: str, params: tuple[object, ...]) -> bool:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            row = await (await conn.execute(sql, params)).fetchone()
        return bool(row and row[0])

    def singleton(self, name: str, job: Job) -> Job:
        """``job`` as a part that runs only while this daemon leads (a crash still reaches the
        supervisor; losing the lead cancels it and waits for the next term)."""

        async def part() -> None:
            while True:
                await self.held.wait()
                task: asyncio.Task[None] = asyncio.create_task(job(), name=f"singleton:{name}")
                lost = asyncio.create_task(self.lost.wait())
                try:
                    await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                if task.done() and not task.cancelled() and self.held.is_set():
                    task.result()  # raises the job's crash for the supervisor
                    return  # the job is finished for good
                log.info("leader.job_stopped", job=name)

        return part
