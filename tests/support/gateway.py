"""A Gateway under test: running it until the block ends, and recording what it hands its owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mchat_bot.mattermost.events import Event, Posted
from mchat_bot.mattermost.gateway import Gateway


class Recorder:
    """The ``on_event`` / ``on_gap`` pair for a Gateway under test."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.gaps: list[int] = []
        self.gap_seen = asyncio.Event()

    async def on_event(self, ev: Event) -> None:
        await self.events.put(ev)

    async def on_gap(self, since_ms: int) -> None:
        self.gaps.append(since_ms)
        self.gap_seen.set()

    async def next_post(self, within: float = 5.0) -> Posted:
        """The next ``posted`` event (other events are passed over)."""
        while True:
            ev = await asyncio.wait_for(self.events.get(), within)
            if isinstance(ev, Posted):
                return ev

    async def posts(self, n: int, within: float = 10.0) -> list[Posted]:
        """The next ``n`` ``posted`` events, all within ``within`` seconds."""
        out: list[Posted] = []
        async with asyncio.timeout(within):
            while len(out) < n:
                ev = await self.events.get()
                if isinstance(ev, Posted):
                    out.append(ev)
        return out


async def _no_gap(since_ms: int) -> None:
    return None


@contextlib.asynccontextmanager
async def running_gateway(
    url: str,
    token: str,
    on_event: Callable[[Event], Awaitable[None]],
    on_gap: Callable[[int], Awaitable[None]] = _no_gap,
    **kw: Any,
) -> AsyncIterator[Gateway]:
    """A Gateway reading in its own task, authenticated before the block starts, cancelled after it."""
    gw = Gateway(url, token, on_event, on_gap, **kw)
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.authenticated.wait(), 5)
        yield gw
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
