"""The first step: every message's channel and user go into the mapping tables; an inactive
channel (switched off by an administrator) gets no answer, from any door."""

from __future__ import annotations

import structlog

from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import Reply
from mchat_bot.pipeline.turn import Next, Turn

log = structlog.get_logger(__name__)


class ChannelGate:
    def __init__(self, mappings: Mappings) -> None:
        self.mappings = mappings

    async def __call__(self, turn: Turn, next: Next) -> None:
        row = await self.mappings.see(turn.msg)
        if not row.is_active:
            log.info(
                "mappings.inactive_channel", post_id=turn.msg.post_id, mchat_channel_id=turn.msg.channel_id
            )
            turn.reply = Reply.nothing()
            return
        await next(turn)

    async def settle(self, turn: Turn) -> None:
        return None
