"""Memories follow their source post, against the dev server over real sockets: the author's edit
supersedes the memory (and the bot's confirmation says so), the author's deletion forgets it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.mattermost.events import OtherEvent
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.memory.store import EdgeMemoryStore, Memory, Viewer, new_memory_id
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.listeners.follow import Follower, memories_from_post
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.storage import SqliteStorage
from tests.support.chat import FakeChat
from tests.support.gateway import running_gateway

QUIET_S = 1.0  # how long "nothing happens" is watched


@dataclass
class World:
    dev: DevServer
    store: EdgeMemoryStore
    inbox: Inbox
    kim: RestClient  # kim's own client: kim edits and deletes kim's posts
    bot_rest: RestClient

    @property
    def qa(self) -> str:
        return self.dev.seed.channels["qa"]

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.dev.seed.team_id, self.qa, self.dev.seed.users["kim"].id)

    async def remembered(self, text: str) -> tuple[dict[str, Any], Memory]:
        """kim's ``@ai remember`` post, and the memory the bot made of it."""
        post = await self.dev.user_post("kim", self.qa, f"@ai remember {text}")
        memory = Memory(
            id=new_memory_id(),
            text=text,
            team_id=self.dev.seed.team_id,
            channel_id=self.qa,
            user_id=post["user_id"],
            user_name="kim",
            source_post_id=post["id"],
        )
        await self.store.add(memory)
        return post, memory

    def bot_posts(self) -> list[dict[str, Any]]:
        return self.dev.posts_by(self.dev.seed.bot.id)


@pytest.fixture
async def world(tmp_path: Path, store: EdgeMemoryStore) -> AsyncIterator[World]:
    async with (
        DevServer() as dev,
        SqliteStorage(tmp_path / "db.sqlite3") as storage,
        RestClient(dev.url, dev.seed.bot.token) as bot_rest,
        RestClient(dev.url, dev.seed.users["kim"].token) as kim,
    ):
        inbox = Inbox(storage)
        follower = Follower(store, bot_rest, inbox, BotIdentity(dev.seed.bot.id, "memorybot", ("@ai",)))
        task = asyncio.create_task(follower.run())
        try:
            async with running_gateway(dev.url, dev.seed.bot.token, follower.on_event):
                yield World(dev, store, inbox, kim, bot_rest)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_an_edit_supersedes_the_memory_and_rewrites_the_confirmation(world: World) -> None:
    post, old = await world.remembered("X부품 불량률 12%")
    confirmation = await world.bot_rest.create_post(world.qa, "#### 🧠 메모리 저장됨", root_id=post["id"])
    await world.inbox.record_sent(post["id"], 0, confirmation["id"])  # what the worker wrote when it replied

    await world.kim.patch_post(post["id"], message="@ai remember X부품 불량률 8%")

    bot = world.dev.seed.bot.id
    [shown] = await world.dev.wait_for_posts(
        lambda p: p["id"] == confirmation["id"] and "8%" in p["message"], timeout=15
    )
    assert "✏️" in shown["message"] and "X부품 불량률 8%" in shown["message"]
    [current] = await world.store.recent(world.viewer)
    assert current.text == "X부품 불량률 8%" and current.replaces == old.id
    assert current.source_post_id == post["id"] and current.user_name == "kim"
    before = await world.store.get(old.id)
    assert before is not None and before.valid_until > 0 and before.superseded_by == current.id
    await asyncio.sleep(QUIET_S)
    assert [p["id"] for p in world.bot_posts() if p["user_id"] == bot] == [confirmation["id"]]  # no new post


async def test_with_two_daemons_on_one_state_an_edit_makes_one_new_version(world: World) -> None:
    """A second daemon's follower (its own socket and inbox instance, the same state and memory
    store) gets the same edit: only one of them follows it."""
    second = Follower(
        world.store,
        world.bot_rest,
        Inbox(world.inbox.storage, instance="second"),
        BotIdentity(world.dev.seed.bot.id, "memorybot", ("@ai",)),
    )
    task = asyncio.create_task(second.run())
    try:
        async with running_gateway(world.dev.url, world.dev.seed.bot.token, second.on_event):
            post, old = await world.remembered("The audit is on Monday")
            await world.kim.patch_post(post["id"], message="@ai remember The audit is on Tuesday")
            await world.dev.wait_for_posts(
                lambda p: p["user_id"] == world.dev.seed.bot.id and p["root_id"] == post["id"], timeout=15
            )
            await asyncio.sleep(QUIET_S)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    [current] = await world.store.recent(world.viewer)
    assert current.text == "The audit is on Tuesday" and current.replaces == old.id
    assert len(await memories_from_post(world.store, world.qa, post["id"])) == 2  # old + one new
    assert len([p for p in world.bot_posts() if p["root_id"] == post["id"]]) == 1


async def test_an_edit_in_a_dm_during_a_rest_outage_is_followed_once_the_server_is_back(
    world: World,
) -> None:
    """In a DM ``remember`` needs no mention, so the follower must know the channel's type: the
    server's REST is away (503) when the edit comes, and the follow is tried again until it is
    back, instead of reading the DM as a public channel (where the edit is no command)."""
    dm = world.dev.seed.dm["kim"]
    post = await world.dev.user_post("kim", dm, "remember the gate code changes on Monday")
    memory = Memory(
        id=new_memory_id(),
        text="the gate code changes on Monday",
        scope="personal",
        channel_id=dm,
        user_id=post["user_id"],
        user_name="kim",
        source_post_id=post["id"],
    )
    await world.store.add(memory)
    kim = world.dev.store.user_by_name("kim")
    assert kim is not None
    world.dev.faults.rest_outage(4.0)  # longer than the REST client's own three tries
    world.dev.posts.patch(kim, post["id"], {"message": "remember the gate code changes on Friday"})

    async def current() -> list[str]:
        found = await memories_from_post(world.store, dm, post["id"])
        return [m.text for m in found if m.valid_until <= 0]

    async with asyncio.timeout(60):
        while await current() != ["the gate code changes on Friday"]:  # noqa: ASYNC110 - polled store
            await asyncio.sleep(0.2)


async def test_an_edit_without_a_confirmation_says_so_in_the_thread(world: World) -> None:
    post, _ = await world.remembered("The release freeze starts on December 1")
    await world.kim.patch_post(post["id"], message="@ai remember The release freeze starts on December 8")
    [said] = await world.dev.wait_for_posts(
        lambda p: p["user_id"] == world.dev.seed.bot.id and p["root_id"] == post["id"], timeout=15
    )
    assert "December 8" in said["message"] and "edited" in said["message"]
    [current] = await world.store.recent(world.viewer)
    assert current.text == "The release freeze starts on December 8"


async def test_an_edit_that_no_longer_remembers_leaves_the_memory(world: World) -> None:
    post, old = await world.remembered("X부품 납기는 다음 주")
    await world.kim.patch_post(post["id"], message="nevermind, wrong channel")
    await asyncio.sleep(QUIET_S)
    assert [m.id for m in await world.store.recent(world.viewer)] == [old.id]
    assert world.bot_posts() == []


async def test_a_deletion_forgets_every_memory_of_the_post_and_says_so_in_the_channel(
    world: World,
) -> None:
    post, memory = await world.remembered("금요일 회의는 3시")
    _, kept = await world.remembered("X부품 불량률 12%")

    await world.kim.delete_post(post["id"])

    [said] = await world.dev.wait_for_posts(
        lambda p: p["user_id"] == world.dev.seed.bot.id and "🗑️" in p["message"], timeout=15
    )
    assert "1개를 잊었습니다" in said["message"] and "금요일 회의는 3시" in said["message"]
    assert said["channel_id"] == world.qa and said["root_id"] == ""  # the thread went with its root
    assert await world.store.get(memory.id) is None
    assert [m.id for m in await world.store.recent(world.viewer)] == [kept.id]  # another post's memory stays


async def test_only_edits_of_posts_that_can_have_made_a_memory_are_queued(
    store: EdgeMemoryStore, inbox: Inbox
) -> None:
    """A busy channel's edits and deletions (chat, typo fixes) take no room in the queue from the
    ``remember`` posts' (a catch-up after a long outage brings them all at once)."""
    follower = Follower(store, FakeChat(), inbox, BotIdentity("bot1", "memorybot", ("@ai",)))  # type: ignore[arg-type]

    def changed(message: str, kind: str = "post_edited", **extra: object) -> OtherEvent:
        post = {"id": "p1", "channel_id": "c1", "user_id": "u1", "message": message, "create_at": 1}
        return OtherEvent(seq=1, event=kind, data={"post": json.dumps(post | extra)})

    await follower.on_event(changed("lunch at noon?"))
    await follower.on_event(changed("fixed a typo", "post_deleted", file_ids=[]))
    assert follower.queue.qsize() == 0
    await follower.on_event(changed("@ai remember lunch is at noon"))
    await follower.on_event(changed("점심은 12시, 기억해줘", "post_deleted"))
    await follower.on_event(changed("the spec", file_ids=["f1"]))
    assert follower.queue.qsize() == 3
