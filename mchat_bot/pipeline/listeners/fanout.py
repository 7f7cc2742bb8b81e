"""The gateway's callback: the WebSocket door first, then the listeners for other events."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import structlog

from mchat_bot.mattermost.events import PassedPost, Posted

log = structlog.get_logger(__name__)

EventFn = Callable[[object], Awaitable[None]]
HOLD_WHILE_STARTING = 20_000  # events kept for the listeners until they are built (about a second)


class EventFanout:
    """The gateway's callback: the WebSocket door first, then the listeners for edits, deletions
    and membership (which never see new posts, and whose failures never reach the door).

    Built without listeners, it holds their events until `attach`: the socket comes up before
    the parts those listeners need (the memory store) are loaded, and no edit or join is lost.
    """

    def __init__(self, door: EventFn, listeners: Sequence[EventFn] | None = None) -> None:
        self.door = door
        self.listeners = tuple(listeners or ())
        self._held: deque[object] | None = None if listeners is not None else deque()

    async def __call__(self, event: object) -> None:
        await self.door(event)
        if isinstance(event, Posted | PassedPost):
            return
        await self.missed(event)

    async def missed(self, event: object) -> None:
        """To the listeners only: an edit or deletion the socket missed, found by the door's
        catch-up (``Intake.on_missed``), is followed as if the socket had brought it."""
        if self._held is not None:
            if len(self._held) >= HOLD_WHILE_STARTING:
                log.warning("ux.event_dropped_while_starting", held=len(self._held))
                return
            self._held.append(event)
            return
        await self._deliver(event)

    async def attach(self, listeners: Sequence[EventFn]) -> None:
        """Connect the listeners, handing them first, in order, the events held until now."""
        self.listeners = tuple(listeners)
        held = self._held
        while held:  # events arriving meanwhile join the queue, so the order holds
            await self._deliver(held.popleft())
        self._held = None

    async def _deliver(self, event: object) -> None:
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("ux.event_failed", listener=getattr(listener, "__qualname__", "?"))
