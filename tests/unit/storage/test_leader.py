"""The singleton jobs' leader: one daemon at a time holds the advisory lock, another takes it over
when the holder's session ends, and a job runs only while its daemon leads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from mchat_bot.storage import Storage
from mchat_bot.storage.leader import Leadership

pytestmark = pytest.mark.both_dialects


@contextlib.asynccontextmanager
async def leading(leader: Leadership) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(leader.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_one_daemon_leads_and_another_takes_over_when_its_session_ends(storage: Storage) -> None:
    leaders = [Leadership(storage, instance=n, try_every=0.1, check_every=0.1) for n in "ab"]
    tasks = [asyncio.create_task(leader.run()) for leader in leaders]
    try:
        await asyncio.wait_for(_anyone_leads(leaders), 5)
        if storage.dialect == "sqlite":  # one daemon a file: each always leads
            await asyncio.wait_for(leaders[1].held.wait(), 5)
            await asyncio.wait_for(leaders[0].held.wait(), 5)
            return
        await asyncio.sleep(0.5)
        [holder] = [i for i, leader in enumerate(leaders) if leader.held.is_set()]  # one, not two
        other = leaders[1 - holder]
        tasks[holder].cancel()  # the holder dies: its session ends, the lock is free
        await asyncio.wait_for(other.held.wait(), 5)
        assert leaders[holder].lost.is_set() and other.terms == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _anyone_leads(leaders: list[Leadership]) -> None:
    waits = [asyncio.create_task(leader.held.wait()) for leader in leaders]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()


async def test_a_singleton_job_stops_when_the_lead_is_lost_and_starts_again_with_the_next_term(
    storage: Storage,
) -> None:
    if storage.dialect == "sqlite":
        pytest.skip("on SQLite the lead is never lost")
    runs: list[str] = []
    stopped = asyncio.Event()

    async def job() -> None:
        runs.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    holder = Leadership(storage, instance="a", try_every=0.1, check_every=0.1)
    part = asyncio.create_task(holder.singleton("job", job)())
    await asyncio.sleep(0.2)
    assert runs == []  # not leading yet
    async with leading(holder):
        await asyncio.wait_for(holder.held.wait(), 5)
        await asyncio.sleep(0.1)
        assert runs == ["started"]
        # the database ends the holder's session (a lost connection): the job stops at once
        await storage.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid != pg_backend_pid()"
        )
        await asyncio.wait_for(stopped.wait(), 5)
        # it connects again and leads again: the job starts afresh in the new term
        for _ in range(100):
            if runs == ["started", "started"]:
                break
            await asyncio.sleep(0.05)
        assert runs == ["started", "started"] and holder.terms == 2
    part.cancel()
    await asyncio.gather(part, return_exceptions=True)
