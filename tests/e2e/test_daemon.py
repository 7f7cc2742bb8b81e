"""The daemon end to end: a real `mchat-bot run` process, the dev server and a fake LLM on 127.0.0.1.

One daemon serves the whole module (start-up loads the embedding model); each test uses its own
words so that tests do not see each other's memories.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

SPLIT_LIMIT = 16383


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: DevServer, llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    async with running_daemon(dev, llm, tmp_path_factory.mktemp("daemon")) as daemon:
        yield daemon


async def assert_no_bot_reply(bot: DaemonProcess, post: dict, wait: float = 1.5) -> None:
    await asyncio.sleep(wait)
    assert not bot.bot_posts(lambda p: p.get("props", {}).get("mchat_reply_to") == post["id"])
    assert not bot.bot_posts(lambda p: p.get("root_id") == post["id"])


async def test_dm_gets_a_reply_in_its_thread(bot: DaemonProcess, dev: DevServer) -> None:
    post, reply = await bot.ask("kim", "dm", "도움말")
    replies = await bot.replies_to(post)
    assert replies[0]["channel_id"] == dev.seed.dm["kim"]
    assert replies[0]["root_id"] == post["id"]
    assert "remember" in reply or "기억" in reply


@pytest.mark.parametrize("channel", ["qa", "qa-private"])
async def test_mention_in_public_and_private_channel(
    bot: DaemonProcess, dev: DevServer, channel: str
) -> None:
    post, _ = await bot.ask("kim", channel, "@ai help")
    replies = await bot.replies_to(post)
    assert replies[0]["channel_id"] == dev.seed.channels[channel]
    assert replies[0]["root_id"] == post["id"]


async def test_mention_inside_a_thread_is_answered_in_that_thread(bot: DaemonProcess, dev: DevServer) -> None:
    root = await dev.user_post("kim", dev.seed.channels["qa"], f"회의록 스레드 {tag()}")
    reply_post, _ = await bot.ask("lee", "qa", "@ai help", root_id=root["id"])
    replies = await bot.replies_to(reply_post)
    assert replies[0]["root_id"] == root["id"]  # the root, not the reply (the server rejects that)


async def test_no_reply_without_a_mention(bot: DaemonProcess, dev: DevServer) -> None:
    qa = dev.seed.channels["qa"]
    quiet = [
        await dev.user_post("kim", qa, f"그냥 잡담입니다 {tag()}"),
        await dev.user_post("kim", qa, f"@channel 공지 {tag()}"),  # the server lists the bot in mentions
        await dev.user_post("kim", qa, f"mail me at x@ai.example {tag()}"),
        await dev.user_post("kim", qa, f"use `@ai help` in code {tag()}"),
        await dev.user_post("kim", qa, f"@ai-bot is another bot {tag()}"),
    ]
    # A mention posted afterwards is answered, so the daemon was listening all along.
    await bot.ask("kim", "qa", "@ai help")
    for post in quiet:
        await assert_no_bot_reply(bot, post, wait=0.2)


@pytest.mark.parametrize("text", ["@AI, help", "@ai야 도움말", "@memorybot help", "@ai님 help"])
async def test_aliases_and_particles_trigger(bot: DaemonProcess, text: str) -> None:
    _, reply = await bot.ask("park", "qa", text)
    assert reply


async def test_remember_then_ask_reaches_the_llm_prompt(bot: DaemonProcess, llm: FakeLLM) -> None:
    fact = f"X부품 불량률 12% ({tag()})"
    _, saved = await bot.ask("kim", "qa", f"@ai remember {fact}")
    assert "메모리 저장됨" in saved and fact in saved
    before = len(llm.requests)
    _, answer = await bot.ask("kim", "qa", "@ai 오늘 X부품 불량률 어때?")
    prompts = [str(r) for r in llm.requests[before:]]
    assert any(fact in p for p in prompts), "the memory did not reach the LLM prompt"
    assert "[1]" in answer
    assert "/pl/" in answer  # the source is cited with its permalink


async def test_english_question_gets_an_english_reply(bot: DaemonProcess) -> None:
    fact = f"The release freeze for line {tag()} starts on December 1"
    _, saved = await bot.ask("lee", "qa", f"@ai remember {fact}")
    assert "Memory saved" in saved
    _, answer = await bot.ask("lee", "qa", "@ai when does the release freeze start?")
    assert "According to" in answer or "memory" in answer.lower()


async def test_private_memory_never_reaches_another_channel(bot: DaemonProcess, llm: FakeLLM) -> None:
    secret = f"비밀 프로젝트 코드명은 블루버드-{tag()}"
    await bot.ask("kim", "qa-private", f"@ai remember {secret}")
    await bot.ask("kim", "dm", f"remember DM 메모 {secret}")
    before = len(llm.requests)
    _, answer = await bot.ask("kim", "qa", "@ai 비밀 프로젝트 코드명이 뭐야?")
    _, found = await bot.ask("kim", "qa", "@ai search 비밀 프로젝트 코드명")
    assert secret not in answer and secret not in found
    assert all(secret not in str(r) for r in llm.requests[before:])
    # ...while in the private channel itself it is found.
    _, found_there = await bot.ask("kim", "qa-private", "@ai search 비밀 프로젝트 코드명")
    assert secret in found_there


async def test_search_and_forget(bot: DaemonProcess) -> None:
    fact = f"3라인 설비 점검은 매주 목요일 {tag()}"
    await bot.ask("park", "town-square", f"@ai remember {fact}")
    _, found = await bot.ask("park", "town-square", "@ai search 설비 점검")
    assert fact in found
    _, candidates = await bot.ask("park", "town-square", "@ai forget 설비 점검")
    assert fact in candidates
    memory_id = candidates.split("`")[1]
    _, forgotten = await bot.ask("park", "town-square", f"@ai forget {memory_id}")
    assert memory_id in forgotten
    _, after = await bot.ask("park", "town-square", "@ai search 설비 점검")
    assert fact not in after


async def test_own_posts_cause_no_loop(bot: DaemonProcess) -> None:
    text = f"@ai remember @ai help me {tag()}"  # the confirmation quotes "@ai help"
    post, _ = await bot.ask("kim", "qa", text)
    await asyncio.sleep(2.0)
    in_thread = bot.bot_posts(lambda p: p.get("root_id") == post["id"])
    assert len(in_thread) == 1


async def test_posts_during_a_dropped_socket_each_get_exactly_one_reply(
    bot: DaemonProcess, dev: DevServer
) -> None:
    dev.faults.drop_sockets()
    posts = [await dev.user_post("lee", dev.seed.channels["qa"], f"@ai help {tag()} {i}") for i in range(5)]
    for post in posts:
        await bot.replies_to(post, timeout=45)
    await asyncio.sleep(1.0)
    for post in posts:
        assert len(bot.bot_posts(lambda p, post=post: p.get("root_id") == post["id"])) == 1


async def test_malformed_frames_do_not_stop_the_daemon(bot: DaemonProcess, dev: DevServer) -> None:
    for frame in [
        "{not json",
        '{"event": "posted", "data": {"post": "{broken"}, "seq": 1}',
        '{"event": "posted", "data": {"post": 42}}',
        "[1, 2, 3]",
        b"\xff\xfe\xfa",
    ]:
        await dev.faults.send_raw_to_bot(frame)
    _, reply = await bot.ask("kim", "qa", "@ai help")
    assert reply


async def test_a_40000_character_answer_is_split(bot: DaemonProcess, llm: FakeLLM) -> None:
    body = "\n".join(f"line {i:05d} " + "가" * 30 for i in range(1000))
    long_answer = f"Here is the report:\n```\n{body}\n```\nend of report"
    assert len(long_answer) > 40_000
    llm.reply_with(long_answer)
    try:
        post, _ = await bot.ask("kim", "qa", "@ai give me the long report")
        replies = await bot.replies_to(post, count=3, timeout=30)
    finally:
        llm.reply_with(None)
    assert all(len(r["message"]) <= SPLIT_LIMIT for r in replies)
    joined = "".join(r["message"] for r in replies)
    for i in (0, 500, 999):
        assert f"line {i:05d}" in joined
    for part in replies:  # every part has balanced code fences
        assert part["message"].count("```") % 2 == 0


async def test_llm_failure_gives_an_apology(bot: DaemonProcess, llm: FakeLLM) -> None:
    llm.fail_next(100, status=500)
    try:
        _, reply = await bot.ask("kim", "qa", "@ai 오늘 회의 몇 시야?", timeout=60)
    finally:
        llm.fail_next(0)
    assert "죄송" in reply
    _, later = await bot.ask("kim", "qa", "@ai help")  # and it still works
    assert later


async def test_sensitive_data_is_masked_before_it_is_stored(bot: DaemonProcess) -> None:
    marker = tag()
    _, saved = await bot.ask(
        "kim", "qa", f"@ai remember 협력사 담당자 {marker} 연락처 010-4821-7730, kim@example.com"
    )
    assert "010-4821-7730" not in saved and "kim@example.com" not in saved
    assert "민감정보" in saved
    _, found = await bot.ask("kim", "qa", f"@ai search 협력사 담당자 {marker}")
    assert marker in found
    assert "4821" not in found and "kim@example.com" not in found
    assert "4821-7730" not in bot.log_tail(10**7)
