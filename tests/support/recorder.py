"""What a Gateway hands its owner, recorded: the events in order and the gaps it reports."""

from __future__ import annotations

import asyncio

from mchat_bot.mattermost.events import Event, Posted


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
