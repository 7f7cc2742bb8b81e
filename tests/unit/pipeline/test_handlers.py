"""Handlers: what the user reads back for each command and question.

The memory store here is mostly the shared word-overlap fake (the real store has its own tests, and the
end-to-end tests use it); answers that pass the relevance cut use the real store, whose scores it is
calibrated on; the LLM is the real client talking to the fake LLM server over a socket.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta, timezone

import pytest

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.memory.store import EdgeMemoryStore, Hit, Memory
from mchat_bot.pipeline.handlers import Handlers, build_prompt, guess_category
from mchat_bot.pipeline.message import Outcome
from mchat_bot.pipeline.router import Ignore, route
from mchat_bot.pipeline.texts import short_id
from tests.support.factories import BOT, SITE, ask, llm_for, message
from tests.support.fakes import FakeStore

KST = timezone(timedelta(hours=9))


class Thread:
    def __init__(self, posts: list[tuple[str, str]]) -> None:
        self.posts = posts
        self.calls: list[tuple[str, str]] = []

    async def thread_context(self, root_id: str, before_post_id: str) -> list[tuple[str, str]]:
        self.calls.append((root_id, before_post_id))
        return self.posts


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


async def test_remember_saves_in_channel_scope_and_replies_in_seed_format() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE + "/", tz=KST)
    m = message("@ai remember X부품 불량률 12%")
    reply = (await h.handle(m, route(m, BOT))).text
    [saved] = store.memories.values()
    assert reply == (
        "#### 🧠 메모리 저장됨\n- **내용:** X부품 불량률 12%\n- **범위:** 이 채팅방\n- **카테고리:** fact\n"
        f"- **ID:** `{saved.id}`"
    )
    assert (saved.text, saved.scope, saved.category) == ("X부품 불량률 12%", "channel", "fact")
    assert (saved.channel_id, saved.team_id, saved.user_id, saved.user_name) == ("c1", "t1", "u1", "김과장")
    assert saved.source_post_id == m.post_id
    assert saved.permalink == f"{SITE}/_redirect/pl/{m.post_id}"
    assert "Memory saved" in await ask(h, "@ai remember the deploy is on Friday")
    assert "Usage" in await ask(h, "@ai remember")


def test_category_rule() -> None:
    assert guess_category("X부품 불량률 12%") == "fact"
    assert guess_category("금요일까지 보고서 제출해야 함") == "task"
    assert guess_category("We decided to use Postgres") == "decision"
    assert guess_category("김과장은 아침 회의를 선호함") == "preference"


async def test_search_lists_only_visible_memories_with_ids_and_scores() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE, tz=KST)
    await ask(h, "@ai remember X부품 불량률 12%")
    await ask(h, "@ai remember X부품 불량률 비밀 값 30%", channel="secret")
    reply = await ask(h, "@ai search 불량률")
    mine = next(m for m in store.memories.values() if m.channel_id == "c1")
    assert f"`{short_id(mine.id)}`" in reply
    assert "12%" in reply and "30%" not in reply
    assert "(0.50)" in reply or "(1.00)" in reply
    assert "No memories match" in await ask(h, "@ai search nothing-like-this")


async def test_forget_by_short_id_and_refusal_for_hidden_memories() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE)
    await ask(h, "@ai remember 주차장은 B2")
    await ask(h, "@ai remember 다른 방의 비밀", channel="secret")
    mine = next(m for m in store.memories.values() if m.channel_id == "c1")
    hidden = next(m for m in store.memories.values() if m.channel_id == "secret")

    refused = await ask(h, f"@ai forget {hidden.id}")
    assert refused == f"No memory with id `{hidden.id}` that you can delete here."
    refused_short = await ask(h, f"@ai 삭제 {short_id(hidden.id)}")
    assert "찾을 수 없거나" in refused_short
    assert hidden.id in store.memories

    done = await ask(h, f"@ai 삭제 {short_id(mine.id)}")
    assert "메모리 삭제됨" in done and "주차장은 B2" in done
    assert mine.id not in store.memories


async def test_forget_with_a_query_only_shows_candidates() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE)
    await ask(h, "@ai remember meeting room is 3F")
    reply = await ask(h, "@ai forget meeting room")
    assert "nothing deleted yet" in reply
    only = next(iter(store.memories.values()))
    assert f"`{short_id(only.id)}`" in reply
    assert len(store.memories) == 1


async def test_memories_and_help() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE, tz=KST)
    assert "아직 없습니다" in await ask(h, "@ai 목록")
    await ask(h, "@ai remember first fact")
    await ask(h, "@ai remember second fact")
    listing = await ask(h, "@ai memories")
    assert "Recent memories (2)" in listing
    assert listing.index("second fact") < listing.index("first fact")
    assert "사용법" in await ask(h, "@ai 도움말")
    assert "remember TEXT" in await ask(h, "@ai help")
    assert "@ai" in await ask(h, "@ai")


async def test_question_with_llm_answers_with_citation_and_sources(
    fake_llm: FakeLLM, store: EdgeMemoryStore
) -> None:
    # the real store: the relevance cut is calibrated on its scores, not on the fake's word overlap
    h = Handlers(store, llm_for(fake_llm), BOT, SITE, tz=KST)
    saved = message("@ai remember X부품 불량률 12%")
    await h.handle(saved, route(saved, BOT))
    reply = await ask(h, "@ai 오늘 X부품 불량률 어때?", name="이대리")
    answer, _, sources = reply.partition("\n\n")
    assert answer == "저장된 메모리 [1]에 따르면: X부품 불량률 12%"
    date = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 9 * 3600))
    assert sources == f"[1] 김과장, {date}, #품질검사 ({SITE}/_redirect/pl/{saved.post_id})"
    system = fake_llm.requests[-1]["messages"][0]["content"]
    assert "[1] X부품 불량률 12%" in system and "Korean" in system


async def test_question_uses_thread_context_and_only_cited_sources(
    fake_llm: FakeLLM, store: EdgeMemoryStore
) -> None:
    thread = Thread([("박부장", "지난주 검사 결과 공유합니다"), ("김과장", "X부품은요?")])
    h = Handlers(store, llm_for(fake_llm), BOT, SITE, thread, tz=KST)
    await ask(h, "@ai remember defect rate of part X is 12%")
    await ask(h, "@ai remember defect meeting on Monday")
    fake_llm.reply_with("The defect rate is 12% [2].")
    reply = await ask(h, "@ai what is the defect rate?", root="root1")
    assert reply.startswith("The defect rate is 12% [2].\n\n[2] ")
    assert "[1]" not in reply.partition("\n\n")[2]
    assert thread.calls and thread.calls[0][0] == "root1"
    system = fake_llm.requests[-1]["messages"][0]["content"]
    assert "박부장: 지난주 검사 결과 공유합니다" in system
    assert fake_llm.requests[-1]["messages"][-1] == {"role": "user", "content": "what is the defect rate?"}


async def test_llm_failure_and_timeout_give_a_short_apology(fake_llm: FakeLLM) -> None:
    store = FakeStore()
    h = Handlers(store, llm_for(fake_llm, timeout=0.5), BOT, SITE)
    fake_llm.fail_next(3, status=500)
    assert "죄송합니다" in await ask(h, "@ai 불량률 어때?")
    fake_llm.delay(2.0)
    assert "Sorry" in await ask(h, "@ai how are we doing?")


async def test_without_llm_quotes_memories_or_says_nothing_found(store: EdgeMemoryStore) -> None:
    h = Handlers(store, None, BOT, SITE, tz=KST)
    assert "그에 관한 메모리가 없습니다" in await ask(h, "@ai 불량률 어때?")
    await ask(h, "@ai remember X부품 불량률 12%")
    await ask(h, "@ai remember The release freeze for line 3 starts on December 1.")
    reply = await ask(h, "@ai X부품 불량률 어때?")
    assert "LLM이 설정되어 있지 않아" in reply
    assert "> [1] X부품 불량률 12%" in reply
    assert "\n\n[1] 김과장, " in reply
    assert "release freeze" not in reply and "[2]" not in reply  # the nearest unrelated one is not quoted
    nothing = await ask(h, "@ai what is on the cafeteria menu today?")
    assert nothing.startswith("I have no memory about that."), nothing


async def test_store_failure_is_reported_not_raised() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE)
    store.broken = True
    assert "Sorry" in await ask(h, "@ai remember x")
    assert "오류" in await ask(h, "@ai 검색 x")


async def test_ignored_message_gives_empty_reply() -> None:
    h = Handlers(FakeStore(), None, BOT, SITE)
    m = replace(message("hello"), user_id="bot1")
    assert (await h.handle(m, Ignore("own post"))).empty
    assert (await h.handle_message(message("no mention here"))).outcome is Outcome.IGNORED


def test_prompt_numbers_memories_and_names_the_language() -> None:
    m1 = Memory(id="a", text="one\nline", user_name="kim", created_at=0.0)
    m2 = Memory(id="b", text="two", user_name="lee", created_at=0.0)
    messages = build_prompt("q?", [Hit(m1, 0.9), Hit(m2, 0.5)], [("kim", "earlier")], "en")
    system = messages[0]["content"]
    assert "[1] one line" in system and "[2] two" in system and "English" in system
    assert "kim: earlier" in system
    assert messages[1] == {"role": "user", "content": "q?"}
