"""Which channels learn: the operator's list (``knowledge.channels``) and what channel admins turned on.

``learns`` is asked for every post the socket reader sees, so it is a set lookup in memory; the
table is read once at start and written through on every change. ``"*"`` in the operator's list
makes every public and private channel of the bot learn; direct and group messages never learn
(a conversation with the bot is not channel knowledge).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from mchat_bot.storage import Storage

EVERY_CHANNEL = "*"
LEARNING_TYPES = ("O", "P")  # public and private channels; never DMs or group DMs


@dataclass(frozen=True, slots=True)
class LearningChannel:
    channel_id: str
    team_id: str
    channel_name: str
    enabled_by: str
    enabled_at: float
    backfill_before: str  # the oldest post read by the backfill: where a restarted one resumes
    backfilled_to: int  # ms: history read back to here (0 = not read yet)
    backfill_done: bool


PROGRESS_KV = "backfill_line:"  # kv key prefix of a backfill's progress line: "<post id>|<language>"


class LearningChannels:
    def __init__(self, storage: Storage, configured: Iterable[str] = ()) -> None:
        self._db = storage
        configured = [c.strip() for c in configured if c.strip()]
        self.every = EVERY_CHANNEL in configured
        self.configured = frozenset(c for c in configured if c != EVERY_CHANNEL)
        self._turned_on: set[str] = set()
        self._turned_off: set[str] = set()  # by a channel admin, over the operator's "*"

    async def load(self) -> LearningChannels:
        for row in await self._db.fetchall("SELECT channel_id, learning FROM knowledge_channel"):
            if int(row[1]) == 1:
                self._turned_on.add(str(row[0]))
            elif int(row[1]) == 0:
                self._turned_off.add(str(row[0]))
        return self

    def learns(self, channel_id: str, channel_type: str = "O") -> bool:
        if channel_type not in LEARNING_TYPES or channel_id in self._turned_off:
            return False
        return self.every or channel_id in self.configured or channel_id in self._turned_on

    @property
    def any(self) -> bool:
        """Whether any channel may learn (else the reader skips the check's cost altogether)."""
        return self.every or bool(self.configured or self._turned_on)

    # learning column: 1 turned on by an admin, 0 turned off by one, -1 no choice made (a backfill cursor)

    async def turn_on(self, channel_id: str, team_id: str, channel_name: str, by: str) -> bool:
        """Returns False when the channel already learned."""
        was = self.learns(channel_id)
        await self._db.execute(
            "INSERT INTO knowledge_channel"
            " (channel_id, team_id, channel_name, enabled_by, enabled_at, learning) VALUES (?,?,?,?,?,1)"
            " ON CONFLICT (channel_id) DO UPDATE SET learning = 1, team_id = excluded.team_id,"
            " channel_name = excluded.channel_name, enabled_by = excluded.enabled_by,"
            " enabled_at = excluded.enabled_at",
            (channel_id, team_id, channel_name, by, time.time()),
        )
        self._turned_off.discard(channel_id)
        self._turned_on.add(channel_id)
        return not was

    async def turn_off(self, channel_id: str, by: str) -> bool:
        """Returns False when the channel did not learn. Stays off over the operator's ``"*"``."""
        was = self.learns(channel_id)
        await self._db.execute(
            "INSERT INTO knowledge_channel (channel_id, enabled_by, enabled_at, learning) VALUES (?,?,?,0)"
            " ON CONFLICT (channel_id) DO UPDATE SET learning = 0, backfill_before = '', backfilled_to = 0,"
            " backfill_done = 0",
            (channel_id, by, time.time()),
        )
        await self.set_progress_line(channel_id, "", "")  # turned on again: a new backfill, a new line
        self._turned_on.discard(channel_id)
        self._turned_off.add(channel_id)
        return was

    async def get(self, channel_id: str) -> LearningChannel | None:
        row = await self._db.fetchone(
            "SELECT channel_id, team_id, channel_name, enabled_by, enabled_at, backfill_before,"
            " backfilled_to, backfill_done FROM knowledge_channel WHERE channel_id = ?",
            (channel_id,),
        )
        if row is None:
            return None
        return LearningChannel(
            channel_id=str(row[0]),
            team_id=str(row[1]),
            channel_name=str(row[2]),
            enabled_by=str(row[3]),
            enabled_at=float(row[4]),
            backfill_before=str(row[5]),
            backfilled_to=int(row[6]),
            backfill_done=bool(row[7]),
        )

    async def set_backfill_cursor(self, channel_id: str, before: str, to_ms: int) -> None:
        """Backfill read the channel's history back to post ``before`` (at ``to_ms``)."""
        await self._db.execute(
            # a channel that learns from the settings alone gets a row with no admin choice (-1)
            "INSERT INTO knowledge_channel (channel_id, enabled_at, learning, backfill_before, backfilled_to)"
            " VALUES (?,?,-1,?,?) ON CONFLICT (channel_id) DO UPDATE SET"
            " backfill_before = excluded.backfill_before, backfilled_to = excluded.backfilled_to",
            (channel_id, time.time(), before, to_ms),
        )

    async def set_backfill_done(self, channel_id: str) -> None:
        await self._db.execute(
            "UPDATE knowledge_channel SET backfill_done = 1, backfill_before = '' WHERE channel_id = ?",
            (channel_id,),
        )

    async def progress_line(self, channel_id: str) -> tuple[str, str]:
        """(post id, language) of the backfill's progress line in the channel; ("", "") if none yet:
        a backfill resumed after a restart edits the same line, in the language it was asked in."""
        raw = await self._db.get_kv(f"{PROGRESS_KV}{channel_id}")
        post_id, _, lang = (raw or "").partition("|")
        return post_id, lang

    async def set_progress_line(self, channel_id: str, post_id: str, lang: str) -> None:
        await self._db.set_kv(f"{PROGRESS_KV}{channel_id}", f"{post_id}|{lang}")

    async def pending_backfills(self) -> list[str]:
        """Channels turned on whose backfill has not finished (resumed after a restart)."""
        rows = await self._db.fetchall(
            "SELECT channel_id FROM knowledge_channel WHERE learning = 1 AND backfill_done = 0"
        )
        return [str(r[0]) for r in rows]
