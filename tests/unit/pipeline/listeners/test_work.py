"""The listeners' loop: an item that fails for a passing reason is tried again until it succeeds
(within the policy's tries), one that fails for good is dropped, and neither stops the items after it."""

from __future__ import annotations

import asyncio

from mchat_bot.net.retry import HttpStatusError
from mchat_bot.pipeline.listeners.work import FOLLOW_POLICY, work_off
from mchat_bot.storage import StorageUnavailable

FAST = FOLLOW_POLICY.but(first_delay=0.01, max_delay=0.02)


async def test_passing_failures_are_retried_and_a_final_one_does_not_stop_the_loop() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    failures = {"edit": [HttpStatusError(503), StorageUnavailable("restarting")], "bad": [ValueError("no")]}
    done: list[str] = []
    tries: dict[str, int] = {}

    async def apply(item: str) -> None:
        tries[item] = tries.get(item, 0) + 1
        if failures.get(item):
            raise failures[item].pop(0)
        done.append(item)

    for item in ("edit", "bad", "after"):
        queue.put_nowait(item)
    task = asyncio.create_task(work_off(queue, apply, event="test", fields=lambda i: {"id": i}, policy=FAST))
    try:
        async with asyncio.timeout(5):
            while "after" not in done:  # noqa: ASYNC110 - polled list
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert done == ["edit", "after"]
    assert tries == {"edit": 3, "bad": 1, "after": 1}  # a ValueError is final: not tried again


async def test_an_item_that_keeps_failing_is_given_up_after_the_policy_tries() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    tries = 0

    async def apply(_item: str) -> None:
        nonlocal tries
        tries += 1
        raise HttpStatusError(502)

    queue.put_nowait("edit")
    task = asyncio.create_task(work_off(queue, apply, event="test", fields=lambda i: {"id": i}, policy=FAST))
    try:
        async with asyncio.timeout(5):
            while tries < (FAST.tries or 0) or queue.qsize():  # noqa: ASYNC110 - polled counter
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # time for a try too many, had the policy been ignored
        assert not task.done()  # given up on the item, the loop waits for the next one
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert tries == FAST.tries
