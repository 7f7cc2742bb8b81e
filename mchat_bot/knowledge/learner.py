"""What a learning channel's post becomes on its way in: a line in the log, the indexer woken.

Called by the doors for every post that is not addressed to the bot; the channel check is a set
lookup. The socket's posts are gathered for up to FLUSH_S (or FLUSH_LINES) and written in one
statement, so a busy channel costs the reader a list append, not a SQLite hop per post; a catch-up
page or a backfill page is written at once. What is gathered but not written yet holds the
socket cursor back (``unwritten_since``), so a crash loses nothing: the catch-up after the restart
reads those posts again. Bot posts, webhook posts, system messages and the bot's own answers are
not channel knowledge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.lines import ChatLog, Line

FLUSH_S = 0.05
FLUSH_LINES = 256


class Learner:
    def __init__(
        self, channels: LearningChannels, lines: ChatLog, bot_user_id: str, wake: Callable[[], None]
    ) -> None:
        self.channels = channels
        self.lines = lines
        self.bot_user_id = bot_user_id
        self._wake = wake
        self.kept = 0
        self._gathered: list[Line] = []
        self._flushing = asyncio.Lock()

    def wants(
        self, channel_id: str, channel_type: str, user_id: str, post_type: str, *, automated: bool
    ) -> bool:
        """Whether a post is channel knowledge: a person's post in a learning channel."""
        return self.by_a_person(user_id, post_type, automated=automated) and self.channels.learns(
            channel_id, channel_type
        )

    def by_a_person(self, user_id: str, post_type: str, *, automated: bool) -> bool:
        """A person's post, wherever it is: not the bot's own, another bot's or a webhook's
        (``automated``), nor a system message. Only such a post can be channel knowledge."""
        return not automated and not post_type and user_id != self.bot_user_id

    async def keep(self, lines: Sequence[Line]) -> int:
        """Log the lines now (new ones, and changed texts of edited ones) and wake the indexer."""
        if not lines:
            return 0
        written = await self.lines.record(lines)
        if written:
            self.kept += written
            self._wake()
        return written

    async def gather(self, lines: Sequence[Line]) -> None:
        """The socket's lines: kept with others, written by :meth:`run` (or now, when many wait)."""
        self._gathered.extend(lines)
        if len(self._gathered) >= FLUSH_LINES:
            await self.flush()

    def unwritten_since(self) -> int | None:
        """The time (ms) of the oldest gathered line not written yet, or None."""
        return min((line.create_at for line in self._gathered), default=None)

    async def flush(self) -> None:
        async with self._flushing:
            batch = list(self._gathered)
            if batch:
                await self.keep(batch)  # on failure they stay gathered and are tried again
                del self._gathered[: len(batch)]

    async def run(self) -> None:
        """For the supervisor: write what the socket gathered, every FLUSH_S."""
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()
