"""The seed's mapping tables: which Mattermost channels and users the bot has seen, and their switches.

Rows are filled as messages addressed to the bot arrive (through any door), so an admin can list
them and switch a channel off (`mchat-bot channels disable ID`): an inactive channel gets no
answers. A channel may carry its own incoming-webhook URL, used for late webhook-door answers.
Reads are cached briefly in memory so the hot path costs one SQLite read per channel per few seconds,
and a row is written only when the message says something the last written values do not.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

CACHE_TTL_S = 2.0  # an admin's `channels disable` from another process takes effect within this


@dataclass(frozen=True, slots=True)
class ChannelMapping:
    mchat_channel_id: str
    mchat_channel_name: str
    mchat_team_id: str
    agent_room_id: str
    incoming_webhook_url: str
    is_active: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class UserMapping:
    mchat_user_id: str
    mchat_username: str
    agent_user_id: str
    created_at: float


class Mappings:
    """Reads and writes ``mchat_channel_mapping`` and ``mchat_user_mapping`` on a :class:`Storage`."""

    def __init__(self, storage: Storage, *, cache_ttl: float = CACHE_TTL_S) -> None:
        self.storage = storage
        self.cache_ttl = cache_ttl
        self._channels: dict[str, tuple[float, ChannelMapping | None]] = {}
        self._users: dict[str, str] = {}  # user id -> the username last written (this process)

    # --- the pipeline's side ----------------------------------------------------------------

    async def see(self, msg: IncomingMessage) -> ChannelMapping:
        """Record the message's channel and user (new rows, or a changed name or team); return the row."""
        row = await self.channel(msg.channel_id)
        now = time.time()
        if (
            row is None
            or (msg.channel_name and row.mchat_channel_name != msg.channel_name)
            or (msg.team_id and row.mchat_team_id != msg.team_id)
        ):
            rows = await self.storage.execute_returning(
                "INSERT INTO mchat_channel_mapping"
                " (mchat_channel_id, mchat_channel_name, mchat_team_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(mchat_channel_id) DO UPDATE SET"
                " mchat_channel_name = CASE WHEN excluded.mchat_channel_name != ''"
                " THEN excluded.mchat_channel_name ELSE mchat_channel_mapping.mchat_channel_name END,"
                " mchat_team_id = CASE WHEN excluded.mchat_team_id != '' THEN excluded.mchat_team_id"
                " ELSE mchat_channel_mapping.mchat_team_id END,"
                f" updated_at = excluded.updated_at RETURNING {_CHANNEL_COLS}",
                (msg.channel_id, msg.channel_name, msg.team_id, now, now),
            )
            row = _channel(rows[0])
            self._channels[msg.channel_id] = (time.monotonic(), row)
        if msg.user_id and (
            msg.user_id not in self._users or (msg.user_name and self._users[msg.user_id] != msg.user_name)
        ):
            await self.storage.execute(
                "INSERT INTO mchat_user_mapping (mchat_user_id, mchat_username, created_at)"
                " VALUES (?, ?, ?) ON CONFLICT(mchat_user_id) DO UPDATE SET"
                " mchat_username = CASE WHEN excluded.mchat_username != ''"
                " THEN excluded.mchat_username ELSE mchat_user_mapping.mchat_username END",
                (msg.user_id, msg.user_name, now),
            )
            self._users[msg.user_id] = msg.user_name or self._users.get(msg.user_id, "")
        return row

    async def is_active(self, channel_id: str) -> bool:
        """A channel not seen yet is active; only an explicit `disable` turns it off."""
        row = await self.channel(channel_id)
        return row is None or row.is_active

    async def channel(self, channel_id: str) -> ChannelMapping | None:
        now = time.monotonic()
        hit = self._channels.get(channel_id)
        if hit is not None and now - hit[0] < self.cache_ttl:
            return hit[1]
        row = await self.storage.fetchone(
            f"SELECT {_CHANNEL_COLS} FROM mchat_channel_mapping WHERE mchat_channel_id = ?", (channel_id,)
        )
        mapping = _channel(row) if row is not None else None
        self._channels[channel_id] = (now, mapping)
        return mapping

    # --- the admin's side -------------------------------------------------------------------

    async def channels(self) -> list[ChannelMapping]:
        rows = await self.storage.fetchall(
            f"SELECT {_CHANNEL_COLS} FROM mchat_channel_mapping ORDER BY mchat_team_id, mchat_channel_name"
        )
        return [_channel(r) for r in rows]

    async def users(self) -> list[UserMapping]:
        rows = await self.storage.fetchall(
            "SELECT mchat_user_id, mchat_username, agent_user_id, created_at FROM mchat_user_mapping"
            " ORDER BY mchat_username"
        )
        return [UserMapping(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    async def set_active(self, channel_id: str, active: bool) -> None:
        """Enable or disable a channel; a channel never seen gets a row so the switch holds."""
        await self._upsert(channel_id, "is_active", 1 if active else 0)

    async def set_webhook(self, channel_id: str, url: str) -> None:
        """The channel's own incoming-webhook URL ("" to clear) for late webhook-door answers."""
        await self._upsert(channel_id, "incoming_webhook_url", url)

    async def _upsert(self, channel_id: str, column: str, value: object) -> None:
        if column not in ("is_active", "incoming_webhook_url"):
            raise ValueError(column)
        now = time.time()
        await self.storage.execute(
            f"INSERT INTO mchat_channel_mapping (mchat_channel_id, {column}, created_at, updated_at)"
            f" VALUES (?, ?, ?, ?) ON CONFLICT(mchat_channel_id) DO UPDATE SET"
            f" {column} = excluded.{column}, updated_at = excluded.updated_at",
            (channel_id, value, now, now),
        )
        self._channels.pop(channel_id, None)
        log.info("mappings.channel_changed", mchat_channel_id=channel_id, column=column)


_CHANNEL_COLS = (
    "mchat_channel_id, mchat_channel_name, mchat_team_id, agent_room_id, incoming_webhook_url,"
    " is_active, created_at, updated_at"
)


def _channel(row: Sequence[Any]) -> ChannelMapping:
    return ChannelMapping(
        mchat_channel_id=str(row[0]),
        mchat_channel_name=str(row[1]),
        mchat_team_id=str(row[2]),
        agent_room_id=str(row[3]),
        incoming_webhook_url=str(row[4]),
        is_active=bool(row[5]),
        created_at=float(row[6]),
        updated_at=float(row[7]),
    )
