"""Channel knowledge in the pipeline: ``learn on|off [--forget]``, and a channel's messages for a question.

Who may switch learning: a channel admin of that channel or a system admin, asked of the server
(``GET /channels/{id}/members/{user}``, then the user's roles), never taken from the message. Turning
it on posts what is kept, for how long and how to stop, in the channel itself, since everyone there
is affected. Direct and group messages never learn.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from mchat_bot.knowledge.channels import LEARNING_TYPES, LearningChannels
from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.memory.store import Hit
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply
from mchat_bot.pipeline.ports import ChatServer

log = structlog.get_logger(__name__)

ON_WORDS = frozenset({"on", "start", "켜기", "켜", "켜줘", "시작"})
OFF_WORDS = frozenset({"off", "stop", "끄기", "꺼", "꺼줘", "중지", "그만"})
STATUS_WORDS = frozenset({"", "status", "상태"})
FORGET_FLAGS = frozenset({"--forget", "삭제", "지우기"})


class ChannelKnowledge:
    def __init__(
        self,
        channels: LearningChannels,
        index: MessageIndex,
        chat: ChatServer,
        *,
        retention_days: int = 365,
        answer_messages: int = 5,
        on_turned_on: Callable[[str, str], None] = lambda channel_id, lang: None,
    ) -> None:
        self.channels = channels
        self.index = index
        self.chat = chat
        self.retention_days = retention_days
        self.answer_messages = answer_messages
        self.on_turned_on = on_turned_on  # (channel id, language): the daemon starts the backfill

    async def messages_for(self, query: str, msg: IncomingMessage, limit: int | None = None) -> list[Hit]:
        """This channel's messages about ``query`` (none in a DM or group DM)."""
        n = self.answer_messages if limit is None else limit
        if msg.channel_type not in LEARNING_TYPES or n <= 0:
            return []
        if not self.channels.learns(msg.channel_id, msg.channel_type) and not self.index.log.has(
            msg.channel_id
        ):
            return []
        return await self.index.search(query, msg.channel_id, n)

    async def learn(self, msg: IncomingMessage, arg: str, lang: str) -> Reply:
        words = arg.lower().split()
        verb = words[0] if words else ""
        forget = any(w in FORGET_FLAGS for w in words[1:])
        if msg.channel_type not in LEARNING_TYPES:
            return Reply(texts.learn_not_here(lang), Outcome.REFUSED)
        if verb in STATUS_WORDS:
            size = await self.index.log.size(msg.channel_id)
            on = self.channels.learns(msg.channel_id, msg.channel_type)
            return Reply(texts.learn_status(lang, on, size, self.retention_days), Outcome.LISTED)
        if verb not in ON_WORDS and verb not in OFF_WORDS:
            return Reply(texts.format_usage("learn", lang), Outcome.REFUSED)
        if not await self._may_switch(msg):
            log.info("knowledge.switch_refused", channel_id=msg.channel_id, user_id=msg.user_id)
            return Reply(texts.learn_refused(lang), Outcome.REFUSED)
        if verb in ON_WORDS:
            await self.channels.turn_on(msg.channel_id, msg.team_id, msg.channel_name, msg.user_id)
            self.on_turned_on(msg.channel_id, lang)
            log.info("knowledge.turned_on", channel_id=msg.channel_id, by=msg.user_id)
            return Reply(texts.learn_on_notice(lang, self.retention_days), Outcome.STORED)
        await self.channels.turn_off(msg.channel_id, msg.user_id)
        removed = await self.index.forget_channel(msg.channel_id) if forget else 0
        log.info("knowledge.turned_off", channel_id=msg.channel_id, by=msg.user_id, forgot=removed)
        return Reply(texts.learn_off(lang, forget, removed), Outcome.FORGOTTEN if forget else Outcome.STORED)

    async def _may_switch(self, msg: IncomingMessage) -> bool:
        """A channel admin here, or a system admin; a failed lookup refuses."""
        try:
            member = await self.chat.get_channel_member(msg.channel_id, msg.user_id)
            if "channel_admin" in str(member.get("roles", "")).split() or member.get("scheme_admin") is True:
                return True
            user = await self.chat.get_user(msg.user_id)
        except Exception as exc:
            log.warning("knowledge.role_lookup_failed", channel_id=msg.channel_id, error=type(exc).__name__)
            return False
        return "system_admin" in str(user.get("roles", "")).split()
