"""The worker pool and reply writer: every answer posted once, in its thread, in order.

The Mattermost side is an in-file recording server (the REST client has its own tests, and the
end-to-end tests use the devserver); the inbox is the real one on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.pipeline.turn import Chain, Turn
from mchat_bot.pipeline.workers import WorkerPool
from mchat_bot.storage import SqliteStorage, StorageUnavailable
from tests.support.factories import message


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Poster:
    """Records posts like the server would; ``fail`` holds statuses for the next calls."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail: list[int] = []
        self.calls = 0

    async def create_post(
        self,
        channel_id: str,
        message: str,
        *,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        pending_post_id: str | None = None,
        file_ids: Any = None,
    ) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise HttpError(self.fail.pop(0))
        post = {
            "id": f"r{len(self.posts)}",
            "channel_id": channel_id,
            "message": message,
            "root_id": root_id,
            "props": props or {},
            "pending_post_id": pending_post_id,
        }
        self.posts.append(post)
        return post

    async def get_thread(self, post_id: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"posts": {p["id"]: p for p in self.posts if post_id in (p["id"], p["root_id"])}}


def msg(post_id: str, *, root: str = "", at: int = 0, text: str = "@ai hello") -> IncomingMessage:
    return message(text, post_id=post_id, root=root, at=at, name="kim", channel_name="town-square")


async def until(cond: Callable[[], Any], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await _value(cond()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _value(v: Any) -> Any:
    return await v if asyncio.iscoroutine(v) else v


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    async with SqliteStorage(tmp_path / "bot.sqlite3") as st:
        yield Inbox(st)


BOT = BotIdentity(user_id="bot", username="ai")


def pool_for(inbox: Inbox, poster: Poster, handle: Any, **kw: Any) -> WorkerPool:
    """A pool whose chain has no steps: ``handle(msg) -> str`` answers every message."""
    writer = ReplyWriter(poster, inbox, limit=kw.pop("limit", 16383))  # type: ignore[arg-type]

    async def handler(turn: Turn) -> Reply:
        return Reply(await handle(turn.msg), Outcome.ANSWERED)

    opts: dict[str, Any] = {"workers": 4, "poll_interval": 0.05, "retry_base": 0.02}
    opts.update(kw)
    return WorkerPool(inbox, Chain([], handler), writer, BOT, **opts)


async def echo(m: IncomingMessage) -> str:
    return f"answer to {m.post_id}"


async def test_reply_is_posted_in_thread_with_dedupe_keys_then_acked(inbox: Inbox) -> None:
    poster = Poster()
    async with pool_for(inbox, poster, echo):
        await inbox.put(msg("p1"))
        await inbox.put(msg("p2", root="p1", at=1))
        await until(lambda: len(poster.posts) == 2)
        await until(lambda: _depth_zero(inbox))
    first, second = poster.posts
    assert first["message"] == "answer to p1" and first["root_id"] == "p1"
    assert second["root_id"] == "p1"  # a reply to a reply goes to the thread root
    assert first["props"] == {"mchat_reply_to": "p1", "mchat_part": 0}
    assert first["pending_post_id"] == "mchat-p1-0"
    assert await inbox.state("p1") == "done"
    assert await inbox.sent_parts("p1") == {0: "r0"}


async def _depth_zero(inbox: Inbox) -> bool:
    return await inbox.depth() == 0


async def test_long_reply_is_split_into_parts(inbox: Inbox) -> None:
    poster = Poster()

    async def long(m: IncomingMessage) -> str:
        return "\n\n".join(f"paragraph {i} " + "x" * 60 for i in range(10))

    async with pool_for(inbox, poster, long, limit=200):
        await inbox.put(msg("p1"))
        await until(lambda: _depth_zero(inbox))
    assert len(poster.posts) > 3
    assert all(len(p["message"]) <= 200 for p in poster.posts)
    assert [p["props"]["mchat_part"] for p in poster.posts] == list(range(len(poster.posts)))


async def test_threads_run_concurrently_but_each_thread_in_order(inbox: Inbox) -> None:
    poster = Poster()
    running = 0
    peak = 0

    async def slow(m: IncomingMessage) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return m.post_id

    for t in range(4):
        for k in range(5):
            await inbox.put(msg(f"t{t}-{k}", root=f"t{t}-0" if k else "", at=k * 10 + t))
    started = time.monotonic()
    async with pool_for(inbox, poster, slow, workers=4):
        await until(lambda: len(poster.posts) == 20)
    elapsed = time.monotonic() - started
    assert peak == 4  # four threads at once
    assert elapsed < 20 * 0.05  # faster than one at a time
    for t in range(4):
        order = [p["message"] for p in poster.posts if p["message"].startswith(f"t{t}-")]
        assert order == [f"t{t}-{k}" for k in range(5)]


async def test_transient_send_failures_are_retried_without_asking_again(inbox: Inbox) -> None:
    poster = Poster()
    poster.fail = [503, 429]
    handled = 0

    async def once(m: IncomingMessage) -> str:
        nonlocal handled
        handled += 1
        return f"answer {handled}"

    async with pool_for(inbox, poster, once) as pool:
        await inbox.put(msg("p1"))
        await until(lambda: _depth_zero(inbox))
    assert [p["message"] for p in poster.posts] == ["answer 1"]
    assert handled == 1
    assert pool.stats.retried == 2 and pool.stats.sent == 1


async def test_a_part_already_sent_is_never_sent_again(inbox: Inbox) -> None:
    poster = Poster()

    async def two_parts(m: IncomingMessage) -> str:
        return "A" * 150 + "\n\n" + "B" * 150

    class FailSecond(Poster):
        async def create_post(self, channel_id: str, message: str, **kw: Any) -> dict[str, Any]:
            if message.startswith("B") and self.calls == 1:
                self.calls += 1
                raise HttpError(502)
            return await super().create_post(channel_id, message, **kw)

    poster = FailSecond()
    async with pool_for(inbox, poster, two_parts, limit=200):
        await inbox.put(msg("p1"))
        await until(lambda: _depth_zero(inbox))
    assert [p["message"][0] for p in poster.posts] == ["A", "B"]


async def test_restart_after_crash_sends_only_missing_parts(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    reply = "A" * 150 + "\n\n" + "B" * 150
    async with SqliteStorage(path) as st:  # the first process posted part 0 and died
        inbox = Inbox(st)
        await inbox.put(msg("p1"))
        await inbox.claim(1)
        await inbox.save_reply("p1", reply)
        await inbox.record_sent("p1", 0, "old-0")
    poster = Poster()

    async def must_not_run(m: IncomingMessage) -> str:
        raise AssertionError("the saved reply must be reused")

    async with SqliteStorage(path) as st:
        inbox = Inbox(st)
        assert await inbox.recover() == 1
        async with pool_for(inbox, poster, must_not_run, limit=200):
            await until(lambda: _depth_zero(inbox))
        assert [p["message"][0] for p in poster.posts] == ["B"]
        assert await inbox.sent_parts("p1") == {0: "old-0", 1: "r0"}


async def test_gives_up_after_max_attempts_and_tells_the_user(inbox: Inbox) -> None:
    poster = Poster()
    poster.fail = [500, 500, 500]
    async with pool_for(inbox, poster, echo, max_attempts=3) as pool:
        await inbox.put(msg("p1", text="@ai 불량률?"))
        await until(lambda: _depth_zero(inbox))
        await until(lambda: len(poster.posts) == 1)
    assert await inbox.state("p1") == "failed"
    assert pool.stats.failed == 1
    [notice] = poster.posts
    assert "답변을 보내지 못했습니다" in notice["message"]
    assert notice["root_id"] == "p1" and notice["pending_post_id"] == "mchat-p1-fail"


async def test_permanent_error_is_not_retried(inbox: Inbox) -> None:
    poster = Poster()
    poster.fail = [403, 403]
    async with pool_for(inbox, poster, echo):
        await inbox.put(msg("p1"))
        await until(lambda: _depth_zero(inbox))
        await until(lambda: poster.calls == 2)  # one send + one best-effort notice
    assert await inbox.state("p1") == "failed"
    assert poster.posts == []


async def test_handler_crash_fails_the_item_with_a_notice(inbox: Inbox) -> None:
    poster = Poster()

    async def broken(m: IncomingMessage) -> str:
        raise RuntimeError("bug")

    async with pool_for(inbox, poster, broken):
        await inbox.put(msg("p1"))
        await inbox.put(msg("p2", root="p1", at=1))
        await until(lambda: len(poster.posts) == 2)
    assert all("Sorry" in p["message"] for p in poster.posts)
    assert await inbox.state("p2") == "failed"


async def test_put_wakes_an_idle_pool_at_once(inbox: Inbox) -> None:
    poster = Poster()
    async with pool_for(inbox, poster, echo, poll_interval=5.0):
        await asyncio.sleep(0.05)  # workers are idle, waiting up to 5 s
        started = time.monotonic()
        await inbox.put(msg("p1"))
        await until(lambda: len(poster.posts) == 1, within=2.0)
        latency = time.monotonic() - started
    assert latency < 0.5


async def test_stop_lets_short_work_finish_and_leaves_long_work_pending(inbox: Inbox) -> None:
    poster = Poster()
    gate = asyncio.Event()

    async def handle(m: IncomingMessage) -> str:
        if m.post_id == "slow":
            await asyncio.sleep(30)
        else:
            gate.set()
            await asyncio.sleep(0.1)
        return m.post_id

    pool = pool_for(inbox, poster, handle)
    pool.start()
    await inbox.put(msg("slow", at=1))
    await inbox.put(msg("quick", root="other", at=2))
    await asyncio.wait_for(gate.wait(), 2)
    started = time.monotonic()
    await pool.stop(grace=0.5)
    assert time.monotonic() - started < 2.0
    assert [p["message"] for p in poster.posts] == ["quick"]
    assert await inbox.state("slow") == "pending"  # picked up again by the next start

    async def fast(m: IncomingMessage) -> str:
        return m.post_id

    async with pool_for(inbox, poster, fast):
        await until(lambda: _depth_zero(inbox))
    assert [p["message"] for p in poster.posts] == ["quick", "slow"]


async def test_empty_reply_is_acked_without_posting(inbox: Inbox) -> None:
    poster = Poster()

    async def nothing(m: IncomingMessage) -> str:
        return ""

    async with pool_for(inbox, poster, nothing):
        await inbox.put(msg("p1"))
        await until(lambda: _depth_zero(inbox))
    assert poster.posts == [] and await inbox.state("p1") == "done"


async def test_a_freed_worker_takes_the_next_item_at_once(inbox: Inbox) -> None:
    poster = Poster()
    for i in range(5):
        await inbox.put(msg(f"p{i}", at=i))  # five threads, one worker: one after the other
    started = time.monotonic()
    async with pool_for(inbox, poster, echo, workers=1, poll_interval=5.0):
        await until(lambda: len(poster.posts) == 5, within=3.0)
    assert time.monotonic() - started < 1.0  # no item waits for the 5 s poll
    assert [p["message"] for p in poster.posts] == [f"answer to p{i}" for i in range(5)]


async def test_pool_handles_each_item_once_never_two_of_a_thread_at_once(inbox: Inbox) -> None:
    poster = Poster()
    handled: list[str] = []
    busy: set[str] = set()
    overlaps: list[str] = []
    peak = 0

    async def handle(m: IncomingMessage) -> str:
        nonlocal peak
        if m.thread_root in busy:
            overlaps.append(m.post_id)
        busy.add(m.thread_root)
        peak = max(peak, len(busy))
        await asyncio.sleep(0.002)
        busy.discard(m.thread_root)
        handled.append(m.post_id)
        return m.post_id

    async with pool_for(inbox, poster, handle, workers=3):
        for i in range(120):
            await inbox.put(msg(f"p{i}", root=f"p{i % 8}" if i >= 8 else "", at=i))
        await until(lambda: _depth_zero(inbox), within=20.0)
    assert overlaps == []
    assert sorted(handled) == sorted(f"p{i}" for i in range(120))  # each once
    assert [p["message"] for p in poster.posts] == handled  # each answered once, in handling order
    assert peak == 3  # never more than ``workers`` at once, and all of them used
    for r in range(8):
        thread = [int(p[1:]) for p in handled if int(p[1:]) % 8 == r]
        assert thread == sorted(thread)


async def test_stop_gives_in_flight_work_its_grace_while_run_is_supervised(inbox: Inbox) -> None:
    poster = Poster()
    started = asyncio.Event()

    async def slowish(m: IncomingMessage) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return m.post_id

    pool = pool_for(inbox, poster, slowish, workers=1)
    runner = asyncio.create_task(pool.run())  # as the daemon's supervisor runs it
    await inbox.put(msg("p1"))
    await inbox.put(msg("p2", at=1))
    await asyncio.wait_for(started.wait(), 2)
    await pool.stop(grace=3.0)
    await asyncio.wait_for(runner, 2)
    assert [p["message"] for p in poster.posts] == ["p1"]  # finished within the grace
    assert await inbox.state("p1") == "done"
    assert await inbox.state("p2") == "pending"  # never started: left for the next start


async def test_a_storage_outage_mid_turn_puts_the_item_back_and_posts_once(tmp_path: Path) -> None:
    """The ack fails as a PostgreSQL restart would fail it: the item is released when the storage
    answers again, taken again, and the reply (already posted) is not posted a second time."""

    class Outage(SqliteStorage):
        down = 0  # the next writes that fail

        async def execute(self, sql: str, params: Any = ()) -> int:
            if self.down and sql.startswith("UPDATE inbox SET state = 'done'"):
                self.down -= 1
                raise StorageUnavailable("the database is restarting")
            return await super().execute(sql, params)

    async with Outage(tmp_path / "bot.sqlite3") as st:
        inbox = Inbox(st)
        st.down = 2
        poster = Poster()
        async with pool_for(inbox, poster, echo):
            await inbox.put(msg("p1"))
            await inbox.put(msg("p2", root="p1", at=1))  # the same thread: blocked while p1 is claimed
            await until(lambda: _depth_zero(inbox))
        assert [p["message"] for p in poster.posts] == ["answer to p1", "answer to p2"]
        assert await inbox.state("p1") == "done" and st.down == 0


async def test_an_item_that_its_daemons_die_with_is_given_up_not_retried_for_ever(inbox: Inbox) -> None:
    """Each start finds it claimed (the daemon died handling it): that counts an attempt, and after
    max_attempts the item fails with a notice instead of killing the next daemon too."""
    await inbox.put(msg("p1", text="@ai 이 질문이 데몬을 죽입니다"))
    for _ in range(3):  # three daemons died in the middle of it
        [item] = await inbox.claim(1)
        assert item.post_id == "p1"
        await inbox.recover()
    handled: list[str] = []

    async def handle(m: IncomingMessage) -> str:
        handled.append(m.post_id)
        return "never"

    poster = Poster()
    async with pool_for(inbox, poster, handle, max_attempts=3) as pool:
        await until(lambda: _depth_zero(inbox))
        await until(lambda: len(poster.posts) == 1)
    assert handled == [] and await inbox.state("p1") == "failed" and pool.stats.failed == 1
    assert poster.posts[0]["pending_post_id"] == "mchat-p1-fail"
