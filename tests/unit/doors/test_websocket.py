"""The WebSocket door's REST catch-up against the real dev server: paging past the `since` cap,
the durable cursor, merging gaps, retrying a pass that the server failed, and the edits and
deletions of older posts handed to the listeners."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.doors import websocket
from mchat_bot.doors.websocket import CURSOR_KEY, Intake
from mchat_bot.mattermost.events import OtherEvent, Post
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.net import RetryPolicy
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.storage import Storage

FAST = RetryPolicy(first_delay=0.05, max_delay=0.2, tries=None, retryable=lambda _e: True)


@pytest.fixture
async def rest(dev: DevServer) -> AsyncIterator[RestClient]:
    client = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5.0)
    yield client
    await client.aclose()


def make_intake(dev: DevServer, rest: RestClient, storage: Storage) -> Intake:
    bot = BotIdentity(user_id=dev.seed.bot.id, username=dev.seed.bot.username)
    return Intake(rest, Inbox(storage), storage, bot, policy=FAST)


async def queued(storage: Storage) -> list[str]:
    rows = await storage.fetchall("SELECT post_id FROM inbox ORDER BY post_id")
    return [str(r[0]) for r in rows]


async def until(check: object, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 - polled counters
            await asyncio.sleep(0.02)


async def running(intake: Intake) -> asyncio.Task[None]:
    return asyncio.create_task(intake.run_catch_up(), name="catch-up")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_gap_is_read_and_only_mentions_are_queued(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    intake = make_intake(dev, rest, storage)
    since = int(time.time() * 1000) - 1  # posts made in this very millisecond count
    qa = dev.seed.channels["qa"]
    mention = await dev.user_post("kim", qa, "@memorybot 회의는 언제?")
    await dev.user_post("kim", qa, "just chatting")
    dm = await dev.user_post("kim", dev.seed.dm["kim"], "hello in a DM")
    task = await running(intake)
    try:
        await intake.on_gap(since + websocket.CATCH_UP_MARGIN_MS)
        await until(lambda: intake.catch_up_passes == 1)
        assert await queued(storage) == sorted([mention["id"], dm["id"]])
        # the same gap again: the inbox dedupes, nothing new is queued
        await intake.on_gap(since + websocket.CATCH_UP_MARGIN_MS)
        await until(lambda: intake.catch_up_passes == 2)
        assert intake.accepted == 2
    finally:
        await stop(task)


async def test_edits_and_deletions_of_older_posts_reach_the_listeners_as_events(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    """What the socket would have said while it was down: an older post edited, another deleted.
    A post both made and edited in the gap is a new post (its text as it is now) and an edit (for
    a post the margin reads again, seen before the gap); a reaction or a pin is no edit; an edit's
    hidden old version is no post of its own."""
    intake = make_intake(dev, rest, storage)
    heard: list[tuple[str, str, str]] = []

    async def listener(event: OtherEvent) -> None:
        post = event.post()
        assert post is not None
        heard.append((event.event, post.id, post.message))

    intake.on_missed = listener
    qa = dev.seed.channels["qa"]
    kim = dev.store.user_by_name("kim")
    assert kim is not None
    edited = await dev.user_post("kim", qa, "@memorybot remember the audit is on Monday")
    gone = await dev.user_post("kim", qa, "@memorybot remember the spare key is in drawer 2")
    reacted = await dev.user_post("kim", qa, "just chatting")
    since = reacted["create_at"]  # the server's clock: every change below is later
    dev.posts.patch(kim, edited["id"], {"message": "@memorybot remember the audit is on Tuesday"})
    dev.posts.delete(kim, gone["id"])
    dev.posts.add_reaction(kim, {"user_id": kim.id, "post_id": reacted["id"], "emoji_name": "eyes"})
    dev.posts.patch(kim, reacted["id"], {"is_pinned": True})
    fresh = await dev.user_post("kim", qa, "@memorybot remember one")
    dev.posts.patch(kim, fresh["id"], {"message": "@memorybot remember two"})
    task = await running(intake)
    try:
        await intake.on_gap(since + websocket.CATCH_UP_MARGIN_MS)
        await until(lambda: intake.catch_up_passes == 1)
    finally:
        await stop(task)
    assert heard == [
        ("post_edited", edited["id"], "@memorybot remember the audit is on Tuesday"),
        ("post_deleted", gone["id"], "@memorybot remember the spare key is in drawer 2"),
        ("post_edited", fresh["id"], "@memorybot remember two"),
    ]
    assert await queued(storage) == [fresh["id"]]  # the new post, once, as a new post


async def test_a_pass_that_fails_on_503_is_retried_until_the_server_is_back(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    intake = make_intake(dev, rest, storage)
    since = int(time.time() * 1000) - 1  # posts made in this very millisecond count
    mention = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot 어디까지 했지?")
    dev.faults.rest_outage(1.0)
    task = await running(intake)
    try:
        await intake.on_gap(since + websocket.CATCH_UP_MARGIN_MS)
        await until(lambda: intake.catch_up_passes == 1)
        assert intake.catch_up_failures >= 2  # several tries within the outage, none abandoned
        assert await queued(storage) == [mention["id"]]
        assert not task.done()
    finally:
        await stop(task)


async def test_a_gap_reported_during_a_failing_pass_is_merged_into_the_retry(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    intake = make_intake(dev, rest, storage)
    early = int(time.time() * 1000) - 1
    first = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot first")
    await asyncio.sleep(0.05)
    late = int(time.time() * 1000)
    second = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot second")
    dev.faults.rest_outage(0.5)
    task = await running(intake)
    try:
        await intake.on_gap(late + websocket.CATCH_UP_MARGIN_MS)
        await until(lambda: intake.catch_up_failures >= 1)
        await intake.on_gap(early + websocket.CATCH_UP_MARGIN_MS)  # an older gap meanwhile
        await until(lambda: intake.catch_up_passes >= 1)
    finally:
        await stop(task)
    assert await queued(storage) == sorted([first["id"], second["id"]])


async def test_more_posts_than_the_since_cap_are_read_by_paging(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    intake = make_intake(dev, rest, storage)
    since = int(time.time() * 1000) - 1  # posts made in this very millisecond count
    qa = dev.seed.channels["qa"]
    ids = [(await dev.user_post("kim", qa, f"@memorybot question {n}"))["id"] for n in range(1_050)]
    task = await running(intake)
    try:
        await intake.on_gap(since + websocket.CATCH_UP_MARGIN_MS)
        await until(lambda: intake.catch_up_passes == 1, within=30)
    finally:
        await stop(task)
    assert await queued(storage) == sorted(ids)


async def test_the_cursor_survives_a_restart_and_the_next_start_reads_the_gap(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    first = make_intake(dev, rest, storage)
    await first.catch_up_after_restart()  # a first start only notes "now"
    assert await storage.get_kv(CURSOR_KEY) is not None
    assert first.catch_up_passes == 0
    await asyncio.sleep(0.01)
    missed = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot while you were down")
    second = make_intake(dev, rest, storage)  # the daemon restarted
    task = await running(second)
    try:
        await second.catch_up_after_restart()
        await until(lambda: second.catch_up_passes == 1)
    finally:
        await stop(task)
    assert await queued(storage) == [missed["id"]]


async def test_a_pass_stopped_while_it_reads_holds_the_durable_cursor_at_its_gap(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    intake = make_intake(dev, rest, storage)
    await intake.catch_up_after_restart()
    gap = int(time.time() * 1000) - 60_000
    task = await running(intake)
    await intake.on_gap(gap)
    async with asyncio.timeout(10):
        while intake._reading_since is None:  # noqa: ASYNC110 - the pass's first REST call is in flight
            await asyncio.sleep(0)
    await stop(task)
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot live")
    intake._flushed_at = 0.0
    await intake._advance(Post.from_dict(post))
    assert int(await storage.get_kv(CURSOR_KEY) or 0) == gap - websocket.CATCH_UP_MARGIN_MS


async def test_a_gap_left_unread_at_shutdown_holds_the_durable_cursor(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    intake = make_intake(dev, rest, storage)
    await intake.catch_up_after_restart()  # it leads: the cursor is its to write
    gap = int(time.time() * 1000) - 60_000
    dev.faults.rest_outage(30)
    task = await running(intake)
    await intake.on_gap(gap)
    await until(lambda: intake.catch_up_failures >= 1)
    await stop(task)
    # a live event arrives after the failed pass: the cursor written must still be the gap's start
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot live")
    intake._flushed_at = 0.0
    await intake._advance(Post.from_dict(post))
    assert int(await storage.get_kv(CURSOR_KEY) or 0) == gap - websocket.CATCH_UP_MARGIN_MS


async def test_only_the_leading_intake_writes_the_cursor(
    dev: DevServer, rest: RestClient, storage: Storage
) -> None:
    held = str(int(time.time() * 1000) - 60_000)
    await storage.set_kv(CURSOR_KEY, held)  # held at a gap by a leader that died
    follower = make_intake(dev, rest, storage)
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot live")
    await follower._advance(Post.from_dict(post))
    assert await storage.get_kv(CURSOR_KEY) == held  # the next leader still reads from the gap
    socket_up = asyncio.Event()
    socket_up.set()
    leader = asyncio.create_task(follower.run_as_leader(socket_up))
    await until(lambda: follower.catch_up_passes >= 1)
    follower._flushed_at = 0.0
    await follower._advance(Post.from_dict(post))
    assert int(await storage.get_kv(CURSOR_KEY) or 0) >= post["create_at"]
    await stop(leader)
    follower._flushed_at = 0.0
    await follower._advance(Post.from_dict({**post, "create_at": post["create_at"] + 5_000}))
    assert int(await storage.get_kv(CURSOR_KEY) or 0) < post["create_at"] + 5_000  # the lead ended
