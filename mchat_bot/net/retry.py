"""The one retry policy: jittered exponential delays with a cap, what is worth retrying, and the
server's own wait.

Every loop in the daemon that sleeps and tries again goes through a ``RetryPolicy``: the REST
client, the gateway's reconnect, the REST catch-up, the supervisor, the hook senders, the LLM and
the workers. A variant is a ``policy.but(...)`` copy, never a second formula. The delays come from
the ``backoff`` package (``expo`` primed past its leading ``None``, then ``full_jitter``), so each
delay is uniform in ``[0, min(max_delay, first_delay * 2**n)]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import backoff

__all__ = [
    "RETRY_STATUSES",
    "Backoff",
    "HttpStatusError",
    "RetryPolicy",
    "is_transient",
    "server_wait",
]

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


class HttpStatusError(Exception):
    """A remote answered with an error status. ``retry_after`` is the wait it asked for (seconds)."""

    def __init__(self, status: int, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}" if message else str(status))
        self.status = status
        self.retry_after = retry_after


def is_transient(exc: BaseException) -> bool:
    """Worth another try: transport errors, timeouts, 408, 429 and 5xx. Any other answer is final."""
    status = getattr(exc, "status", None)
    if status is None:
        status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in RETRY_STATUSES or 500 <= status <= 599
    return isinstance(exc, TRANSPORT_ERRORS)


def server_wait(
    headers: Mapping[str, str], *, rate_limited: bool = True, now: float | None = None
) -> float | None:
    """Seconds the server asked us to wait, from ``Retry-After`` (seconds or an HTTP date) or, for a
    rate-limited answer, Mattermost's ``X-RateLimit-Reset`` (seconds until the bucket refills); None
    when it said nothing. ``headers`` must look names up case-insensitively (aiohttp's and httpx's
    both do)."""
    value = headers.get("retry-after")
    if value is not None:
        seconds = _seconds(value, now)
        if seconds is not None:
            return seconds
    value = headers.get("x-ratelimit-reset") if rate_limited else None
    if value is not None:
        return _seconds(value, None)
    return None


def _seconds(value: str, now: float | None) -> float | None:
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How to wait between tries. ``tries=None`` retries until cancelled (loops that must not die).

    ``max_server_wait`` caps what a server may ask for, so a bogus ``Retry-After`` cannot park a
    worker for an hour; ``retryable`` decides which failures are worth another try.
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    tries: int | None = 3
    max_server_wait: float = 60.0
    retryable: Callable[[BaseException], bool] = is_transient

    def but(self, **changes: object) -> RetryPolicy:
        """A variant of this policy (e.g. ``tries=1``), still the one formula."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def delays(self) -> Iterator[float]:
        """Fresh full-jitter delays: uniform(0, min(max_delay, first_delay * 2**n)), n = 0, 1, ..."""
        gen = backoff.expo(base=2, factor=self.first_delay, max_value=self.max_delay)
        next(gen)  # backoff's generators yield None first (they are primed for .send())
        for value in gen:
            yield backoff.full_jitter(value)

    def backoff(self) -> Backoff:
        """A stateful sequence of delays for a long-running loop, with ``reset()`` after a success."""
        return Backoff(self)

    def wait_after(self, exc: BaseException, delays: Iterator[float]) -> float:
        """The pause before the next try: what the server asked for (capped), else the next delay."""
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float) and asked == asked and asked >= 0:
            next(delays)  # keep the exponent moving, so a server that keeps asking is still spaced
            return min(float(asked), self.max_server_wait)
        return next(delays)

    def gives_up(self, exc: BaseException, attempt: int) -> bool:
        """True when ``attempt`` (1-based) was the last try for ``exc``."""
        return not self.retryable(exc) or (self.tries is not None and attempt >= self.tries)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> T:
        """Await ``fn()`` until it succeeds; re-raise a final failure. ``on_retry(exc, attempt,
        delay)`` is told of each failure that is retried (for a log line or a metric)."""
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.gives_up(exc, attempt):
                    raise
                delay = self.wait_after(exc, delays)
                if on_retry is not None:
                    on_retry(exc, attempt, delay)
                await asyncio.sleep(delay)


class Backoff:
    """The delays of one long-running loop (reconnects, restarts): ``next()`` after a failure,
    ``reset()`` once it has run well again."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self._delays = policy.delays()

    def next(self, exc: BaseException | None = None) -> float:
        self.failures += 1
        if exc is not None:
            return self.policy.wait_after(exc, self._delays)
        return next(self._delays)

    def reset(self) -> None:
        self.failures = 0
        self._delays = self.policy.delays()
