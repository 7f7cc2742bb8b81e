"""The WebSocket door's live path over the dev server's socket: which posts are queued for an answer,
which are learned, and which are dropped before any message is built (with the door's test run in
the reader, as the daemon wires it, before even the post is built: the same outcome, the cursor
still moved by the posts it passed)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.doors.websocket import Intake
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.mattermost.gateway import Gateway
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.storage import Storage


async def rows(storage: Storage, sql: str) -> list[str]:
    return [str(r[0]) for r in await storage.fetchall(sql)]


@pytest.mark.parametrize("in_reader", [False, True], ids=["door", "reader"])
async def test_only_mentions_dms_and_learning_channels_get_past_the_socket(
    dev: DevServer, storage: Storage, in_reader: bool
) -> None:
    qa, town = dev.seed.channels["qa"], dev.seed.channels["town-square"]
    bot = BotIdentity(user_id=dev.seed.bot.id, username=dev.seed.bot.username, aliases=("@ai",))
    learner = Learner(
        await LearningChannels(storage, [qa]).load(), await ChatLog(storage).load(), bot.user_id, lambda: None
    )
    rest = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5.0)
    intake = Intake(rest, Inbox(storage), storage, bot, learner=learner)

    async def no_gap(_since_ms: int) -> None:
        return None

    kinds: list[str] = []

    async def on_event(event: object) -> None:
        kinds.append(type(event).__name__)
        await intake.on_event(event)

    wants = intake.wants if in_reader else None
    gateway = Gateway(dev.url, dev.seed.bot.token, on_event, no_gap, wants=wants)
    reader = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.authenticated.wait(), 10)
        alias = await dev.user_post("kim", town, "@ai 불량률 알려줘")
        dm = await dev.user_post("kim", dev.seed.dm["kim"], "no mention needed here")
        learned = await dev.user_post("kim", qa, "the release freeze starts on Friday")
        await dev.user_post("kim", town, "just chatting, nothing for the bot")
        await dev.user_post("kim", dev.seed.gm, "a group chat without the bot's name")
        await dev.user_post("kim", town, "mail me at kim@example.com")  # an "@", but not the bot
        last = await dev.user_post("lee", town, "one more line of chat")
        async with asyncio.timeout(10):
            while gateway.stats.events < 8:  # noqa: ASYNC110 - polled counter: the hello and seven posts
                await asyncio.sleep(0.02)
        await learner.flush()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await rest.aclose()

    assert sorted(await rows(storage, "SELECT post_id FROM inbox")) == sorted([alias["id"], dm["id"]])
    assert await rows(storage, "SELECT post_id FROM knowledge_line") == [learned["id"]]
    assert (intake.accepted, intake.ignored) == (2, 5)
    # in the reader, the three posts with no "@" outside the DM and the learning channel built nothing
    assert kinds.count("PassedPost") == (3 if in_reader else 0), kinds
    # the catch-up cursors (the door's, and the gateway's for a gap) moved past the last post
    assert intake._cursor_ms == last["create_at"] and gateway.since_ms == last["create_at"] - 1
