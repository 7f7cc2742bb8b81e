"""Fault tests: nothing lost, nothing duplicated, never deaf, under the faults a messenger really has.

Counts are small in `make test`; `make soak` (MCHAT_SOAK=1) runs the full counts.
Each test counts, per asking post, the bot's replies in its thread: exactly one is right,
zero is a lost message and two is a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon

SOAK = os.environ.get("MCHAT_SOAK") == "1"
# The full counts of `make soak` take minutes; the quick ones stay inside the default timeout.
pytestmark = pytest.mark.timeout(900 if SOAK else 180)

FAST = {"MCHAT_BOT_WORKERS": "8", "MCHAT_MATTERMOST_SAFETY_RATE_PER_SEC": "1000"}


def count(quick: int, full: int) -> int:
    return full if SOAK else quick


@pytest_asyncio.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer() as server:
        yield server


@pytest_asyncio.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


async def post_mentions(dev: DevServer, n: int, *, rate: float = 200.0, tag: str = "") -> list[dict]:
    """Post n mentions spread over the human users and the bot's channels, at about `rate` per second."""
    channels = [dev.seed.channels[c] for c in ("qa", "qa-private", "town-square")]
    users = ["kim", "lee", "park"]
    posts = []
    started = time.monotonic()
    for i in range(n):
        text = f"@ai help {tag}{i}" if i % 4 else f"@ai 질문 {tag}{i} 오늘 일정은?"
        posts.append(await dev.user_post(users[i % 3], channels[i % 3], text))
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    return posts


def reply_counts(bot: DaemonProcess, posts: list[dict]) -> tuple[list[str], list[str]]:
    """(lost, duplicated) post ids: replies are matched by the marker the bot puts in props."""
    firsts: dict[str, int] = {}
    for p in bot.bot_posts():
        props = p.get("props", {})
        if props.get("mchat_part", 0) == 0 and props.get("mchat_reply_to"):
            firsts[props["mchat_reply_to"]] = firsts.get(props["mchat_reply_to"], 0) + 1
    lost = [p["id"] for p in posts if firsts.get(p["id"], 0) == 0]
    dup = [p["id"] for p in posts if firsts.get(p["id"], 0) > 1]
    return lost, dup


async def wait_all_answered(bot: DaemonProcess, posts: list[dict], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lost, _ = reply_counts(bot, posts)
        if not lost:
            await asyncio.sleep(1.0)  # give a duplicate the chance to show itself
            return
        await asyncio.sleep(0.25)


def assert_exactly_once(bot: DaemonProcess, posts: list[dict]) -> None:
    lost, dup = reply_counts(bot, posts)
    assert not lost and not dup, f"lost {len(lost)}, duplicated {len(dup)} of {len(posts)}\n{bot.log_tail()}"


async def test_socket_dropped_every_few_seconds(dev: DevServer, llm: FakeLLM, tmp_path: Path) -> None:
    n = count(150, 2000)
    bot = DaemonProcess(dev, llm, tmp_path, FAST)
    await bot.start()
    dev.faults.drop_every(5.0 if SOAK else 1.0)
    try:
        posts = await post_mentions(dev, n, rate=100.0, tag=uuid.uuid4().hex[:4])
        await wait_all_answered(bot, posts, timeout=60 + n / 10)
    finally:
        dev.faults.drop_every(None)
    assert_exactly_once(bot, posts)
    assert await bot.stop() == 0


async def test_sigkill_mid_run_then_restart(dev: DevServer, llm: FakeLLM, tmp_path: Path) -> None:
    n = count(80, 500)
    llm.delay(0.05)  # keep work in flight when the kill lands
    bot = DaemonProcess(dev, llm, tmp_path, FAST)
    await bot.start()
    posting = asyncio.create_task(post_mentions(dev, n, rate=100.0, tag=uuid.uuid4().hex[:4]))
    await asyncio.sleep(n / 200)
    bot.kill()
    assert bot.proc is not None
    await bot.proc.wait()
    posts = await posting
    await bot.start(wait_ready=False)
    await wait_all_answered(bot, posts, timeout=90 + n / 10)
    assert_exactly_once(bot, posts)
    assert await bot.stop() == 0


async def test_429_and_5xx_on_a_third_of_posts(dev: DevServer, llm: FakeLLM, tmp_path: Path) -> None:
    n = count(60, 500)
    bot = DaemonProcess(dev, llm, tmp_path, FAST)
    await bot.start()
    dev.faults.fail_post_ratio(1 / 3, statuses=(429, 500, 502, 503))
    try:
        posts = await post_mentions(dev, n, rate=50.0, tag=uuid.uuid4().hex[:4])
        await wait_all_answered(bot, posts, timeout=90 + n / 5)
    finally:
        dev.faults.fail_post_ratio(0.0)
    assert_exactly_once(bot, posts)
    assert await bot.stop() == 0


async def test_server_restart_loses_replay_and_rest_catch_up_fills_the_gap(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    bot = DaemonProcess(dev, llm, tmp_path, FAST)
    await bot.start()
    dev.faults.freeze_sockets(True)  # the socket hears nothing while the posts are made
    posts = await post_mentions(dev, count(20, 200), tag=uuid.uuid4().hex[:4])
    await dev.restart(lose_replay=True)
    dev.faults.freeze_sockets(False)
    await wait_all_answered(bot, posts, timeout=60)
    assert_exactly_once(bot, posts)
    assert await bot.stop() == 0


async def test_a_restart_without_replay_and_a_rest_outage_lose_no_mention(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    """The server restarts (its replay buffer gone) and its REST API answers 503 for 6 s while it
    boots: the catch-up's first reads fail, and it must keep trying until every mention posted in
    the gap is answered, once each."""
    bot = DaemonProcess(dev, llm, tmp_path, FAST)
    await bot.start()
    dev.faults.freeze_sockets(True)  # the socket hears nothing while the posts are made
    posts = await post_mentions(dev, count(10, 100), tag=uuid.uuid4().hex[:4])
    dev.faults.rest_outage(6.0)
    await dev.restart(lose_replay=True)
    dev.faults.freeze_sockets(False)
    started = time.monotonic()
    await wait_all_answered(bot, posts, timeout=45)
    assert time.monotonic() - started >= 5.0, "answered before REST was back: the outage did not bite"
    assert_exactly_once(bot, posts)
    log = bot.log_tail(500_000)
    assert '"catch_up_failed"' in log and "Task exception was never retrieved" not in log
    assert await bot.stop() == 0


async def test_edits_and_deletions_made_while_the_socket_was_down_are_followed(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    """The server restarts without replay while kim edits one remembered fact and deletes the post
    of another: the socket never hears either, the REST catch-up does, and the memories follow."""
    async with running_daemon(dev, llm, tmp_path, FAST) as bot:
        word = uuid.uuid4().hex[:6]
        edited, confirmed = await bot.ask("kim", "qa", f"@ai remember audit{word} is on Monday")
        deleted, _ = await bot.ask("kim", "qa", f"@ai remember key{word} is in drawer 2")
        assert "audit" in confirmed, confirmed
        kim = dev.store.user_by_name("kim")
        assert kim is not None
        dev.faults.freeze_sockets(True)
        dev.posts.patch(kim, edited["id"], {"message": f"@ai remember audit{word} is on Tuesday"})
        dev.posts.delete(kim, deleted["id"])  # a root: its thread (the confirmation) goes with it
        await dev.restart(lose_replay=True)
        dev.faults.freeze_sockets(False)
        [note] = await dev.wait_for_posts(
            lambda p: p["user_id"] == dev.seed.bot.id and "source message was deleted" in p["message"],
            timeout=30,
        )
        assert f"key{word}" in note["message"] and not note["root_id"], note
        await dev.wait_for_posts(
            lambda p: p["user_id"] == dev.seed.bot.id and "Tuesday" in p["message"], timeout=30
        )
        _, found = await bot.ask("kim", "qa", f"@ai search audit{word}")
        assert f"audit{word} is on Tuesday" in found and "is on Monday" not in found, found
        _, gone = await bot.ask("kim", "qa", f"@ai search key{word} drawer")
        assert "drawer 2" not in gone, gone


async def test_half_open_socket_is_noticed_by_the_watchdog(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    silence = 30.0 if SOAK else 3.0
    env = FAST | {
        "MCHAT_MATTERMOST_WS_SILENCE_TIMEOUT": str(silence),
        "MCHAT_MATTERMOST_WS_PING_INTERVAL": "1",
    }
    bot = DaemonProcess(dev, llm, tmp_path, env)
    await bot.start()

    def events() -> list[str]:
        lines = bot.log_tail(500_000).splitlines()
        return [json.loads(line).get("event", "") for line in lines if line.startswith("{")]

    for _ in range(100):  # the start's catch-up pass is over: it cannot be what brings the post
        if "caught_up" in events():
            break
        await asyncio.sleep(0.1)
    passes = events().count("caught_up")
    assert dev.faults.half_open_sockets() >= 1
    frozen_at = time.monotonic()
    post = await dev.user_post("kim", dev.seed.channels["qa"], f"@ai help {uuid.uuid4().hex[:6]}")
    # The event went to the silent socket and is lost there: the reconnect gets a fresh
    # connection (the old one still looks alive to the server), so the REST catch-up brings it.
    await bot.replies_to(post, timeout=silence + 30)
    assert time.monotonic() - frozen_at < silence + 5.0
    for _ in range(50):  # the pass logs once it has read every channel, after the reply may be out
        if events().count("caught_up") > passes:
            break
        await asyncio.sleep(0.1)
    seen = events()
    assert "gateway.silent_socket" in seen and "gateway.gap" in seen, seen
    assert "gateway.resumed" not in seen, "the server still counts the old connection: no resume"
    assert "caught_up" in seen, "the REST resync ran"
    assert await bot.stop() == 0


async def test_llm_timeouts_give_a_failure_reply_and_the_daemon_recovers(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    bot = DaemonProcess(dev, llm, tmp_path, {"MCHAT_LLM_TIMEOUT": "1.5"})
    await bot.start()
    llm.delay(5.0)  # beyond llm.timeout
    try:
        _, reply = await bot.ask("kim", "qa", "@ai 오늘 라인 가동률은?", timeout=90)
    finally:
        llm.delay(0.0)
    assert "죄송" in reply
    _, later = await bot.ask("kim", "qa", "@ai 내일 일정은?")
    assert later and "죄송" not in later
    assert await bot.stop() == 0


async def test_reply_that_landed_before_a_crash_is_not_posted_again(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    """Beyond the server's 30 s pending_post_id window only the bot's own thread check can help."""
    dev.posts.pending_ttl = 0.01  # the server forgets pending_post_ids at once
    bot = DaemonProcess(dev, llm, tmp_path, FAST)
    await bot.start()
    dev.posts.bot_reply_delay = 5.0  # replies land, but the bot hears the 201 only after 5 s
    posts = await post_mentions(dev, 6, tag=uuid.uuid4().hex[:4])
    bot_id = dev.seed.bot.id
    asked = {p["id"] for p in posts}
    await dev.wait_for_posts(
        lambda p: p.get("user_id") == bot_id and p.get("props", {}).get("mchat_reply_to") in asked,
        count=len(posts),
        timeout=30,
    )
    bot.kill()  # after the replies landed, before the bot could write its sent-log
    assert bot.proc is not None
    await bot.proc.wait()
    dev.posts.bot_reply_delay = 0.0
    await asyncio.sleep(0.1)
    await bot.start(wait_ready=False)
    await bot.wait_ready()
    await wait_all_answered(bot, posts, timeout=30)
    await asyncio.sleep(1.0)
    assert_exactly_once(bot, posts)
    assert await bot.stop() == 0


async def test_sigterm_finishes_in_flight_replies_and_keeps_the_rest(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    bot = DaemonProcess(dev, llm, tmp_path, {"MCHAT_BOT_WORKERS": "1", "MCHAT_BOT_SHUTDOWN_GRACE": "6"})
    await bot.start()
    llm.delay(2.0)
    qa = dev.seed.channels["qa"]
    posts = [await dev.user_post("kim", qa, f"@ai 질문 {uuid.uuid4().hex[:6]} 일정은?") for _ in range(3)]
    await asyncio.sleep(0.8)  # the first question is now with the (slow) LLM
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(bot.proc.wait(), timeout=15) == 0, bot.log_tail()
    lost, _ = reply_counts(bot, posts)
    assert posts[0]["id"] not in lost, "the in-flight reply was not finished within the grace period"
    assert lost, "SIGTERM must stop intake: the queued questions wait for the next start"
    llm.delay(0.0)
    await bot.start(wait_ready=False)
    await wait_all_answered(bot, posts, timeout=60)
    assert_exactly_once(bot, posts)
    assert await bot.stop() == 0
