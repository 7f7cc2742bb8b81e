"""The user extras end to end: the real daemon process, the dev server and the fake LLM on 127.0.0.1.

Typing and reactions while working, streamed answers (edit throttle measured from the dev server's
edit timestamps), memories following edits and deletions, auto-join and greeting, attachments.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.pipeline.steps.streaming import MARKER
from tests.support.daemon import DaemonProcess, free_port, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 16383
EDIT_INTERVAL = 0.5
MAX_FILE = 4096


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: DevServer, llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    typing_calls: list[tuple[float, str]] = []
    original = dev.posts.typing

    def counting_typing(user: Any, channel_id: Any, parent_id: Any) -> None:
        typing_calls.append((time.monotonic(), str(channel_id)))
        original(user, channel_id, parent_id)

    dev.posts.typing = counting_typing  # type: ignore[method-assign]
    env = {
        "MCHAT_MATTERMOST_AUTO_JOIN": "mchat/no-bot",
        "MCHAT_UX_TYPING_INTERVAL": "0.3",
        "MCHAT_UX_FEEDBACK_DELAY": "0",  # 👀 and typing at once (delayed: test_ux_feedback_delay)
        "MCHAT_UX_STREAM_EDIT_INTERVAL": str(EDIT_INTERVAL),
        "MCHAT_UX_ATTACHMENT_MAX_BYTES": str(MAX_FILE),
        "MCHAT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
    }
    daemon = DaemonProcess(dev, llm, tmp_path_factory.mktemp("ux-daemon"), env)
    daemon.typing_calls = typing_calls  # type: ignore[attr-defined]
    await daemon.start()
    yield daemon
    code = await daemon.stop()
    assert code == 0, daemon.log_tail()


async def until(check: Any, timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(every)


def reactions(dev: DevServer, post_id: str) -> set[str]:
    return {r.emoji_name for r in dev.store.reactions.get(post_id, []) if r.user_id == dev.seed.bot.id}


def replies_of(dev: DevServer, post_id: str) -> list[dict[str, Any]]:
    bot_id = dev.seed.bot.id
    found = dev.posts.find(
        lambda p: p["user_id"] == bot_id and p.get("props", {}).get("mchat_reply_to") == post_id
    )
    return sorted(found, key=lambda p: p["props"].get("mchat_part", 0))


# --- while it works ---------------------------------------------------------------------------


async def test_eyes_and_typing_while_working_then_a_check_mark(
    bot: DaemonProcess, dev: DevServer, llm: FakeLLM
) -> None:
    qa = dev.seed.channels["qa"]
    llm.delay(2.0)
    try:
        post = await dev.user_post("kim", qa, f"@ai 오늘 회의 몇 시야? {tag()}")
        await until(lambda: "eyes" in reactions(dev, post["id"]), timeout=10)
        assert not replies_of(dev, post["id"])  # 👀 shows before the answer
        await bot.replies_to(post, timeout=30)
    finally:
        llm.delay(0)
    await until(lambda: reactions(dev, post["id"]) == {"white_check_mark"}, timeout=10)
    calls = [t for t, ch in bot.typing_calls if ch == qa]  # type: ignore[attr-defined]
    assert len(calls) >= 3, "typing is repeated while the bot works"


async def test_a_failed_answer_gets_a_warning(bot: DaemonProcess, dev: DevServer, llm: FakeLLM) -> None:
    llm.fail_next(100, status=500)
    try:
        post, reply = await bot.ask("lee", "qa", f"@ai 내일 일정 알려줘 {tag()}", timeout=60)
    finally:
        llm.fail_next(0)
        llm.reset()
    assert "죄송" in reply
    await until(lambda: reactions(dev, post["id"]) == {"warning"}, timeout=10)


# --- streaming --------------------------------------------------------------------------------


async def test_a_long_answer_streams_with_throttled_edits(
    bot: DaemonProcess, dev: DevServer, llm: FakeLLM
) -> None:
    marker = tag()
    await bot.ask("kim", "town-square", f"@ai remember 스트리밍 점검 메모 {marker}")
    answer = " ".join(f"단어{i}" for i in range(400)) + " 끝."
    llm.reply_with(answer)
    llm.stream_delay(0.01)  # about 4 s of writing
    try:
        post = await dev.user_post("kim", dev.seed.channels["town-square"], f"@ai 스트리밍 점검 {marker}")
        first = await until(lambda: next(iter(replies_of(dev, post["id"])), None), timeout=30)
        assert len(first["message"]) < len(answer), "the first post shows part of the answer"
        assert first["message"].endswith(MARKER), "a partial answer says it is still being written"
        final = await until(
            lambda: next((p for p in replies_of(dev, post["id"]) if "/pl/" in p["message"]), None), timeout=30
        )
    finally:
        llm.reset()
    assert final["id"] == first["id"]
    assert final["message"].startswith(answer)  # the complete answer, then its sources
    assert MARKER not in final["message"]
    assert final["props"]["mchat_reply_to"] == post["id"] and final["props"]["mchat_part"] == 0
    assert len(replies_of(dev, post["id"])) == 1
    stamps = dev.posts.edit_timestamps[first["id"]]
    assert len(stamps) >= 3, "the answer grew in several edits"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= EDIT_INTERVAL - 0.01, gaps


async def test_a_streamed_answer_continues_into_further_posts(
    bot: DaemonProcess, dev: DevServer, llm: FakeLLM
) -> None:
    body = "\n".join(f"line {i:05d} " + "가" * 30 for i in range(1000))
    long_answer = f"Here is the report:\n```\n{body}\n```\nend of report"
    llm.reply_with(long_answer)
    llm.stream_delay(0.001)
    seen_partial = False
    try:
        post = await dev.user_post("kim", dev.seed.channels["qa"], f"@ai the long report {tag()}")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            parts = replies_of(dev, post["id"])
            if any(p["message"].endswith(MARKER) for p in parts):
                seen_partial = True
            if len(parts) == 3 and not any(p["message"].endswith(MARKER) for p in parts):
                if "end of report" in parts[-1]["message"]:
                    break
            await asyncio.sleep(0.05)
    finally:
        llm.reset()
    parts = replies_of(dev, post["id"])
    assert seen_partial, "parts appeared while the model was still writing"
    assert [p["props"]["mchat_part"] for p in parts] == [0, 1, 2]  # each part exactly once
    assert all(len(p["message"]) <= LIMIT for p in parts)
    joined = "".join(p["message"] for p in parts)
    for i in (0, 500, 999):
        assert f"line {i:05d}" in joined
    for p in parts:
        assert p["message"].count("```") % 2 == 0
        assert p["root_id"] == post["id"]


# --- edits and deletions ----------------------------------------------------------------------


async def test_an_edited_remember_updates_the_memory_and_a_deletion_forgets_it(
    bot: DaemonProcess, dev: DevServer
) -> None:
    marker = tag()
    post, saved = await bot.ask("park", "qa", f"@ai remember 회의실 {marker} 위치는 3층")
    assert "3층" in saved
    confirmation = (await bot.replies_to(post))[0]
    kim = dev.store.user_by_name("park")
    assert kim is not None
    dev.posts.patch(kim, post["id"], {"message": f"@ai remember 회의실 {marker} 위치는 5층"})
    await until(lambda: "5층" in (dev.posts.live_post(confirmation["id"])["message"]), timeout=20)
    _, found = await bot.ask("park", "qa", f"@ai search 회의실 {marker} 위치")
    results = found.splitlines()[1:]
    assert "위치는 5층" in results[0]  # the current fact (the old value may follow as history)
    assert not any("위치는 3층" in line for line in results)

    dev.posts.delete(kim, post["id"])
    note = await until(
        lambda: next(
            (
                p
                for p in dev.posts_by(dev.seed.bot.id)
                if p.get("props", {}).get("mchat_follow") == post["id"]
            ),
            None,
        ),
        timeout=20,
    )
    assert "잊었습니다" in note["message"] and marker in note["message"]
    _, after = await bot.ask("park", "qa", f"@ai search 회의실 {marker} 위치")
    assert "위치는" not in after  # neither version is left


async def test_a_deleted_reply_post_is_announced_in_its_thread(bot: DaemonProcess, dev: DevServer) -> None:
    marker = tag()
    root = await dev.user_post("lee", dev.seed.channels["qa"], f"출장 스레드 {marker}")
    post, _ = await bot.ask("lee", "qa", f"@ai remember 출장비 한도 {marker} 30만원", root_id=root["id"])
    lee = dev.store.user_by_name("lee")
    assert lee is not None
    dev.posts.delete(lee, post["id"])
    note = await until(
        lambda: next(
            (p for p in dev.thread(root["id"]) if p.get("props", {}).get("mchat_follow") == post["id"]), None
        ),
        timeout=20,
    )
    assert note["root_id"] == root["id"]


# --- channels ---------------------------------------------------------------------------------


def greetings(dev: DevServer, channel_id: str) -> list[dict[str, Any]]:
    return dev.posts.find(
        lambda p: p["channel_id"] == channel_id and p.get("props", {}).get("mchat_greeting") is True
    )


async def test_auto_join_joins_and_greets_once(bot: DaemonProcess, dev: DevServer) -> None:
    channel = dev.store.channels[dev.seed.channels["no-bot"]]
    await until(lambda: dev.seed.bot.id in channel.members, timeout=20)
    await until(lambda: greetings(dev, channel.id), timeout=20)
    await asyncio.sleep(1.0)
    assert len(greetings(dev, channel.id)) == 1
    assert "remember" in greetings(dev, channel.id)[0]["message"]


async def test_added_greets_once_and_removal_is_noticed(bot: DaemonProcess, dev: DevServer) -> None:
    admin = dev.seed.users["admin"]
    room = dev.store.add_channel(dev.seed.team_id, "O", f"ux-{tag()}", "UX Room", creator_id=admin.id)
    for name in ("kim", "admin"):
        dev.store.join(room, dev.seed.users[name].id)
    headers = {"Authorization": f"Bearer {admin.token}"}
    async with httpx.AsyncClient(base_url=f"{dev.url}/api/v4", headers=headers, timeout=5) as http:
        r = await http.post(f"/channels/{room.id}/members", json={"user_id": dev.seed.bot.id})
        assert r.status_code == 201
        await until(lambda: greetings(dev, room.id), timeout=20)
        r = await http.delete(f"/channels/{room.id}/members/{dev.seed.bot.id}")
        assert r.status_code == 200
        await until(lambda: "channels.removed" in bot.log_tail(200_000), timeout=10)
        r = await http.post(f"/channels/{room.id}/members", json={"user_id": dev.seed.bot.id})
        assert r.status_code == 201
        await until(lambda: bot.log_tail(200_000).count("channels.added") >= 2, timeout=10)
    await asyncio.sleep(1.0)
    assert len(greetings(dev, room.id)) == 1  # greeted once, not again when re-added


# --- attachments ------------------------------------------------------------------------------


async def post_with_file(dev: DevServer, user: str, channel: str, text: str, name: str, data: bytes) -> dict:
    token = dev.seed.users[user].token
    channel_id = dev.seed.channels[channel]
    async with httpx.AsyncClient(
        base_url=f"{dev.url}/api/v4", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ) as http:
        r = await http.post("/files", data={"channel_id": channel_id}, files={"files": (name, data)})
        assert r.status_code == 201, r.text
        file_id = r.json()["file_infos"][0]["id"]
        r = await http.post("/posts", json={"channel_id": channel_id, "message": text, "file_ids": [file_id]})
        assert r.status_code == 201, r.text
        return dict(r.json())


async def test_a_markdown_file_is_remembered_in_pieces(bot: DaemonProcess, dev: DevServer) -> None:
    marker = tag()
    doc = "\n\n".join(
        [
            f"# 설비 매뉴얼 {marker}",
            *(f"## {i}장\n" + f"{i}번 설비는 매주 {i}요일에 점검합니다. " * 12 for i in range(1, 6)),
        ]
    ).encode()
    assert 1200 < len(doc) < MAX_FILE
    post = await post_with_file(dev, "kim", "qa", "@ai remember", "manual.md", doc)
    reply = "".join(r["message"] for r in await bot.replies_to(post, timeout=30))
    assert "manual.md" in reply and ("memories" in reply or "메모리" in reply)
    _, found = await bot.ask("kim", "qa", f"@ai search 3번 설비 점검 {marker}")
    assert "3번 설비" in found


async def test_a_file_past_the_limit_gets_a_clear_message(bot: DaemonProcess, dev: DevServer) -> None:
    marker = tag()
    big = (f"큰 파일 {marker} " + "내용 " * 2000).encode()
    assert len(big) > MAX_FILE
    post = await post_with_file(dev, "kim", "qa", "@ai remember", "big.txt", big)
    reply = "".join(r["message"] for r in await bot.replies_to(post, timeout=30))
    assert "big.txt" in reply and ("too large" in reply or "너무 커서" in reply)
    _, found = await bot.ask("kim", "qa", f"@ai search 큰 파일 {marker}")
    assert "[big.txt]" not in found  # nothing of it was stored
