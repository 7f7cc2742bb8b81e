"""IdleTimeout: progress keeps the block alive however long it runs; silence ends it."""

from __future__ import annotations

import asyncio

import pytest

from mchat_bot.net.idle import IdleTimeout


async def test_progress_keeps_a_long_block_alive() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with IdleTimeout(0.2) as idle:
        for _ in range(12):  # 0.6 s in all, three times the timeout, never 0.2 s of silence
            await asyncio.sleep(0.05)
            idle.touch()
    assert loop.time() - started >= 0.6


async def test_silence_ends_the_block_with_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    async with IdleTimeout(1.0) as idle:
        for _ in range(4):
            await asyncio.sleep(0.05)
            idle.touch()
        with pytest.raises(TimeoutError):
            async with IdleTimeout(0.2):
                await asyncio.sleep(5)
        # the inner silence counted from its own start; the outer block is still alive
        idle.touch()
    with pytest.raises(TimeoutError):
        async with IdleTimeout(0.2) as idle:
            await asyncio.sleep(0.1)
            idle.touch()
            last = loop.time()
            await asyncio.sleep(5)
    waited = loop.time() - last
    assert 0.19 <= waited < 1.0  # the deadline is the last progress plus the timeout


async def test_an_error_inside_passes_through_and_the_timer_is_gone() -> None:
    with pytest.raises(ValueError):
        async with IdleTimeout(0.1):
            raise ValueError("boom")
    await asyncio.sleep(0.2)  # a left-over timer would cancel this task now
