"""A learning channel's backfill against the dev server: its progress line, across a failed run."""

from __future__ import annotations

import asyncio
import contextlib

from mchat_bot.devserver import DevServer
from mchat_bot.doors.backfill import Backfill, BackfillRunner
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.storage import Storage

POSTS = 1200  # six pages: the failure always finds a page still to read


async def test_a_backfill_resumed_after_a_failed_run_edits_its_one_progress_line_in_its_language(
    dev: DevServer, storage: Storage
) -> None:
    town = dev.seed.channels["town-square"]
    for i in range(POSTS):
        await dev.user_post(("kim", "lee")[i % 2], town, f"교대 {i}번 메모")
    channels = await LearningChannels(storage).load()
    await channels.turn_on(town, dev.seed.team_id, "town-square", dev.seed.users["kim"].id)
    learner = Learner(channels, await ChatLog(storage).load(), dev.seed.bot.id, lambda: None)
    bot = BotIdentity(dev.seed.bot.id, dev.seed.bot.username, ("@ai",))

    def progress_lines() -> list[dict[str, object]]:
        return [p for p in dev.posts_by(dev.seed.bot.id) if p["channel_id"] == town]

    async with RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5.0) as rest:

        def runner() -> BackfillRunner:
            return BackfillRunner(
                Backfill(rest, learner, channels, bot), channels, rest, days=30, progress_every=0
            )

        first = runner()
        first.request(town, "ko")
        task = asyncio.create_task(first.run())
        try:
            async with asyncio.timeout(20):
                while not progress_lines():  # noqa: ASYNC110 - the first page's line
                    await asyncio.sleep(0.005)  # a busy poll (sleep 0) starves the backfill's reads
            dev.faults.rest_outage(60)  # the next page fails: the run ends as a crash would
            async with asyncio.timeout(20):
                with contextlib.suppress(Exception):
                    await task
        finally:
            task.cancel()
            dev.faults.rest_outage(0)
        assert not (await channels.get(town)).backfill_done  # type: ignore[union-attr]

        second = runner()  # after a restart: resumed from the cursor, asked in no language
        task = asyncio.create_task(second.run())
        try:
            async with asyncio.timeout(30):
                while not (await channels.get(town)).backfill_done:  # type: ignore[union-attr]  # noqa: ASYNC110 - a row
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    [line] = progress_lines()  # the same line, edited: no second one
    assert "배웠습니다" in str(line["message"]) and str(POSTS) in str(line["message"]), line
