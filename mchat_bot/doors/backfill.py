"""Backfill: a learning channel's history read over REST into the knowledge log, restartable.

Pages go newest first, 200 posts each (the server's cap), each page asked ``before`` the oldest post
of the last one, so posts arriving meanwhile never shift a page. After every page the cursor (that
oldest post and its time) is saved, so a backfill killed halfway resumes where it stopped. Requests
go at the pacer's background priority: they use only the REST budget that replies leave, and wait
(never fail) when there is none. Posts go through the same filters as live ones (not addressed to the bot,
``Learner.wants``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from mchat_bot.doors.websocket import knowledge_line, message_from_post
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.learner import Learner
from mchat_bot.mattermost.events import Post
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.net.pacing import Priority
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.router import BotIdentity, Ignore, route
from mchat_bot.pipeline.users import UserNames

log = structlog.get_logger(__name__)

PER_PAGE = 200  # Mattermost's maximum per_page


@dataclass(slots=True)
class Progress:
    channel_id: str
    read: int = 0  # posts read from the server
    kept: int = 0  # lines written to the log (new or changed)
    oldest_ms: int = 0  # the oldest post read so far
    done: bool = False


ProgressFn = Callable[[Progress], Awaitable[None]]


async def _no_progress(progress: Progress) -> None:
    return None


class Backfill:
    def __init__(
        self, rest: RestClient, learner: Learner, channels: LearningChannels, bot: BotIdentity
    ) -> None:
        self._rest = rest.variant(priority=Priority.BACKGROUND)
        self._bot = bot
        self._learner = learner
        self._channels = channels
        self._names = UserNames(self._rest.get_user)

    async def run(self, channel_id: str, since_ms: int, on_page: ProgressFn = _no_progress) -> Progress:
        """Read the channel back to ``since_ms`` (resuming a cursor a killed run left); the result."""
        channel = await self._rest.get_channel(channel_id)
        state = await self._channels.get(channel_id)
        before = state.backfill_before if state is not None and not state.backfill_done else ""
        progress = Progress(channel_id, oldest_ms=state.backfilled_to if state and before else 0)
        while True:
            page = await self._page(channel_id, before)
            posts = [
                Post.from_dict(page["posts"][pid]) for pid in page.get("order", []) if pid in page["posts"]
            ]
            if not posts:
                break
            wanted = [p for p in posts if p.create_at >= since_ms and not p.delete_at and not p.original_id]
            lines = []
            for p in wanted:
                msg = message_from_post(p, channel, await self._names.of(p.user_id))
                if not isinstance(route(msg, self._bot), Ignore):
                    continue  # asked of the bot (a command, a question): not what the channel said
                line = knowledge_line(self._learner, msg)
                if line is not None:
                    lines.append(line)
            progress.kept += await self._learner.keep(lines)
            progress.read += len(posts)
            oldest = posts[-1]
            before, progress.oldest_ms = oldest.id, oldest.create_at
            await self._channels.set_backfill_cursor(channel_id, before, oldest.create_at)
            await on_page(progress)
            if oldest.create_at < since_ms or len(posts) < PER_PAGE:
                break
        await self._channels.set_backfill_done(channel_id)
        progress.done = True
        await on_page(progress)
        log.info("knowledge.backfilled", mchat_channel_id=channel_id, read=progress.read, kept=progress.kept)
        return progress

    async def _page(self, channel_id: str, before: str) -> dict[str, Any]:
        if before:
            return await self._rest.get_channel_posts(channel_id, before=before, per_page=PER_PAGE)
        return await self._rest.get_channel_posts(channel_id, page=0, per_page=PER_PAGE)

    async def kept_in(self, channel_id: str) -> int:
        """The channel's lines in the knowledge log: what its progress line reports."""
        return await self._learner.lines.size(channel_id)


def since_ms(days: float) -> int:
    """The epoch-ms time ``days`` ago (0 days: everything)."""
    return 0 if days <= 0 else int((time.time() - days * 86400) * 1000)


class BackfillRunner:
    """The daemon's backfills, one channel at a time, as a supervised part: channels turned on are
    queued by :meth:`request`; after a restart the unfinished ones are resumed from their cursor.
    A progress line is posted in the channel and edited as pages come in."""

    def __init__(
        self,
        backfill: Backfill,
        channels: LearningChannels,
        rest: RestClient,
        *,
        days: float,
        progress_every: float = 3.0,
    ) -> None:
        self.backfill = backfill
        self.channels = channels
        self.rest = rest.variant(priority=Priority.EDIT, tries=1)
        self.days = days
        self.progress_every = progress_every
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: dict[str, str] = {}  # channel id -> the language of its progress line

    def request(self, channel_id: str, lang: str = "en") -> None:
        if self.days > 0 and channel_id not in self._queued:
            self._queued[channel_id] = lang
            self._queue.put_nowait(channel_id)

    async def run(self) -> None:
        """For the supervisor. A channel whose backfill fails raises (the supervisor restarts the
        part); its cursor is saved per page, so the restart resumes it."""
        for channel_id in await self.channels.pending_backfills():
            self.request(channel_id)
        while True:
            channel_id = await self._queue.get()
            if self.channels.learns(channel_id):
                await self._one(channel_id, self._queued.get(channel_id, "en"))
            self._queued.pop(channel_id, None)

    async def _one(self, channel_id: str, lang: str) -> None:
        since = since_ms(self.days)
        # a resumed backfill (a restart, a failed page) edits the line it posted, in its language
        post_id, saved_lang = await self.channels.progress_line(channel_id)
        if saved_lang:
            lang = saved_lang
        else:
            await self.channels.set_progress_line(channel_id, post_id, lang)
        before = await self.backfill.kept_in(channel_id)  # what earlier runs (and the socket) kept
        shown_at = 0.0

        async def show(progress: Progress) -> None:
            nonlocal post_id, shown_at
            now = time.monotonic()
            if not progress.done and now - shown_at < self.progress_every:
                return
            shown_at = now
            kept = await self.backfill.kept_in(channel_id) if progress.done else before + progress.kept
            text = texts.backfill_progress(lang, kept, progress.oldest_ms, done=progress.done)
            try:  # the line is a courtesy: a failure to show it never stops the reading
                if not post_id:
                    post_id = str((await self.rest.create_post(channel_id, text)).get("id", ""))
                    await self.channels.set_progress_line(channel_id, post_id, lang)
                else:
                    await self.rest.patch_post(post_id, message=text)
            except Exception as exc:
                if post_id and getattr(exc, "status", None) == 404:
                    post_id = ""  # someone deleted the line: the next page posts a new one
                log.warning("knowledge.backfill_progress_failed", error=type(exc).__name__)

        try:
            await self.backfill.run(channel_id, since, show)
        except Exception:
            self._queued.pop(channel_id, None)
            self.request(channel_id, lang)  # again, after the supervisor's pause
            raise
