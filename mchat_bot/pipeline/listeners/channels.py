"""Channels the bot is in: joining ``mattermost.auto_join`` at start, noticing being added or
removed (``user_added`` / ``user_removed``), and greeting a channel once with a short help.

"Once" is kept in the kv table (``greeted:<channel id>``), so a restart or being re-added does not
greet again; the greeting's ``pending_post_id`` is fixed per channel, so two paths racing (the
auto-join and its own ``user_added`` event) still make one post. The greeting is a courtesy: it
goes through ``greeter`` (the REST client at the courtesy priority), so under rate pressure it is
dropped, not queued ahead of replies, and the channel is greeted the next time the bot is added or
starts (auto-join).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog

from mchat_bot.mattermost.events import OtherEvent
from mchat_bot.net.pacing import Dropped
from mchat_bot.net.retry import RetryPolicy
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

GREETED = "greeted:"
LEFT = "left:"
JOIN_TRIES = 5


class Channels:
    def __init__(
        self,
        rest: ChatServer,
        storage: Storage,
        bot_user_id: str,
        *,
        auto_join: Sequence[str] = (),
        greet: bool = True,
        mention: str = "@ai",
        greeter: ChatServer | None = None,
    ) -> None:
        self.rest = rest
        self.greeter = greeter if greeter is not None else rest
        self.storage = storage
        self.bot_user_id = bot_user_id
        self.auto_join = list(auto_join)
        self.greet_enabled = greet
        self.mention = mention
        self._lock = asyncio.Lock()
        self.joined: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Join the configured channels (retrying transient failures), then stay idle until cancelled."""
        policy = RetryPolicy(first_delay=2.0, max_delay=30.0, tries=JOIN_TRIES)
        for name in self.auto_join:

            def failed(exc: BaseException, attempt: int, delay: float, name: str = name) -> None:
                self._join_failed(name, exc, attempt)

            try:
                await policy.call(lambda name=name: self.join(name), on_retry=failed)  # type: ignore[misc]
            except Exception as exc:  # a 4xx, or the last try: logged, and the others still joined
                self._join_failed(name, exc, 0)
        await asyncio.Event().wait()

    @staticmethod
    def _join_failed(name: str, exc: BaseException, attempt: int) -> None:
        status = getattr(exc, "status", None)
        log.warning(
            "channels.join_failed",
            channel=name,
            attempt=attempt or "final",
            status=status,
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
            hint="a private channel needs an admin to add the bot" if status == 403 else "",
        )

    async def join(self, name: str) -> str:
        """Join ``team/channel``; returns the channel id. Joining twice is harmless (server side)."""
        team_name, _, channel_name = name.partition("/")
        team = await self.rest.get_team_by_name(team_name)
        channel = await self.rest.get_channel_by_name(str(team["id"]), channel_name)
        await self.rest.add_channel_member(str(channel["id"]), self.bot_user_id)
        self.joined.append(str(channel["id"]))
        log.info("channels.joined", channel=name, mchat_channel_id=channel["id"])
        await self.greet(str(channel["id"]), channel)
        return str(channel["id"])

    async def on_event(self, event: object) -> None:
        """``user_added`` / ``user_removed`` about the bot itself (other members are not our business)."""
        if not isinstance(event, OtherEvent) or event.event not in ("user_added", "user_removed"):
            return
        data, bc = event.data, event.broadcast
        if event.event == "user_added":
            user = data.get("user")
            uid = data.get("user_id") or (user.get("id") if isinstance(user, dict) else "")
            channel_id = str(bc.get("channel_id") or "")
            if uid != self.bot_user_id or not channel_id:
                return
            log.info("channels.added", mchat_channel_id=channel_id)
            await self.storage.set_kv(LEFT + channel_id, "")
            task = asyncio.create_task(self._greet_quietly(channel_id))  # REST off the socket reader
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        removed = data.get("user_id") or bc.get("user_id")
        channel_id = str(data.get("channel_id") or bc.get("channel_id") or "")
        if removed != self.bot_user_id or not channel_id:
            return
        log.info("channels.removed", mchat_channel_id=channel_id, remover_id=data.get("remover_id", ""))
        await self.storage.set_kv(LEFT + channel_id, str(time.time()))

    async def _greet_quietly(self, channel_id: str) -> None:
        try:
            await self.greet(channel_id)
        except Exception as exc:
            log.warning("channels.greet_failed", mchat_channel_id=channel_id, error=type(exc).__name__)

    async def greet(self, channel_id: str, channel: dict[str, Any] | None = None) -> bool:
        """Post the greeting unless this channel had it; True when posted now."""
        if not self.greet_enabled:
            return False
        async with self._lock:
            if await self.storage.get_kv(GREETED + channel_id):
                return False
            if channel is None:
                channel = await self.rest.get_channel(channel_id)
            if channel.get("type") not in ("O", "P"):
                return False  # DMs and group DMs get no greeting
            try:
                await self.greeter.create_post(
                    channel_id,
                    texts.greeting(self.mention),
                    props={"mchat_greeting": True},
                    pending_post_id=f"mchat-greet-{channel_id}",
                )
            except Dropped:
                log.info("channels.greeting_skipped", mchat_channel_id=channel_id, reason="rate budget")
                return False
            await self.storage.set_kv(GREETED + channel_id, str(time.time()))
        log.info("channels.greeted", mchat_channel_id=channel_id)
        return True
