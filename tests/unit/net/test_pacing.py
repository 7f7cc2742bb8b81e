"""The pacer: what the server's X-RateLimit-* teach it, the caps, the priorities, a 429's hold.

Decisions are read through the public ``spare`` / ``budget`` / ``acquire``; the simulation drives the
dev server's own GCRA (the algorithm Mattermost runs) on a shared fake clock, so it is exact and
does not depend on how loaded the machine is.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from multidict import CIMultiDict

from mchat_bot.devserver.ratelimit import Gcra
from mchat_bot.net.pacing import RESERVE, Dropped, Pacer, Priority, rate_headers

REPLY, EDIT, COURTESY = Priority.REPLY, Priority.EDIT, Priority.COURTESY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def said(limit: int, remaining: int, reset: int) -> CIMultiDict[str]:
    """The headers as aiohttp hands them over (names looked up case-insensitively)."""
    return CIMultiDict(
        {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(remaining),
            "X-Ratelimit-Reset": str(reset),
        }
    )


class Waits:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def __call__(self, source: str, seconds: float) -> None:
        self.seen.append((source, seconds))


async def test_without_rate_headers_only_the_high_safety_cap_applies() -> None:
    clock = Clock()
    pacer = Pacer(safety_rate=100, clock=clock)
    assert pacer.spare(REPLY) == 100  # not 10: no fixed client cap of the server's default
    for _ in range(100):
        await pacer.acquire()
    assert pacer.spare(REPLY) == 0 and pacer.budget() == 0
    clock.now += 0.05
    assert pacer.spare(REPLY) == pytest.approx(5)  # 100/s


async def test_an_explicit_cap_applies_even_when_the_server_allows_more() -> None:
    clock = Clock()
    pacer = Pacer(safety_rate=100, cap_rate=5, clock=clock)
    ticket = await pacer.acquire()
    pacer.observe(ticket, said(1001, 1000, 1))
    assert pacer.spare(REPLY) == pytest.approx(4)  # the cap's bucket (5) less the one taken


async def test_the_bucket_is_learned_from_every_answer() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    tickets = [await pacer.acquire() for _ in range(5)]
    # the first request's answer: 50 left when the server checked it; four more went out since
    pacer.observe(tickets[0], said(101, 50, 6))
    assert pacer.server is not None and pacer.server.capacity == 101
    assert pacer.spare(REPLY) == pytest.approx(50 - 4 - RESERVE)
    # a later answer says more is left (the refill we did not count): believed
    pacer.observe(tickets[4], said(101, 60, 5))
    assert pacer.spare(REPLY) == pytest.approx(60 - RESERVE)
    # the refill rate is the best proven lower bound: max((101-50-1)/6, (101-60-1)/5) <= the true 10
    assert pacer.server.rate == pytest.approx(50 / 6)


async def test_the_server_turning_its_limiter_off_is_noticed() -> None:
    clock = Clock()
    pacer = Pacer(safety_rate=100, clock=clock)
    pacer.observe(await pacer.acquire(), said(101, 3, 10))
    assert pacer.spare(REPLY) == 0  # 3 left: the reserve
    for _ in range(3):
        pacer.observe(0, {})
    assert pacer.server is None
    assert pacer.spare(REPLY) == pytest.approx(99)  # the safety cap's bucket (one request taken)


async def test_two_checks_on_one_answer_the_tighter_counts() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    for remaining in ("80", "7"):  # Mattermost's per-user check adds a second set of headers
        headers.add("X-Ratelimit-Limit", "101")
        headers.add("X-Ratelimit-Remaining", remaining)
        headers.add("X-Ratelimit-Reset", "3")
    assert rate_headers(headers) == (101.0, 7.0, 3.0)
    assert rate_headers({"x-ratelimit-limit": "x", "x-ratelimit-remaining": "1"}) is None
    assert rate_headers({"x-ratelimit-limit": "nan", "x-ratelimit-remaining": "1"}) is None


async def test_courtesy_calls_go_only_from_a_spare_third_and_edits_only_with_a_free_token() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.observe(await pacer.acquire(), said(101, 100, 1))
    await pacer.acquire(COURTESY)  # plenty: goes
    pacer.observe(await pacer.acquire(), said(101, 30, 8))
    assert pacer.spare(COURTESY) == 0
    with pytest.raises(Dropped):
        await pacer.acquire(COURTESY)
    assert pacer.budget() == pytest.approx((30 - RESERVE) / (101 - RESERVE))
    await pacer.acquire(EDIT)  # a free token above the replies' reserve: an edit goes
    pacer.observe(await pacer.acquire(), said(101, 3, 10))
    with pytest.raises(Dropped):
        await pacer.acquire(EDIT)  # the reserve is not for edits either


async def test_while_a_reply_waits_nothing_of_a_lower_priority_goes() -> None:
    pacer = Pacer(safety_rate=20)
    for _ in range(20):
        await pacer.acquire()
    waiting = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert pacer.spare(COURTESY) == 0 and pacer.budget() == 0
    await asyncio.sleep(0.2)  # the safety bucket refills 4 tokens meanwhile: the reply takes one
    await waiting
    await pacer.acquire(EDIT)  # no one waits now: an edit goes again


async def test_replies_wait_their_turn_in_order_and_the_wait_is_reported() -> None:
    waits = Waits()
    pacer = Pacer(safety_rate=50, on_wait=waits)
    for _ in range(50):
        await pacer.acquire()
    done: list[int] = []

    async def reply(i: int) -> None:
        await pacer.acquire()
        done.append(i)

    await asyncio.gather(*(reply(i) for i in range(5)))
    assert done == [0, 1, 2, 3, 4]
    assert [source for source, _ in waits.seen] == ["cap"] * 5
    assert waits.seen[-1][1] >= 0.08  # five tokens at 50/s


async def test_a_429_holds_every_request_for_the_servers_wait() -> None:
    waits = Waits()
    pacer = Pacer(on_wait=waits)
    ticket = await pacer.acquire()
    pacer.observe(ticket, said(101, 0, 10), status=429)
    pacer.hold(0.3)
    assert pacer.spare(COURTESY) == 0 and pacer.budget() == 0
    with pytest.raises(Dropped):
        await pacer.acquire(COURTESY)
    started = time.monotonic()
    await pacer.acquire()
    assert time.monotonic() - started >= 0.25
    assert waits.seen and waits.seen[0][0] in ("server", "paced")


async def test_a_waiting_reply_can_be_cancelled_and_the_next_one_goes() -> None:
    pacer = Pacer(safety_rate=10)
    for _ in range(10):
        await pacer.acquire()
    first = asyncio.create_task(pacer.acquire())
    second = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.wait_for(second, timeout=1.0)
    assert first.cancelled()


async def test_against_mattermosts_gcra_the_burst_is_used_and_nothing_is_refused() -> None:
    """60 s of a client that always has work, paced by the answers of the server's own algorithm
    (10/s, burst 100): it spends the burst, then keeps to the server's rate, and no request is
    refused. The old fixed client bucket (10/s, burst 10) would have sent about 610."""
    clock = Clock()
    server = Gcra(per_sec=10, burst=100)
    pacer = Pacer(clock=clock)
    sent = refused = 0
    end = clock.now + 60.0
    in_first_second = 0
    start = clock.now
    while clock.now < end:
        while pacer.spare(REPLY) >= 1:
            ticket = await pacer.acquire()
            verdict = server.check("bot", now=clock.now)
            headers = CIMultiDict(verdict.headers())
            pacer.observe(ticket, headers, 429 if verdict.limited else 200)
            if verdict.limited:
                refused += 1
                pacer.hold(float(headers["Retry-After"]))
            else:
                sent += 1
                in_first_second += clock.now - start < 1.0
        clock.now += 0.01
    assert refused == 0
    assert in_first_second >= 90  # the burst, not 10 a second
    assert sent >= 0.95 * (101 + 10 * 60)  # the server's whole allowance, less the reserve
    assert pacer.server is not None and 9.0 <= pacer.server.rate <= 10.0  # a lower bound, close


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pacer(safety_rate=0)
    with pytest.raises(ValueError):
        Pacer(cap_rate=-1)


async def test_a_background_call_waits_for_spare_budget_and_goes_after_waiting_replies() -> None:
    pacer = Pacer(safety_rate=20)
    for _ in range(20):
        await pacer.acquire()
    with pytest.raises(Dropped):
        await pacer.acquire(EDIT)  # an edit is dropped when no token is free...
    order: list[str] = []

    async def call(name: str, priority: Priority) -> None:
        await pacer.acquire(priority)
        order.append(name)

    background = asyncio.create_task(call("background", Priority.BACKGROUND))  # ...a background call waits
    await asyncio.sleep(0)
    replies = [asyncio.create_task(call(f"reply{i}", Priority.REPLY)) for i in range(2)]
    await asyncio.wait_for(asyncio.gather(background, *replies), 5)
    assert order == ["reply0", "reply1", "background"]  # it never goes before a reply that waits
