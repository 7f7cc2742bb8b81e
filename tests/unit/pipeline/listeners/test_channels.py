"""Channels against the dev server over real sockets: auto-join, one greeting per channel, and the
bot's own ``user_added`` / ``user_removed`` events as the gateway delivers them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline.listeners.channels import GREETED, LEFT, Channels
from mchat_bot.storage import SqliteStorage, Storage
from tests.support.gateway import running_gateway

QUIET_S = 1.0  # how long "nothing more is posted" is watched


@pytest.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer() as server:
        server.posts.pending_ttl = 0.01  # "once" must hold without the server's pending_post_id dedupe
        yield server


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with SqliteStorage(tmp_path / "db.sqlite3") as st:
        yield st


@contextlib.asynccontextmanager
async def bot_rest(dev: DevServer) -> AsyncIterator[RestClient]:
    async with RestClient(dev.url, dev.seed.bot.token) as rest:
        yield rest


@contextlib.asynccontextmanager
async def running(channels: Channels) -> AsyncIterator[None]:
    """``Channels.run`` in its own task, as the daemon supervises it."""
    task = asyncio.create_task(channels.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def greetings(dev: DevServer, channel_id: str) -> list[dict[str, Any]]:
    return [p for p in dev.posts_by(dev.seed.bot.id) if p["channel_id"] == channel_id]


async def wait_greeted(dev: DevServer, channel_id: str) -> dict[str, Any]:
    bot = dev.seed.bot.id
    [post] = await dev.wait_for_posts(lambda p: p["user_id"] == bot and p["channel_id"] == channel_id)
    return post


async def members(dev: DevServer, channel_id: str) -> set[str]:
    async with RestClient(dev.url, dev.seed.users["admin"].token) as admin:
        return {m["user_id"] for m in await admin.request("GET", f"/channels/{channel_id}/members")}


async def test_auto_join_joins_and_greets_once_even_with_its_own_user_added_event(
    dev: DevServer, storage: Storage
) -> None:
    no_bot = dev.seed.channels["no-bot"]
    async with bot_rest(dev) as rest:
        channels = Channels(rest, storage, dev.seed.bot.id, auto_join=["mchat/no-bot"], mention="@ai")
        # the gateway delivers the bot's own `user_added` while the join is still greeting
        async with running_gateway(dev.url, dev.seed.bot.token, channels.on_event), running(channels):
            greeting = await wait_greeted(dev, no_bot)
            await asyncio.sleep(QUIET_S)
        assert dev.seed.bot.id in await members(dev, no_bot)
        assert channels.joined == [no_bot]
        assert "@ai remember" in greeting["message"] and "@ai help" in greeting["message"]
        assert greeting["root_id"] == "" and greeting["props"].get("mchat_greeting") is True
        assert len(greetings(dev, no_bot)) == 1

        # a restart (a new Channels on the same database) joins again but does not greet again
        again = Channels(rest, storage, dev.seed.bot.id, auto_join=["mchat/no-bot"])
        async with running(again):
            await asyncio.sleep(QUIET_S)
        assert again.joined == [no_bot]
        assert len(greetings(dev, no_bot)) == 1


async def test_a_channel_that_cannot_be_joined_does_not_stop_the_others(
    dev: DevServer, storage: Storage
) -> None:
    no_bot = dev.seed.channels["no-bot"]
    async with bot_rest(dev) as rest:
        auto_join = ["mchat/no-such-channel", "mchat/no-bot"]
        channels = Channels(rest, storage, dev.seed.bot.id, auto_join=auto_join)
        async with running(channels):
            await wait_greeted(dev, no_bot)
    assert channels.joined == [no_bot]


async def test_added_by_an_admin_greets_removed_is_noted_and_re_added_greets_no_more(
    dev: DevServer, storage: Storage
) -> None:
    no_bot = dev.seed.channels["no-bot"]
    bot_id = dev.seed.bot.id
    async with bot_rest(dev) as rest, RestClient(dev.url, dev.seed.users["admin"].token) as admin:
        channels = Channels(rest, storage, bot_id)
        async with running_gateway(dev.url, dev.seed.bot.token, channels.on_event):
            await admin.add_channel_member(no_bot, bot_id)
            greeting = await wait_greeted(dev, no_bot)
            assert "AI Memory Bot" in greeting["message"]
            assert await storage.get_kv(GREETED + no_bot)

            await admin.request("DELETE", f"/channels/{no_bot}/members/{bot_id}")
            left = await _until_kv(storage, LEFT + no_bot, lambda v: bool(v))
            assert float(left) > 0  # when the bot was removed

            await admin.add_channel_member(no_bot, bot_id)
            await _until_kv(storage, LEFT + no_bot, lambda v: v == "")  # back in
            await asyncio.sleep(QUIET_S)
        assert len(greetings(dev, no_bot)) == 1


async def test_other_members_coming_and_going_are_not_the_bots_business(
    dev: DevServer, storage: Storage
) -> None:
    qa = dev.seed.channels["qa"]
    async with bot_rest(dev) as rest, RestClient(dev.url, dev.seed.users["admin"].token) as admin:
        channels = Channels(rest, storage, dev.seed.bot.id)
        async with running_gateway(dev.url, dev.seed.bot.token, channels.on_event):
            kim = dev.seed.users["kim"].id
            await admin.request("DELETE", f"/channels/{qa}/members/{kim}")
            await admin.add_channel_member(qa, kim)
            await asyncio.sleep(QUIET_S)
    assert greetings(dev, qa) == []
    assert await storage.get_kv(LEFT + qa) is None and await storage.get_kv(GREETED + qa) is None


async def test_no_greeting_in_a_direct_message_or_when_greeting_is_off(
    dev: DevServer, storage: Storage
) -> None:
    dm = dev.seed.dm["kim"]
    no_bot = dev.seed.channels["no-bot"]
    async with bot_rest(dev) as rest:
        assert await Channels(rest, storage, dev.seed.bot.id).greet(dm) is False
        quiet = Channels(rest, storage, dev.seed.bot.id, greet=False)
        assert await quiet.join("mchat/no-bot") == no_bot
    assert dev.seed.bot.id in await members(dev, no_bot)
    assert greetings(dev, dm) == [] and greetings(dev, no_bot) == []


async def _until_kv(storage: Storage, key: str, ok: Any, within: float = 5.0) -> str:
    async with asyncio.timeout(within):
        while True:
            value = await storage.get_kv(key)
            if value is not None and ok(value):
                return value
            await asyncio.sleep(0.02)
