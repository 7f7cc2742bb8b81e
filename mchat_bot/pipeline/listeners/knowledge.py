"""Channel knowledge follows the channel: an edit is learned again, a deletion forgotten, a deleted
(archived) channel dropped whole.

Events are queued by the socket reader and worked off here, one at a time, so the reader never waits
for SQLite or the index. Only posts already in the log are touched by an edit (what was never learned
is not learned from its edit); a deletion is applied whatever the log says, since removing what is
not there costs nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import structlog

from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.learner import Learner
from mchat_bot.mattermost.events import FrameError, OtherEvent
from mchat_bot.pipeline.listeners.work import work_off

log = structlog.get_logger(__name__)

QUEUE_SIZE = 10_000
CHANNEL_GONE = "channel_deleted"  # Mattermost's event for an archived (soft-deleted) channel


class KnowledgeFollower:
    def __init__(self, learner: Learner, index: MessageIndex) -> None:
        self.learner = learner
        self.index = index
        self.queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(QUEUE_SIZE)
        self.relearned = 0
        self.forgotten = 0

    async def on_event(self, event: object) -> None:
        """From the gateway reader: queue (kind, id, new text) for the loop."""
        if not isinstance(event, OtherEvent):
            return
        item: tuple[str, str, str] | None = None
        if event.event in ("post_edited", "post_deleted"):
            try:
                post = event.post()
            except FrameError:
                return
            if post is None or post.original_id:
                return
            # never channel knowledge (the bot's own streamed answers are edited every half second):
            # its edit or deletion would cost a queue place and a SQLite read for nothing
            if not self.learner.by_a_person(
                post.user_id, post.type, automated=post.from_bot or post.from_webhook
            ):
                return
            item = (event.event, post.id, post.message)
        elif event.event == CHANNEL_GONE:
            channel_id = event.data.get("channel_id") or event.broadcast.get("channel_id")
            if isinstance(channel_id, str) and channel_id:
                item = (CHANNEL_GONE, channel_id, "")
        if item is None:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("knowledge.follow_queue_full", event=event.event)

    async def run(self) -> None:
        """Work off the queue until cancelled (``work_off``: each item retried while it fails for
        a passing reason, one bad item never stops the loop)."""
        await work_off(
            self.queue,
            lambda item: self.apply(*item),
            event="knowledge.follow",
            fields=lambda item: {"kind": item[0], "id": item[1]},
        )

    async def apply(self, kind: str, ident: str, text: str) -> None:
        if kind == "post_edited":
            line = await self.index.log.get(ident)
            if line is not None and await self.learner.keep([replace(line, text=text)]):
                self.relearned += 1
                # the lines it is context of carry its old text: embedded again with the new one
                await self.index.log.requeue(await self.index.neighbours_of([ident]))
        elif kind == "post_deleted":
            self.forgotten += await self.index.forget([ident])
        elif kind == CHANNEL_GONE:
            removed = await self.index.forget_channel(ident)
            await self.learner.channels.turn_off(ident, "")
            log.info("knowledge.channel_dropped", mchat_channel_id=ident, lines=removed)
