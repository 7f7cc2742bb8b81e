"""The gateway's callback: the WebSocket door first, then the listeners for other events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from mchat_bot.mattermost.events import Posted

log = structlog.get_logger(__name__)

EventFn = Callable[[object], Awaitable[None]]


class EventFanout:
    """The gateway's callback: the WebSocket door first, then the listeners for edits, deletions
    and membership (which never see new posts, and whose failures never reach the door)."""

    def __init__(self, door: EventFn, listeners: Sequence[EventFn]) -> None:
        self.door = door
        self.listeners = tuple(listeners)

    async def __call__(self, event: object) -> None:
        await self.door(event)
        if isinstance(event, Posted):
            return
        for listener in self.listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("ux.event_failed", listener=getattr(listener, "__qualname__", "?"))
