"""How the listeners work off what the socket gave them: one item at a time, in order.

An item that fails for a passing reason (the chat server, the memory store or the database away
for a moment) is tried again with the one retry policy, so an edit or a deletion is not lost to a
blip; the item's own steps are safe to repeat (the memory follower's claim is its daemon's to take
again, the learned lines' steps are idempotent). An item that still fails is logged and dropped:
it never stops the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import structlog

from mchat_bot.net.retry import RetryPolicy, is_transient
from mchat_bot.storage import StorageUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

TRY_TIMEOUT_S = 60.0  # one try of one item; a try that hangs is tried again like one that failed


def worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, StorageUnavailable) or is_transient(exc)


# 8 tries over about a minute on average (full jitter, 1 s doubling to 30 s): longer than a server
# restart or a database failover, short enough that the edits queued behind one are not held long
FOLLOW_POLICY = RetryPolicy(first_delay=1.0, max_delay=30.0, tries=8, retryable=worth_retrying)


async def work_off(
    queue: asyncio.Queue[T],
    apply: Callable[[T], Awaitable[None]],
    *,
    event: str,
    fields: Callable[[T], Mapping[str, object]],
    policy: RetryPolicy = FOLLOW_POLICY,
) -> None:
    """For the supervisor: apply each queued item until cancelled. ``event`` names the log lines
    (``<event>.retry``, ``<event>.failed``), ``fields`` says which item they are about (ids only:
    never a message's text)."""
    while True:
        item = await queue.get()

        async def attempt(item: T = item) -> None:
            async with asyncio.timeout(TRY_TIMEOUT_S):
                await apply(item)

        def retried(exc: BaseException, tries: int, delay: float, item: T = item) -> None:
            log.warning(
                f"{event}.retry",
                **fields(item),
                attempt=tries,
                retry_in_s=round(delay, 2),
                error=type(exc).__name__,
            )

        try:
            await policy.call(attempt, on_retry=retried)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{event}.failed", **fields(item))
