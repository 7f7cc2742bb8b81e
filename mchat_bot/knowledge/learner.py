"""What a learning channel's post becomes on its way in: a line in the log, the indexer woken.

Called by the doors for every post that is not addressed to the bot; the channel check is a set
lookup, and a post that is kept costs one SQLite statement (a catch-up page, one for the page).
Bot posts, webhook posts, system messages and the bot's own answers are not channel knowledge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.lines import ChatLog, Line


class Learner:
    def __init__(
        self, channels: LearningChannels, lines: ChatLog, bot_user_id: str, wake: Callable[[], None]
    ) -> None:
        self.channels = channels
        self.lines = lines
        self.bot_user_id = bot_user_id
        self._wake = wake
        self.kept = 0

    def wants(
        self, channel_id: str, channel_type: str, user_id: str, post_type: str, *, automated: bool
    ) -> bool:
        """Whether a post is channel knowledge: a person's post in a learning channel."""
        return (
            not automated
            and not post_type
            and user_id != self.bot_user_id
            and self.channels.learns(channel_id, channel_type)
        )

    async def keep(self, lines: Sequence[Line]) -> int:
        """Log the lines (new ones, and changed texts of edited ones) and wake the indexer."""
        if not lines:
            return 0
        written = await self.lines.record(lines)
        if written:
            self.kept += written
            self._wake()
        return written
