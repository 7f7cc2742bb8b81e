"""The supervisor: a part that crashes is restarted with the shared policy, again and again."""

from __future__ import annotations

import asyncio

import pytest

from mchat_bot.net.retry import RetryPolicy
from mchat_bot.supervisor import Supervisor

FAST = RetryPolicy(first_delay=0.01, max_delay=0.02, tries=None)


async def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 (a condition on plain state, no event to wait for)
            await asyncio.sleep(0.005)


async def test_a_part_that_keeps_crashing_is_restarted_every_time() -> None:
    sup = Supervisor(policy=FAST)
    runs = 0

    async def crashing() -> None:
        nonlocal runs
        runs += 1
        if runs < 6:
            raise RuntimeError(f"crash {runs}")
        await asyncio.Event().wait()  # then it stays up

    sup.start("flaky", crashing)
    await _until(lambda: runs == 6 and sup.parts["flaky"].running)
    state = sup.parts["flaky"]
    assert state.restarts == 5 and state.last_error == "RuntimeError: crash 5"
    assert sup.healthy()
    await sup.stop()
    assert state.task is not None and state.task.cancelled()


async def test_healthy_is_false_while_a_part_waits_to_restart() -> None:
    sup = Supervisor(policy=RetryPolicy(first_delay=5.0, max_delay=5.0, tries=None))

    async def dies() -> None:
        raise OSError("down")

    sup.start("dead", dies)
    await _until(lambda: sup.parts["dead"].restarts == 1)
    assert not sup.healthy()
    await asyncio.wait_for(sup.stop(), 1.0)  # cancellation wins over the restart delay


async def test_a_part_that_returns_is_finished_not_restarted() -> None:
    sup = Supervisor(policy=FAST)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    sup.start("once", once)
    task = sup.parts["once"].task
    assert task is not None
    await asyncio.wait_for(task, 1.0)
    await asyncio.sleep(0.05)
    assert runs == 1 and sup.parts["once"].restarts == 0


async def test_cancelling_a_part_is_not_a_crash() -> None:
    sup = Supervisor(policy=FAST)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    sup.start("waits", waits)
    await started.wait()
    await sup.stop(["waits"])
    assert sup.parts["waits"].restarts == 0
    with pytest.raises(asyncio.CancelledError):
        await sup.parts["waits"].task  # type: ignore[misc]
