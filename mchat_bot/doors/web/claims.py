"""What an HTTP request says about its channel, user and post is a claim: check it with the server.

A webhook or slash token is a secret every team admin can read, not an identity, so the channel,
user and post a body names are looked up over REST before anything is read or written: the channel's
type, team and name come from the server (never from ``channel_name``), the user must be a member of
the channel, and a named post must exist in that channel by that user. The answers are cached for a
few seconds, so a burst of commands costs one lookup each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import structlog

from mchat_bot.mattermost.rest import MattermostError
from mchat_bot.net.cache import TTLCache
from mchat_bot.pipeline.message import ChannelType

log = structlog.get_logger(__name__)

T = TypeVar("T")

CACHE_TTL_S = 10.0
CACHE_MAX = 4096
LOOKUP_TIMEOUT_S = 1.5  # of the door's answer budget (Mattermost waits 30 s, the budget is 4.5 s)


class ChannelReader(Protocol):
    """The REST reads a claim check needs (``mattermost.rest.RestClient``)."""

    async def get_channel(self, channel_id: str) -> dict[str, Any]: ...
    async def get_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]: ...
    async def get_user(self, user_id: str) -> dict[str, Any]: ...
    async def get_post(self, post_id: str) -> dict[str, Any]: ...


class ClaimRefused(Exception):
    """The server does not confirm the claim. ``status`` is the HTTP answer (403, or 503 when the
    server could not be asked); ``reason`` is a short code for the log and the audit row."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class VerifiedChannel:
    id: str
    type: ChannelType  # O public, P private, D direct, G group
    team_id: str
    name: str
    display_name: str


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """The request's channel and user as the server knows them, and the post when one was named."""

    channel: VerifiedChannel
    user_id: str
    user_name: str
    post: dict[str, Any] | None = None


class ClaimChecker:
    """Checks a door request's claims with the server, with a short cache of what it learned."""

    def __init__(
        self,
        rest: ChannelReader,
        *,
        ttl: float = CACHE_TTL_S,
        timeout: float = LOOKUP_TIMEOUT_S,
    ) -> None:
        self.rest = rest
        self.timeout = timeout
        self._channels = TTLCache(ttl, CACHE_MAX)
        self._members = TTLCache(ttl, CACHE_MAX)
        self._users = TTLCache(ttl, CACHE_MAX)

    async def outgoing(self, *, channel_id: str, user_id: str, post_id: str, team_id: str) -> VerifiedClaims:
        """An outgoing webhook: Mattermost fires them only in public channels, for posts by members."""
        channel = await self.channel(channel_id)
        if channel.type != "O":
            raise ClaimRefused(403, "not_public", "outgoing webhooks fire only in public channels")
        claims = await self._member_claims(channel, user_id, team_id)
        if post_id:
            post = await self.post(post_id)
            if post.get("channel_id") != channel.id or post.get("user_id") != user_id:
                raise ClaimRefused(403, "post_mismatch", "post_id is not a post of this user in this channel")
            if post.get("delete_at"):
                raise ClaimRefused(403, "post_deleted", "post_id names a deleted post")
            return VerifiedClaims(channel, claims.user_id, claims.user_name, post)
        return claims

    async def slash(self, *, channel_id: str, user_id: str, team_id: str) -> VerifiedClaims:
        """A slash command: the channel's type from the server, the user a member of it."""
        channel = await self.channel(channel_id)
        return await self._member_claims(channel, user_id, team_id)

    async def _member_claims(self, channel: VerifiedChannel, user_id: str, team_id: str) -> VerifiedClaims:
        if team_id and channel.team_id and team_id != channel.team_id:
            raise ClaimRefused(403, "team_mismatch", "team_id is not the channel's team")
        if not await self.is_member(channel.id, user_id):
            raise ClaimRefused(403, "not_member", "user_id is not a member of channel_id")
        return VerifiedClaims(channel, user_id, await self.user_name(user_id))

    async def channel(self, channel_id: str) -> VerifiedChannel:
        found, cached = self._channels.get(channel_id)
        if found:
            return cached  # type: ignore[no-any-return]
        try:
            row = await self._ask(lambda: self.rest.get_channel(channel_id))
        except MattermostError as exc:
            if exc.status in (403, 404):
                raise ClaimRefused(
                    403, "channel_unreadable", "the bot cannot read this channel (add it to the channel)"
                ) from exc
            raise ClaimRefused(503, "server_error", "the server could not confirm the channel") from exc
        if row.get("delete_at"):
            raise ClaimRefused(403, "channel_archived", "the channel is archived")
        kind = str(row.get("type", ""))
        if kind not in ("O", "P", "D", "G"):
            raise ClaimRefused(503, "server_error", "the server gave no channel type")
        channel = VerifiedChannel(
            id=str(row.get("id", channel_id)),
            type=cast(ChannelType, kind),
            team_id=str(row.get("team_id") or ""),
            name=str(row.get("name") or ""),
            display_name=str(row.get("display_name") or ""),
        )
        self._channels.put(channel_id, channel)
        return channel

    async def is_member(self, channel_id: str, user_id: str) -> bool:
        key = (channel_id, user_id)
        found, cached = self._members.get(key)
        if found:
            return bool(cached)
        try:
            await self._ask(lambda: self.rest.get_channel_member(channel_id, user_id))
            member = True
        except MattermostError as exc:
            if exc.status not in (400, 404):
                raise ClaimRefused(
                    503, "server_error", "the server could not confirm the membership"
                ) from exc
            member = False
        self._members.put(key, member)
        return member

    async def user_name(self, user_id: str) -> str:
        found, cached = self._users.get(user_id)
        if found:
            return str(cached)
        try:
            row = await self._ask(lambda: self.rest.get_user(user_id))
        except MattermostError as exc:
            raise ClaimRefused(403, "unknown_user", "user_id is not a user of this server") from exc
        name = str(row.get("username") or "")
        self._users.put(user_id, name)
        return name

    async def post(self, post_id: str) -> dict[str, Any]:
        try:
            return await self._ask(lambda: self.rest.get_post(post_id))
        except MattermostError as exc:
            if exc.status in (400, 403, 404):
                raise ClaimRefused(403, "post_unreadable", "post_id is not a post the bot can read") from exc
            raise ClaimRefused(503, "server_error", "the server could not confirm the post") from exc

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """One lookup inside the door's budget; a server that does not answer is a 503, not a 500."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call()
        except MattermostError:
            raise
        except Exception as exc:  # unreachable, timed out: nothing may be trusted
            log.warning("http.claim_lookup_failed", error=type(exc).__name__)
            raise ClaimRefused(503, "server_unreachable", "the server could not be asked") from exc
