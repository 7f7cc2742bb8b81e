"""Rate pacing for one remote: pace to what the server says, with priorities, under optional caps.

A server that limits its clients (Mattermost with its limiter on: GCRA, by default 10/s with a burst
of 100) says on every answer how much is left: ``X-RateLimit-Limit`` (the bucket's size),
``X-RateLimit-Remaining`` (requests still allowed at once) and ``X-RateLimit-Reset`` (seconds, rounded
up, until the bucket is full again). The :class:`Pacer` keeps a model of that bucket: its level is
set from every answer (less the requests we let go after the one answered), its refill rate is the
best lower bound the answers prove, ``(Limit - Remaining - 1) / Reset``. A 429 empties it and holds
every request until the server's wait is over. A server that says nothing (its limiter off) gets only
a high safety cap; an operator's explicit cap applies always.

Priorities, highest first:

- ``REPLY``: replies, their continuation parts and the reads an answer needs. They queue in order and
  wait for their turn; they are never dropped. A small reserve of the server's bucket (3 of
  Mattermost's 101) stays unspent, for the requests we cannot see (other clients on our address).
- ``EDIT``: stream edits. They go only when a token is free and no reply waits, else ``Dropped``; the
  streaming step stretches its interval by :meth:`Pacer.budget`.
- ``COURTESY``: typing, reactions, greetings. They go only while a third of the budget is spare and no
  reply waits, else ``Dropped``: they are the first thing given up under pressure.
- ``BACKGROUND``: work that may take its time but must not be lost (a channel's history read for
  channel knowledge). Like a stream edit it goes only when a token is free and no reply waits, but
  it waits for that instead of being dropped.

No project imports: the REST client wires it to the wire and to the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Dropped", "Pacer", "Priority", "rate_headers"]

RESERVE = 3.0  # tokens of the server's bucket that replies leave for what we cannot see...
RESERVE_SHARE = 0.05  # ...at most this share of it (a small bucket keeps almost all for replies)
COURTESY_SHARE = 1 / 3  # courtesy calls go only while this share of a bucket is spare
SILENT_ANSWERS = 3  # answers in a row without rate headers: the server's limiter is off
UNKNOWN_RATE = 1.0  # tokens/s assumed before the answers prove a refill rate (only ever too low)
BACKGROUND_RECHECK_S = 0.05  # a background call waiting behind replies looks again this often
ESTIMATE_WINDOW_S = 30.0  # a proven rate is remembered for one to two windows (a limit may change)


class Priority(enum.IntEnum):
    REPLY = 0
    EDIT = 1
    COURTESY = 2
    BACKGROUND = 3


class Dropped(Exception):
    """Not sent: the budget was too short for a call of this priority (nothing reached the server)."""

    def __init__(self, priority: Priority) -> None:
        super().__init__(f"rate budget short: {priority.name.lower()} call not sent")
        self.priority = priority


def _no_wait(source: str, seconds: float) -> None:
    return None


@dataclass(slots=True)
class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    capacity: float
    rate: float
    level: float
    stamp: float

    @classmethod
    def full(cls, rate: float, now: float) -> _Bucket:
        capacity = max(1.0, rate)  # one second's worth at once
        return cls(capacity, rate, capacity, now)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now


class _RateEstimate:
    """The highest proven lower bound of the server's refill rate over the last one to two windows."""

    def __init__(self) -> None:
        self._current = 0.0
        self._previous = 0.0
        self._since = -math.inf

    def add(self, bound: float, now: float) -> None:
        if now - self._since >= ESTIMATE_WINDOW_S:
            self._previous = self._current if now - self._since < 2 * ESTIMATE_WINDOW_S else 0.0
            self._current = 0.0
            self._since = now
        self._current = max(self._current, bound)

    def value(self) -> float:
        return max(self._current, self._previous)


def _header_values(headers: Mapping[str, str], name: str) -> list[float]:
    getall = getattr(headers, "getall", None)  # aiohttp's multidict: a header may come twice
    raw = getall(name, []) if callable(getall) else [headers.get(name)]
    values = []
    for value in raw:
        try:
            number = float(str(value).strip())
        except ValueError:
            continue
        if math.isfinite(number) and number >= 0:
            values.append(number)
    return values


def rate_headers(headers: Mapping[str, str]) -> tuple[float, float, float] | None:
    """(limit, remaining, reset seconds) from ``X-RateLimit-*``, None when the server sent none. With
    two checks on one request (Mattermost's per-user limiter) the tighter one counts."""
    limits = _header_values(headers, "x-ratelimit-limit")
    remaining = _header_values(headers, "x-ratelimit-remaining")
    if not limits or not remaining:
        return None
    resets = _header_values(headers, "x-ratelimit-reset")
    return max(1.0, min(limits)), min(remaining), max(resets) if resets else 0.0


class Pacer:
    """Paces the requests to one remote (see the module's text). ``acquire()`` before each request
    returns a ticket; ``observe(ticket, headers, status)`` with each answer; ``hold(seconds)`` after a
    429. ``on_wait(source, seconds)`` hears every wait: ``paced`` (the server's bucket), ``cap`` (the
    operator's or the safety cap), ``server`` (held after a 429)."""

    def __init__(
        self,
        *,
        safety_rate: float = 1000.0,
        cap_rate: float | None = None,
        reserve: float = RESERVE,
        on_wait: Callable[[str, float], None] = _no_wait,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if safety_rate <= 0 or (cap_rate is not None and cap_rate <= 0):
            raise ValueError("rates must be > 0")
        self._clock = clock
        now = clock()
        self.safety = _Bucket.full(safety_rate, now)
        self.cap = _Bucket.full(cap_rate, now) if cap_rate else None
        self.server: _Bucket | None = None  # learned from the answers' headers
        self.reserve = reserve
        self.on_wait = on_wait
        self._estimate = _RateEstimate()
        self._hold_until = 0.0
        self._taken = 0  # requests let go so far: a ticket is this count after its own
        self._silent = 0
        self._queue: deque[asyncio.Event] = deque()  # replies waiting, in order

    # --- asking -------------------------------------------------------------------------------

    async def acquire(self, priority: Priority = Priority.REPLY) -> int:
        """Wait for a reply's turn (in order), or raise :class:`Dropped` for a lower priority that
        cannot go at once. Returns the ticket for :meth:`observe`."""
        if not self._queue and self._shortfall(priority)[0] <= 0:
            return self._take()
        if priority is Priority.BACKGROUND:
            return await self._when_spare(priority)
        if priority is not Priority.REPLY:
            raise Dropped(priority)
        started = self._clock()
        source = "paced"
        me = asyncio.Event()
        self._queue.append(me)
        try:
            while True:
                if self._queue[0] is me:
                    wait, holder = self._shortfall(priority)
                    if wait <= 0:
                        break
                    source = holder
                else:
                    wait = None  # the one ahead wakes us when it leaves
                me.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await me.wait()
        finally:
            self._queue.remove(me)
            self._wake()
        ticket = self._take()
        self.on_wait(source, self._clock() - started)
        return ticket

    async def _when_spare(self, priority: Priority) -> int:
        """Wait until no reply waits and the budget a call of ``priority`` may spend is there."""
        started = self._clock()
        while True:
            wait, source = self._shortfall(priority)
            if not self._queue and wait <= 0:
                ticket = self._take()
                self.on_wait(source, self._clock() - started)
                return ticket
            # while replies queue, look again soon: they are let go one by one
            await asyncio.sleep(max(wait, BACKGROUND_RECHECK_S))

    def spare(self, priority: Priority = Priority.COURTESY) -> float:
        """Tokens a call of ``priority`` may spend right now (0 while a reply waits or after a 429)."""
        if self._queue or self._clock() < self._hold_until:
            return 0.0
        now = self._clock()
        spare = math.inf
        for bucket in self._buckets():
            bucket.refill(now)
            spare = min(spare, bucket.level - self._floor(bucket, priority))
        return max(0.0, spare)

    def budget(self) -> float:
        """How much of the allowance is left, 0 (a reply waits, or held after a 429) to 1 (full)."""
        if self._queue or self._clock() < self._hold_until:
            return 0.0
        now = self._clock()
        share = 1.0
        for bucket in self._buckets():
            bucket.refill(now)
            floor = self._floor(bucket, Priority.REPLY)
            usable = bucket.capacity - floor
            share = min(share, (bucket.level - floor) / usable if usable > 0 else 1.0)
        return max(0.0, share)

    # --- what the server said -----------------------------------------------------------------

    def observe(self, ticket: int, headers: Mapping[str, str], status: int = 200) -> None:
        """An answer to the request that got ``ticket``: learn the server's bucket from its headers."""
        learned = rate_headers(headers)
        if learned is None:
            if status != 429:
                self._silent += 1
                if self._silent >= SILENT_ANSWERS and self.server is not None:
                    self.server = None  # the server's limiter was turned off: only the caps remain
                    self._wake()
            return
        self._silent = 0
        limit, remaining, reset = learned
        now = self._clock()
        if self.server is None or self.server.capacity != limit:
            self.server = _Bucket(limit, UNKNOWN_RATE, limit, now)
            self._estimate = _RateEstimate()
        if reset > 0:
            # the server was short of (limit - remaining) tokens, less the one it rounded away, and
            # takes at most `reset` seconds to refill them: a rate no higher than the true one
            self._estimate.add(max(0.0, limit - remaining - 1) / reset, now)
        server = self.server
        server.rate = self._estimate.value() or UNKNOWN_RATE
        # what it had left when it answered, less what we let go after this request
        server.level = 0.0 if status == 429 else max(0.0, min(limit, remaining - (self._taken - ticket)))
        server.stamp = now  # the refill since the server's check is not counted: only ever too low
        self._wake()

    def hold(self, seconds: float) -> None:
        """A 429: nothing goes for ``seconds`` (what the server asked, as the retry policy read it)."""
        now = self._clock()
        self._hold_until = max(self._hold_until, now + max(0.0, seconds))
        if self.server is not None:
            self.server.refill(now)
            self.server.level = 0.0
        self._wake()

    # --- the model ----------------------------------------------------------------------------

    def _buckets(self) -> list[_Bucket]:
        """The server's bucket when it told us one, else the safety cap; the operator's cap always."""
        own = self.server if self.server is not None else self.safety
        return [own, self.cap] if self.cap is not None else [own]

    def _floor(self, bucket: _Bucket, priority: Priority) -> float:
        """Tokens a call of ``priority`` must leave in ``bucket``."""
        reserve = min(self.reserve, bucket.capacity * RESERVE_SHARE) if bucket is self.server else 0.0
        if priority is Priority.COURTESY:
            return max(reserve, min(bucket.capacity * COURTESY_SHARE, bucket.capacity - 1))
        return reserve

    def _shortfall(self, priority: Priority) -> tuple[float, str]:
        """Seconds until a call of ``priority`` may go (0: now) and what holds it back."""
        now = self._clock()
        wait, source = self._hold_until - now, "server"
        for bucket in self._buckets():
            bucket.refill(now)
            need = 1.0 + self._floor(bucket, priority) - bucket.level
            if need > 0 and need / bucket.rate > wait:
                wait = need / bucket.rate
                source = "paced" if bucket is self.server else "cap"
        return wait, source

    def _take(self) -> int:
        for bucket in self._buckets():  # refilled by the _shortfall just before
            bucket.level -= 1.0
        self._taken += 1
        return self._taken

    def _wake(self) -> None:
        if self._queue:
            self._queue[0].set()
