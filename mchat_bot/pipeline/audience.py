"""Who asks and who reads: the asker's :class:`Viewer` and the place's :class:`Readers`, from the server.

A guest account sees no team memories, and a channel with a guest in it may be shown none; both
facts come from the server (the user's ``system_guest`` role, the channel's ``guest_count``) and
are cached for a minute. When the server cannot say, the answer is the safe one: a guest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from mchat_bot.mattermost.events import OtherEvent
from mchat_bot.memory.readers import Readers
from mchat_bot.memory.store import Viewer
from mchat_bot.net.cache import TTLCache
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.ports import ChatServer

log = structlog.get_logger(__name__)

CACHE_TTL_S = 60.0
CACHE_MAX = 4096


class Audience:
    """``server`` None: nobody is a guest (the handlers on their own, in tests)."""

    def __init__(self, server: ChatServer | None, bot_user_id: str, *, ttl: float = CACHE_TTL_S) -> None:
        self.server = server
        self.bot_user_id = bot_user_id
        self._guest_users = TTLCache(ttl, CACHE_MAX)
        self._guest_channels = TTLCache(ttl, CACHE_MAX)

    async def of(self, msg: IncomingMessage) -> tuple[Viewer, Readers]:
        """What the asker may see, and who reads the answer where it will be posted.

        One lookup in the common case: a channel without guests has no guest asker either, so the
        asker's own roles are asked for only where the channel has a guest.
        """
        alone = self.only_human(msg)
        only = msg.user_id if msg.private_reply else alone
        guests = (
            msg.channel_type in ("O", "P") and bool(msg.team_id) and await self.has_guests(msg.channel_id)
        )
        viewer = Viewer(
            team_id=msg.team_id,
            channel_id=msg.channel_id,
            user_id=msg.user_id,
            direct=bool(alone),
            guest=guests and await self.is_guest(msg.user_id),
        )
        readers = Readers(
            channel_id=msg.channel_id, team_id=msg.team_id, only_user=only, guests=guests and not only
        )
        return viewer, readers

    def only_human(self, msg: IncomingMessage) -> str:
        """The asker, when the channel is their 1:1 DM with the bot (its name is ``<id>__<id>``)."""
        if msg.channel_type != "D":
            return ""
        ids = msg.channel_name.split("__")
        if len(ids) == 2 and sorted(ids) == sorted((msg.user_id, self.bot_user_id)):
            return msg.user_id
        return ""

    async def is_guest(self, user_id: str) -> bool:
        async def ask() -> bool:
            assert self.server is not None
            user = await self.server.get_user(user_id)
            return "system_guest" in str(user.get("roles", "")).split()

        return await self._known(self._guest_users, user_id, ask, "audience.user_unknown", "mchat_user_id")

    async def has_guests(self, channel_id: str) -> bool:
        async def ask() -> bool:
            assert self.server is not None
            stats = await self.server.get_channel_stats(channel_id)
            return int(stats.get("guest_count") or 0) > 0

        return await self._known(
            self._guest_channels, channel_id, ask, "audience.channel_unknown", "mchat_channel_id"
        )

    async def _known(
        self, cache: TTLCache, key: str, ask: Callable[[], Awaitable[bool]], event: str, field: str
    ) -> bool:
        """A guest fact, cached; False without a server; True (the safe answer) when the server fails."""
        known, value = cache.get(key)
        if known:
            return bool(value)
        if self.server is None:
            return False
        try:
            fact = await ask()
        except Exception as exc:
            log.warning(event, **{field: key}, error=type(exc).__name__)
            return True
        cache.put(key, fact)
        return fact

    async def on_event(self, event: object) -> None:
        """Someone joined or left a channel: ask the server about its guests again next time."""
        if not isinstance(event, OtherEvent) or event.event not in ("user_added", "user_removed"):
            return
        channel_id = event.data.get("channel_id") or event.broadcast.get("channel_id")
        if channel_id:
            self._guest_channels.drop(str(channel_id))
