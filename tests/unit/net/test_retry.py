"""The one retry policy: its delays, what it retries, the server's wait, and a loop that uses it."""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import pytest

from mchat_bot.net.retry import Backoff, HttpStatusError, RetryPolicy, is_transient, server_wait


def test_delays_are_full_jitter_capped_and_never_none() -> None:
    """backoff.expo yields None first: an unprimed generator was the TypeError that killed the
    catch-up and the supervisor. Every delay is a number in [0, min(cap, first * 2**n)]."""
    delays = RetryPolicy(first_delay=0.5, max_delay=4.0).delays()
    got = [next(delays) for _ in range(300)]
    assert all(isinstance(d, float) and 0.0 <= d <= 4.0 for d in got)
    assert got[0] <= 0.5 and got[1] <= 1.0 and got[2] <= 2.0
    assert max(got[10:]) > 2.0  # it grows to the cap (with overwhelming probability)
    assert len(set(got)) > 250  # jittered, not a fixed ladder


def test_what_is_worth_another_try() -> None:
    for status in (408, 429, 500, 502, 503, 504, 599):
        assert is_transient(HttpStatusError(status))
    for status in (400, 401, 403, 404, 413):
        assert not is_transient(HttpStatusError(status))
    assert is_transient(aiohttp.ClientConnectionError()) and is_transient(TimeoutError())
    assert is_transient(ConnectionResetError()) and not is_transient(ValueError("a bug"))


def test_the_servers_wait() -> None:
    assert server_wait({"retry-after": "3"}) == 3.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (server_wait({"retry-after": when}) or 0) <= 31
    assert server_wait({"x-ratelimit-reset": "2"}) == 2.0
    assert server_wait({"x-ratelimit-reset": "2"}, rate_limited=False) is None  # a 503 rides the header too
    assert server_wait({"retry-after": "nan"}) is None and server_wait({"retry-after": "soon"}) is None
    assert server_wait({"retry-after": "-5"}) == 0.0
    assert server_wait({}) is None


async def test_call_retries_transient_failures_then_returns() -> None:
    policy = RetryPolicy(first_delay=0.001, max_delay=0.01, tries=5)
    seen: list[tuple[int, float]] = []
    answers: list[BaseException | str] = [HttpStatusError(503), aiohttp.ClientConnectionError(), "ok"]

    async def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert await policy.call(flaky, on_retry=lambda exc, n, d: seen.append((n, d))) == "ok"
    assert [n for n, _ in seen] == [1, 2]


async def test_call_gives_up_on_a_final_answer_and_after_the_last_try() -> None:
    policy = RetryPolicy(first_delay=0.001, max_delay=0.01, tries=3)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise HttpStatusError(403)

    with pytest.raises(HttpStatusError):
        await policy.call(refused)
    assert calls == 1

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise HttpStatusError(503)

    calls = 0
    with pytest.raises(HttpStatusError):
        await policy.call(down)
    assert calls == 3


async def test_a_servers_retry_after_is_waited_but_capped() -> None:
    policy = RetryPolicy(first_delay=0.001, max_delay=0.01, tries=2, max_server_wait=0.05)
    waits: list[float] = []
    answers = [HttpStatusError(429, retry_after=3600.0), None]

    async def limited() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    started = time.monotonic()
    await policy.call(limited, on_retry=lambda exc, n, d: waits.append(d))
    assert waits == [0.05] and time.monotonic() - started < 1.0


async def test_forever_means_forever_and_cancellation_wins() -> None:
    policy = RetryPolicy(first_delay=0.001, max_delay=0.002, tries=None)
    calls = 0

    async def never() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    task = asyncio.create_task(policy.call(never))
    await asyncio.sleep(0.3)
    assert not task.done() and calls > 20
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_loops_backoff_restarts_after_a_success() -> None:
    b: Backoff = RetryPolicy(first_delay=1.0, max_delay=64.0, tries=None).backoff()
    for _ in range(8):
        b.next()
    assert b.failures == 8
    b.reset()
    assert b.failures == 0 and b.next() <= 1.0
    assert b.next(HttpStatusError(429, retry_after=0.25)) == 0.25


def test_a_variant_is_the_same_formula() -> None:
    base = RetryPolicy(first_delay=0.5, max_delay=8.0, tries=3)
    one = base.but(tries=1)
    assert (one.first_delay, one.max_delay, one.tries) == (0.5, 8.0, 1) and base.tries == 3
