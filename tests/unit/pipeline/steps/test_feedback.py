"""Delayed feedback: typing and 👀 only for answers that take longer than ``ux.feedback_delay``.

The real daemon, the dev server and the fake LLM on 127.0.0.1; what the asker sees is read from a
user's WebSocket (typing and reaction events) and the dev server's reactions, and the bot's REST
calls are counted where the dev server answers them. The retry and shutdown cases drive Feedback
directly against the dev server.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import websockets
from aiohttp import web

from mchat_bot.config import ConfigError, load_settings
from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline.steps.feedback import Feedback
from tests.support.daemon import DaemonProcess, free_port, message_in_qa, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

DELAY = 1.0  # the default of ux.feedback_delay, which the daemon here runs with
TYPING_INTERVAL = 0.3
_ID = re.compile(r"/[a-z0-9]{26}")


@dataclass
class Seen:
    at: float
    event: str  # typing, reaction_added, reaction_removed
    channel_id: str
    post_id: str = ""
    emoji: str = ""
    user_id: str = ""


class CountingDev(DevServer):
    """The dev server, also noting every REST call the bot makes (method, path with ids masked)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, str, str]] = []

    def build_app(self) -> web.Application:
        app = super().build_app()

        async def note(request: web.Request, response: web.StreamResponse) -> None:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if token == self.seed.bot.token and request.path.startswith("/api/v4/"):
                self.calls.append((time.monotonic(), request.method, _ID.sub("/:id", request.path)))

        app.on_response_prepare.append(note)
        return app

    def bot_calls(self, since: float) -> list[str]:
        return [f"{method} {path}" for at, method, path in self.calls if at >= since]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dev() -> AsyncIterator[CountingDev]:
    server = CountingDev()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def watcher(dev: CountingDev) -> AsyncIterator[list[Seen]]:
    """What kim's Mattermost client receives: typing and reaction events, with arrival times."""
    seen: list[Seen] = []
    ws = await websockets.connect(
        dev.url.replace("http", "ws") + "/api/v4/websocket",
        additional_headers={"Authorization": f"Bearer {dev.seed.users['kim'].token}"},
    )

    async def listen() -> None:
        async for raw in ws:
            frame = json.loads(raw)
            event, data = frame.get("event"), frame.get("data") or {}
            channel = (frame.get("broadcast") or {}).get("channel_id", "")
            if event == "typing":
                seen.append(Seen(time.monotonic(), event, channel, user_id=data.get("user_id", "")))
            elif event in ("reaction_added", "reaction_removed"):
                r = json.loads(data["reaction"])
                seen.append(
                    Seen(time.monotonic(), event, channel, r["post_id"], r["emoji_name"], r["user_id"])
                )

    task = asyncio.create_task(listen())
    yield seen
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ws.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: CountingDev, llm: FakeLLM, watcher: list[Seen], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    env = {  # ux.feedback_delay left at its default
        "MCHAT_UX_TYPING_INTERVAL": str(TYPING_INTERVAL),
        "MCHAT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
    }
    daemon = DaemonProcess(dev, llm, tmp_path_factory.mktemp("feedback-delay"), env)
    await daemon.start()
    yield daemon
    code = await daemon.stop()
    assert code == 0, daemon.log_tail()


async def until(check: Any, timeout: float = 20.0, every: float = 0.02) -> Any:
    end = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(every)
    return value


def reactions(dev: DevServer, post_id: str) -> set[str]:
    return {r.emoji_name for r in dev.store.reactions.get(post_id, []) if r.user_id == dev.seed.bot.id}


def bot_typing(dev: DevServer, seen: list[Seen], channel_id: str, since: float) -> list[Seen]:
    return [s for s in seen if s.event == "typing" and s.channel_id == channel_id and s.at >= since]


def seen_at(seen: list[Seen], post_id: str, emoji: str) -> float | None:
    return next((s.at for s in seen if s.post_id == post_id and s.emoji == emoji), None)


def on_post(seen: list[Seen], post_id: str) -> list[tuple[str, str]]:
    return [(s.event, s.emoji) for s in seen if s.post_id == post_id]


# --- end to end -------------------------------------------------------------------------------


async def test_a_fast_answer_gets_no_reaction_at_all(
    bot: DaemonProcess, dev: CountingDev, llm: FakeLLM, watcher: list[Seen]
) -> None:
    await bot.ask("kim", "qa", f"@ai warm-up {tag()}")  # first-answer costs (imports) out of the way
    await asyncio.sleep(DELAY + 0.5)
    qa = dev.seed.channels["qa"]
    since = time.monotonic()
    post, reply = await bot.ask("kim", "qa", f"@ai 오늘 회의 몇 시야? {tag()}", timeout=10)
    assert reply and time.monotonic() - since < DELAY * 0.8, "the premise: a fast answer"
    await asyncio.sleep(DELAY + 0.5)  # a 👀, ✅ or typing that was merely late would show by now
    assert reactions(dev, post["id"]) == set()
    assert on_post(watcher, post["id"]) == [], "the reply is the signal: no 👀, no ✅"
    assert not bot_typing(dev, watcher, qa, since), "no typing for a fast answer"
    calls = dev.bot_calls(since)
    assert calls == ["POST /api/v4/posts"], calls  # the reply alone: 0 feedback calls, not 4


async def test_a_slow_answer_shows_typing_and_eyes_then_a_check_mark(
    bot: DaemonProcess, dev: CountingDev, llm: FakeLLM, watcher: list[Seen]
) -> None:
    qa = dev.seed.channels["qa"]
    llm.delay(DELAY + 1.5)
    try:
        since = time.monotonic()
        post = await dev.user_post("kim", qa, f"@ai 내일 일정 알려줘 {tag()}")
        eyes_at = await until(lambda: seen_at(watcher, post["id"], "eyes"), timeout=10)
        assert eyes_at - since >= DELAY - 0.1, "👀 waits for the feedback delay"
        await until(lambda: bot_typing(dev, watcher, qa, since), timeout=5)
        assert not [p for p in dev.posts_by(dev.seed.bot.id) if p["root_id"] == post["id"]], (
            "👀 before the answer"
        )
        await bot.replies_to(post, timeout=30)
    finally:
        llm.delay(0)
    await until(lambda: reactions(dev, post["id"]) == {"white_check_mark"}, timeout=10)
    done_at = await until(lambda: seen_at(watcher, post["id"], "white_check_mark"), timeout=5)
    assert on_post(watcher, post["id"]) == [
        ("reaction_added", "eyes"),
        ("reaction_removed", "eyes"),
        ("reaction_added", "white_check_mark"),
    ]
    typing = bot_typing(dev, watcher, qa, since)
    assert len(typing) >= 3, "typing is repeated while the bot works"
    assert all(t.at >= eyes_at - 0.5 for t in typing), "typing also waits for the delay"
    await asyncio.sleep(TYPING_INTERVAL * 3)
    assert not bot_typing(dev, watcher, qa, done_at + TYPING_INTERVAL), "typing stops with the answer"


# --- Feedback against the dev server: retries and shutdown -----------------------------------
# (plain posts without a mention, so that the daemon above leaves them alone)


def feedback_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").startswith(f"{Feedback.__name__}.")
        or t.get_name().startswith("typing-")
    ]


async def test_work_done_before_the_delay_leaves_no_timer_or_task(dev: CountingDev) -> None:
    quick = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5)
    fb = Feedback(quick, dev.seed.bot.id, delay=0.3, typing_interval=0.1)
    posts = [await dev.user_post("kim", dev.seed.channels["qa"], f"q{i} {tag()}") for i in range(3)]
    msgs = [message_in_qa(p, dev) for p in posts]
    try:
        for m in msgs:
            fb.start(m)
        await asyncio.sleep(0.1)
        fb.finish(msgs[0], "done")  # answered
        fb.finish(msgs[1], "")  # nothing to post
        fb.finish(msgs[2], None)  # failed before any feedback: retried later
        await asyncio.sleep(0.5)  # past the delay: nothing may appear
        assert not fb._sessions and not fb._left
        assert not feedback_tasks()
    finally:
        await fb.aclose()
        await quick.aclose()
    assert [reactions(dev, p["id"]) for p in posts] == [set(), set(), set()]


async def test_done_on_fast_gives_a_fast_answer_its_check_mark(dev: CountingDev) -> None:
    quick = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5)
    fb = Feedback(quick, dev.seed.bot.id, typing=False, delay=0.3, done_on_fast=True)
    post = await dev.user_post("kim", dev.seed.channels["qa"], f"빠른 답 {tag()}")
    msg = message_in_qa(post, dev)
    try:
        fb.start(msg)
        fb.finish(msg, "done")
        await until(lambda: reactions(dev, post["id"]) == {"white_check_mark"}, timeout=5)
    finally:
        await fb.aclose()
        await quick.aclose()


async def test_a_fast_retry_still_takes_the_first_attempts_eyes_off(dev: CountingDev) -> None:
    quick = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5)
    fb = Feedback(quick, dev.seed.bot.id, typing=False, delay=0.2)
    post = await dev.user_post("kim", dev.seed.channels["qa"], f"재시도 {tag()}")
    msg = message_in_qa(post, dev)
    try:
        fb.start(msg)
        await until(lambda: reactions(dev, post["id"]) == {"eyes"}, timeout=5)  # a slow first attempt
        fb.finish(msg, None)  # its send failed: a retry follows
        fb.start(msg)  # the retry is fast
        fb.finish(msg, "done")
        await until(lambda: reactions(dev, post["id"]) == {"white_check_mark"}, timeout=5)
    finally:
        await fb.aclose()
        await quick.aclose()


async def test_aclose_cancels_pending_and_running_feedback(dev: CountingDev) -> None:
    quick = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5)
    fb = Feedback(quick, dev.seed.bot.id, delay=0.3, typing_interval=0.1)
    waiting = await dev.user_post("kim", dev.seed.channels["qa"], f"대기 {tag()}")
    working = await dev.user_post("kim", dev.seed.channels["qa"], f"작업 {tag()}")
    try:
        fb.start(message_in_qa(working, dev))
        await asyncio.sleep(0.4)  # past the delay: typing and 👀 running
        fb.start(message_in_qa(waiting, dev))  # still within its delay
        await fb.aclose()
        assert not feedback_tasks()
        await asyncio.sleep(0.5)  # the cancelled delayed start never fires
    finally:
        await quick.aclose()
    assert reactions(dev, waiting["id"]) == set()
    assert reactions(dev, working["id"]) == {"eyes"}  # aclose does not end the work; a retry takes it off


async def test_feedback_delay_setting(tmp_path: Path) -> None:
    env = {"MCHAT_MATTERMOST_URL": "http://127.0.0.1:1", "MCHAT_MATTERMOST_TOKEN": "t"}
    assert load_settings(None, env).ux.feedback_delay == DELAY
    assert load_settings(None, env | {"MCHAT_UX_FEEDBACK_DELAY": "0"}).ux.feedback_delay == 0
    for bad in ("-0.5", "nan"):
        with pytest.raises(ConfigError, match=r"ux\.feedback_delay"):
            load_settings(None, env | {"MCHAT_UX_FEEDBACK_DELAY": bad})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mattermost]\nurl = "http://127.0.0.1:1"\n[ux]\nfeedback_delay = 2.5\n')
    assert math.isclose(load_settings(cfg, {"MCHAT_MATTERMOST_TOKEN": "t"}).ux.feedback_delay, 2.5)
