"""The user-facing extras (issue 7, user half), assembled from settings and wired into the daemon.

Each part wraps one of the worker pool's functions or listens to gateway events, so the pipeline
itself does not change: feedback (typing, reactions), streaming replies, memories following edits
and deletions, channel joining and greeting, and attachments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from mchat_bot.config import Settings
from mchat_bot.mattermost.events import Posted
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.memory.store import MemoryStore
from mchat_bot.pipeline import replies
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.listeners.channels import Channels
from mchat_bot.pipeline.listeners.follow import Follower
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.pipeline.steps.attachments import Attachments
from mchat_bot.pipeline.steps.feedback import Feedback
from mchat_bot.pipeline.steps.streaming import Streams
from mchat_bot.pipeline.workers import ReplySender
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

HandleFn = Callable[[IncomingMessage], Awaitable[str]]
SendFn = Callable[[IncomingMessage, str], Awaitable[Any]]
EventFn = Callable[[object], Awaitable[None]]

_ERROR_TEXTS = frozenset(
    f(lang) for f in (replies.llm_error, replies.internal_error) for lang in ("ko", "en")
)


def is_error_text(text: str) -> bool:
    """The handlers' apologies: the reply is posted, but the work failed (⚠️, not ✅)."""
    return text.strip() in _ERROR_TEXTS


class UserExtras:
    def __init__(
        self,
        settings: Settings,
        rest: RestClient,
        inbox: Inbox,
        storage: Storage,
        store: MemoryStore,
        bot: BotIdentity,
    ) -> None:
        s, ux = settings, settings.ux
        # One try and short timeouts for what may be skipped (feedback) or must see a 429 (streaming
        # edits); the same token bucket as the reply client, so together they stay under the limit.
        self.quick = rest.variant(tries=1, timeout=min(5.0, s.mattermost.request_timeout))
        self.feedback = Feedback(
            self.quick,
            bot.user_id,
            typing=ux.typing,
            reactions=ux.reactions,
            typing_interval=ux.typing_interval,
            reserve=max(1.0, rest.limiter.burst / 3),
            delay=ux.feedback_delay,
        )
        self.streams = (
            Streams(
                self.quick,
                rest,
                inbox,
                ReplySender(rest, inbox),  # only its thread check (reconcile) is used
                interval=ux.stream_edit_interval,
                first_post_after=ux.stream_first_post_after,
            )
            if ux.stream
            else None
        )
        self.follower = (
            Follower(
                store,
                rest,
                inbox,
                bot,
                sensitive=s.memory.sensitive,
                extract_channels=s.memory.extract_channels,
            )
            if ux.follow_edits
            else None
        )
        mention = next((a for a in bot.aliases if a), f"@{bot.username}")
        self.channels = Channels(
            rest,
            storage,
            bot.user_id,
            auto_join=s.mattermost.auto_join,
            greet=ux.greet,
            mention=mention if mention.startswith("@") else "@" + mention,
        )
        self.attachments = (
            Attachments(
                rest,
                store,
                bot,
                site_url=s.mattermost.url,
                max_bytes=ux.attachment_max_bytes,
                chunk_chars=ux.attachment_chunk_chars,
                sensitive=s.memory.sensitive,
            )
            if ux.attachments
            else None
        )

    def completer(self, llm: Any) -> Any:
        """The LLM the handlers get: streaming when enabled (None stays None)."""
        return self.streams.completer(llm) if self.streams is not None and llm is not None else llm

    def wrap_handle(self, handle_fn: HandleFn) -> HandleFn:
        if self.attachments is not None:
            handle_fn = self.attachments.wrap_handle(handle_fn)
        if self.streams is not None:
            handle_fn = self.streams.wrap_handle(handle_fn)
        return self.feedback.wrap_handle(handle_fn)

    def wrap_send(self, send_fn: SendFn) -> SendFn:
        if self.streams is not None:
            send_fn = self.streams.wrap_send(send_fn)
        return self.feedback.wrap_send(send_fn, is_error_text)

    def wrap_failure(self, failure_fn: SendFn) -> SendFn:
        if self.streams is not None:
            failure_fn = self.streams.wrap_failure(failure_fn)
        return self.feedback.wrap_failure(failure_fn)

    def wrap_events(self, on_event: EventFn) -> EventFn:
        """The gateway's callback: the intake first, then edits/deletions and membership."""
        listeners: list[EventFn] = [self.channels.on_event]
        if self.follower is not None:
            listeners.append(self.follower.on_event)

        async def dispatch(event: object) -> None:
            await on_event(event)
            if isinstance(event, Posted):  # the listeners want edits, deletions and membership only
                return
            for listener in listeners:
                try:
                    await listener(event)
                except Exception:
                    log.exception("ux.event_failed", listener=getattr(listener, "__qualname__", "?"))

        return dispatch

    async def run(self) -> None:
        """For the supervisor: auto-join, then follow edits and deletions until cancelled."""
        tasks = [self.channels.run()]
        if self.follower is not None:
            tasks.append(self.follower.run())
        await asyncio.gather(*tasks)

    async def aclose(self) -> None:
        await self.feedback.aclose()
        if self.streams is not None:
            await self.streams.aclose()
        await self.quick.aclose()
