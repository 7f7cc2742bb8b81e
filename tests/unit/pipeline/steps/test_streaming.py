"""Streaming, feedback and attachments pieces against the dev server (no daemon): 429 backoff, the
token-bucket etiquette of feedback, crash recovery of a streamed part, chunking, settings."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mchat_bot.config import ConfigError, load_settings
from mchat_bot.devserver import DevServer
from mchat_bot.mattermost.rest import Priority, RestClient
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.router import Ignore
from mchat_bot.pipeline.steps.attachments import chunk_text, decode
from mchat_bot.pipeline.steps.feedback import Feedback
from mchat_bot.pipeline.steps.streaming import MARKER, MAX_INTERVAL, Streams, StreamSession
from mchat_bot.pipeline.turn import Turn
from mchat_bot.storage import SqliteStorage, Storage
from tests.support.chat import FakeChat
from tests.support.daemon import message_in_qa


@pytest_asyncio.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer() as server:
        yield server


@pytest_asyncio.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with SqliteStorage(tmp_path / "s.sqlite3") as st:
        yield st


def clients(dev: DevServer) -> tuple[RestClient, RestClient]:
    main = RestClient(dev.url, dev.seed.bot.token, rate_per_sec=50)
    return main, main.variant(tries=1, timeout=5, priority=Priority.EDIT)


def writer_for(main: RestClient, inbox: Inbox) -> ReplyWriter:
    return ReplyWriter(main, inbox, edit_sent_parts=True)


async def final_send(writer: ReplyWriter, msg: IncomingMessage, session: StreamSession, text: str) -> None:
    """What the worker does once the handler returned: deliver the whole answer, the stream known."""
    turn = Turn(msg, Ignore("not routed here"), reply=Reply(text, Outcome.ANSWERED), stream=session)
    await writer.deliver(turn)


async def write_slowly(session_feed: object, text: str, seconds: float) -> None:
    words = text.split(" ")
    for i in range(1, len(words) + 1):
        session_feed(" ".join(words[:i]))  # type: ignore[operator]
        await asyncio.sleep(seconds / len(words))


async def stream_under_a_server_limit(
    dev: DevServer, storage: Storage, *, surprise: bool
) -> tuple[StreamSession, dict[str, Any], str]:
    """Stream a 300-word answer over 3 s while the server limits to 3/s (burst 2); with ``surprise``,
    the stream's first post also meets a 429 its headers did not foretell. Then the final send."""
    main, quick = clients(dev)
    writer = writer_for(main, Inbox(storage))
    streams = Streams(quick, writer, interval=0.2, first_post_after=0.0)
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@ai 긴 답변 부탁")
    msg = message_in_qa(post, dev)
    answer = " ".join(f"w{i}" for i in range(300))
    try:
        dev.faults.rate_limit(per_sec=3, burst=2)
        if surprise:
            dev.faults.fail_posts(1, 429)
        session = streams.open(msg)
        await write_slowly(session.feed, answer, 3.0)
        await session.stop()
        dev.faults.rate_limit(False)
        await final_send(writer, msg, session, answer)
    finally:
        dev.faults.fail_posts(0)
        dev.faults.rate_limit(False)
        await main.aclose()
    return session, post, answer


def the_reply(dev: DevServer, post: dict[str, Any]) -> dict[str, Any]:
    replies = [p for p in dev.posts_by(dev.seed.bot.id) if p["props"].get("mchat_reply_to") == post["id"]]
    assert len(replies) == 1
    return replies[0]


async def test_streaming_paces_its_edits_to_the_servers_limit_and_meets_no_429(
    dev: DevServer, storage: Storage
) -> None:
    session, post, answer = await stream_under_a_server_limit(dev, storage, surprise=False)
    assert session.backoffs == 0, "the rate headers were followed: no 429 was met"
    reply = the_reply(dev, post)
    assert reply["message"] == answer
    stamps = dev.posts.edit_timestamps.get(reply["id"], [])
    assert len(stamps) <= 3 * 3 + 2  # what 3 s at 3/s with a burst of 2 allow, the final edit included


async def test_streaming_backs_off_on_429_and_still_ends_complete(dev: DevServer, storage: Storage) -> None:
    """A 429 the pacer could not foresee (e.g. another client on our address spent the budget)."""
    session, post, answer = await stream_under_a_server_limit(dev, storage, surprise=True)
    assert session.backoffs >= 1, "a 429 was met and backed off from"
    assert session.interval > 0.2
    reply = the_reply(dev, post)
    assert reply["message"] == answer
    # after the 429 the budget is empty: the stream may wait it out to the end (then no edits)
    stamps = dev.posts.edit_timestamps.get(reply["id"], [])
    assert all(b - a >= 0.2 - 0.01 for a, b in itertools.pairwise(stamps))


async def test_a_streamed_part_is_edited_not_doubled_after_a_restart(
    dev: DevServer, storage: Storage
) -> None:
    """The process died mid-stream: the next attempt finds part 0 in the sent-log and edits it."""
    main, quick = clients(dev)
    inbox = Inbox(storage)
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@ai 질문")
    msg = message_in_qa(post, dev)
    try:
        first = Streams(quick, writer_for(main, inbox), interval=0.1, first_post_after=0.0)
        session = first.open(msg)
        session.feed("앞부분만 쓰고")
        await asyncio.sleep(0.5)
        session.cancel()  # the crash
        assert len(await inbox.sent_parts(post["id"])) == 1
        writer = writer_for(main, inbox)
        again = Streams(quick, writer, interval=0.1, first_post_after=0.0)
        session = again.open(msg)
        session.feed("처음부터 다시 쓴 답")
        await asyncio.sleep(0.5)
        await session.stop()
        await final_send(writer, msg, session, "처음부터 다시 쓴 답, 끝.")
    finally:
        await main.aclose()
        await quick.aclose()
    replies = [p for p in dev.posts_by(dev.seed.bot.id) if p["props"].get("mchat_reply_to") == post["id"]]
    assert [r["message"] for r in replies] == ["처음부터 다시 쓴 답, 끝."]


async def test_a_short_answer_is_posted_once_without_edits(dev: DevServer, storage: Storage) -> None:
    main, quick = clients(dev)
    inbox = Inbox(storage)
    writer = writer_for(main, inbox)
    streams = Streams(quick, writer, interval=0.5, first_post_after=1.0)
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@ai 짧은 질문")
    msg = message_in_qa(post, dev)
    try:
        session = streams.open(msg)
        session.feed("짧은 답")
        await session.stop()
        await final_send(writer, msg, session, "짧은 답")
    finally:
        await main.aclose()
        await quick.aclose()
    replies = [p for p in dev.posts_by(dev.seed.bot.id) if p["props"].get("mchat_reply_to") == post["id"]]
    assert [r["message"] for r in replies] == ["짧은 답"]
    assert replies[0]["id"] not in dev.posts.edit_timestamps
    assert MARKER not in replies[0]["message"]


async def test_feedback_skips_when_the_reply_budget_is_short(dev: DevServer) -> None:
    main, _ = clients(dev)
    quick = main.variant(tries=1, timeout=5, priority=Priority.COURTESY)
    fb = Feedback(quick, dev.seed.bot.id, typing=False, reactions=True, delay=0)
    post = await dev.user_post("kim", dev.seed.channels["qa"], "@ai 질문")
    msg = message_in_qa(post, dev)
    try:
        for _ in range(40):  # the replies' client spends the budget (a cap of 50/s) below a third
            await main.limiter.acquire()
        fb.start(msg)
        await asyncio.sleep(0.1)
        assert fb.skipped >= 1
        assert not dev.store.reactions.get(post["id"])  # skipped, not queued ahead of replies
        await asyncio.sleep(0.5)  # the budget refills
        fb.finish(msg, "done")
        await fb.aclose(grace=5.0)
    finally:
        await main.aclose()
        await quick.aclose()
    assert {r.emoji_name for r in dev.store.reactions.get(post["id"], [])} == {"white_check_mark"}


def test_chunks_cut_at_paragraphs_and_stay_under_the_size() -> None:
    text = "\n\n".join(f"문단 {i}. " + "내용입니다. " * 40 for i in range(10))
    pieces = chunk_text(text, 500)
    assert all(len(p) <= 500 for p in pieces)
    assert "".join(pieces).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")
    assert chunk_text("  ", 500) == []
    assert decode("한글".encode("cp949")) == "한글"
    assert decode(b"\x89PNG\r\n\x00\x00") is None


def test_ux_settings_are_validated(tmp_path: Path) -> None:
    env = {"MCHAT_MATTERMOST_URL": "http://127.0.0.1:1", "MCHAT_MATTERMOST_TOKEN": "t"}
    s = load_settings(None, env | {"MCHAT_MATTERMOST_AUTO_JOIN": "mchat/qa, mchat/town-square"})
    assert s.mattermost.auto_join == ["mchat/qa", "mchat/town-square"]
    assert s.ux.stream and s.ux.typing and s.ux.reactions and s.ux.greet
    with pytest.raises(ConfigError, match=r"mattermost\.auto_join"):
        load_settings(None, env | {"MCHAT_MATTERMOST_AUTO_JOIN": "qa"})
    with pytest.raises(ConfigError, match=r"ux\.stream_edit_interval"):
        load_settings(None, env | {"MCHAT_UX_STREAM_EDIT_INTERVAL": "0"})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mattermost]\nurl = "http://127.0.0.1:1"\n[ux]\ntyping = false\nfoo = 1\n')
    with pytest.raises(ConfigError, match=r"ux\.foo"):
        load_settings(cfg, {"MCHAT_MATTERMOST_TOKEN": "t"})


async def test_edits_stretch_their_interval_as_the_rate_budget_shrinks(storage: Storage) -> None:
    chat = FakeChat()
    chat.user_post("q1")
    streams = Streams(chat, ReplyWriter(chat, Inbox(storage)), interval=0.5)  # type: ignore[arg-type]
    msg = IncomingMessage("q1", "c1", "O", "qa", "t1", "u1", "kim", "@ai q")
    session = streams.open(msg)
    try:
        paces = {}
        for budget in (1.0, 0.5, 0.25, 0.0):
            chat.limiter.left = budget
            paces[budget] = session.pace()
    finally:
        session.cancel()
    assert paces == {1.0: 0.5, 0.5: 1.0, 0.25: 2.0, 0.0: MAX_INTERVAL}
