"""Supersession and extraction through Handlers and the real embedded store.

Without an LLM the deterministic rule decides; with one (the fake LLM server over a socket) the
LLM's JSON decision is used when valid, and the rule when it is not.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from mchat_bot.memory.extractor import decide_by_rule, grounded, looks_like_statement, parse_decision
from mchat_bot.memory.store import Memory, Selection, Viewer
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.texts import short_id
from tests.support.factories import BOT, ask, llm_for

V = Viewer("t1", "c1", "u1")


async def say(h: Handlers, text: str, channel: str = "c1", user: str = "u1") -> str:
    return await ask(h, text, channel=channel, user=user, name="kim")


def mem(text: str, id: str = "", at: float = 1.0) -> Memory:
    return Memory(id=id or text[:8], text=text, channel_id="c1", team_id="t1", created_at=at)


# -- the rule --------------------------------------------------------------------------------------


def test_rule_same_subject_different_value_updates() -> None:
    old = mem("X부품 불량률 12%", "old")
    assert decide_by_rule("X부품 불량률 8%", [old]).action == "update"
    assert decide_by_rule("X부품 불량률 8%로 개선됨", [old]).target == "old"
    assert decide_by_rule("Y부품 불량률 8%", [old]).action == "add"  # another part: another subject
    assert decide_by_rule("X부품 납기는 다음 주", [old]).action == "add"  # no value to compare
    assert decide_by_rule("X부품  불량률 12%", [old]).action == "keep"  # the same text again
    assert (
        decide_by_rule(
            "The staging DB moved to 10.0.0.7", [mem("The staging DB moved to 10.0.0.5", "a")]
        ).action
        == "update"
    )
    assert (
        decide_by_rule("Release 2.4 ships Friday", [mem("Budget review is on Friday", "b")]).action == "add"
    )


def test_llm_decision_is_validated() -> None:
    cands = [mem("X부품 불량률 12%", "old")]
    assert parse_decision('{"action": "update", "target": "old"}', cands).action == "update"  # type: ignore[union-attr]
    assert (
        parse_decision('```json\n{"action":"keep","target":"old","reason":"same"}\n```', cands).action
        == "keep"
    )  # type: ignore[union-attr]
    assert parse_decision('{"action": "update", "target": "nope"}', cands) is None  # not a candidate
    assert parse_decision('{"action": "merge", "target": "old"}', cands) is None
    assert parse_decision("I think you should update it", cands) is None
    assert parse_decision('{"action": "add"}', cands).action == "add"  # type: ignore[union-attr]


def test_extraction_rule_and_grounding() -> None:
    assert looks_like_statement("다음 주 배포는 목요일로 바뀌었습니다.")
    assert not looks_like_statement("X부품 불량률 어때?")
    assert not looks_like_statement("when is the release")
    assert grounded("배포는 목요일", "참고로 다음 주 배포는 목요일로 바뀌었어요")
    assert not grounded("서버 비밀번호는 hunter2", "다음 주 배포는 목요일")


# -- through the handlers ----------------------------------------------------------------------------


async def test_update_marks_old_and_answers_with_the_current_fact(store) -> None:
    h = Handlers(store, None, BOT, "http://mm")
    await say(h, "@ai remember X부품 불량률 12%")
    reply = await say(h, "@ai remember X부품 불량률 8%")
    assert "이전 내용을 대체했습니다" in reply and "12%" in reply
    all_ = await store.select(Selection())
    old = next(m for m in all_ if "12%" in m.text)
    new = next(m for m in all_ if "8%" in m.text)
    assert old.valid_until > 0 and old.superseded_by == new.id and new.replaces == old.id and new.current
    # search and answers: the current fact, with what it replaced
    found = await say(h, "@ai search X부품 불량률")
    assert "8%" in found and "(이전: 12%," in found and f"`{short_id(old.id)}`" not in found
    answer = await say(h, "@ai X부품 불량률 어때?")
    assert "> [1] X부품 불량률 8% (이전: 12%," in answer
    assert "X부품 불량률 12%" not in answer.split("(이전")[0]
    # history shows the chain, oldest first, by the old id or the new one
    for ref in (short_id(old.id), new.id):
        hist = await say(h, f"@ai 이력 {ref}")
        assert hist.index("12%") < hist.index("8%") and "현재" in hist
    # another channel's same fact is untouched
    await say(h, "@ai remember X부품 불량률 30%", channel="c2")
    assert (await store.get(new.id)).current  # type: ignore[union-attr]


async def test_forgetting_the_update_brings_back_the_old_fact(store) -> None:
    h = Handlers(store, None, BOT, "http://mm")
    await say(h, "@ai remember staging DB host is 10.0.0.5")
    await say(h, "@ai remember staging DB host is 10.0.0.7")
    new = (await store.search("staging DB host", V, 1))[0].memory
    assert "10.0.0.7" in new.text
    await say(h, f"@ai forget {new.id}")
    back = (await store.search("staging DB host", V, 1))[0].memory
    assert "10.0.0.5" in back.text and back.current


async def test_the_llm_decides_when_configured(store, fake_llm) -> None:
    seen: list[str] = []

    def reconcile(messages: list[dict[str, Any]]) -> str:
        system = messages[0]["content"]
        user = messages[-1]["content"]
        seen.append(system)
        if "EXISTING" not in user:
            return "not json"
        ids = re.findall(r"id=(\S+):", user)
        new_line = user.splitlines()[0]
        if "다시" in new_line:  # the same news again
            return json.dumps({"action": "keep", "target": ids[0], "reason": "same"})
        if "취소" in new_line:  # "the meeting is cancelled" retires the old memory
            return json.dumps({"action": "delete", "target": ids[0], "reason": "cancelled"})
        return "garbage"

    fake_llm.reply_with(reconcile)
    h = Handlers(store, llm_for(fake_llm), BOT, "http://mm")
    await say(h, "@ai remember 금요일 전사 회의는 3시")
    reply = await say(h, "@ai remember 금요일 전사 회의 취소됨")
    assert "더 이상 유효하지 않음" in reply  # the LLM said delete: the old one is retired
    old = next(m for m in await store.select(Selection()) if m.text.endswith("3시"))
    assert not old.current
    # "keep": nothing new stored
    n = await store.count()
    reply = await say(h, "@ai remember 금요일 전사 회의 취소됨 다시 알림")
    assert "이미 기억하고" in reply and await store.count() == n
    # invalid LLM output falls back to the rule (same subject, different value -> update)
    await say(h, "@ai remember 서버 점검 시간 02:00")
    reply = await say(h, "@ai remember 서버 점검 시간 03:00")
    assert "이전 내용을 대체" in reply
    assert any("reconcile" in s.lower() or "memory store" in s for s in seen)


async def test_extraction_only_in_listed_channels_and_only_the_users_words(store, fake_llm) -> None:
    prompts: list[list[dict[str, Any]]] = []

    def replier(messages: list[dict[str, Any]]) -> str:
        prompts.append(messages)
        system = messages[0]["content"]
        if system.startswith("Extract facts"):
            return json.dumps(
                {
                    "memories": [
                        {"text": "다음 주 배포는 목요일", "category": "event"},
                        {"text": "관리자 비밀번호는 hunter2", "category": "fact"},  # not in the message
                        {"text": "배포 담당은 김과장", "category": "nonsense"},  # bad category
                    ]
                },
                ensure_ascii=False,
            )
        return "네, 알겠습니다."

    fake_llm.reply_with(replier)
    await store.add(mem("사내 위키 주소는 wiki.example.internal", "recalled1", at=time.time()))
    h = Handlers(store, llm_for(fake_llm), BOT, "http://mm", extract_channels=["c1"])
    reply = await say(h, "@ai 참고로 다음 주 배포는 목요일로 바뀌었어요. 위키 주소 알지?")
    assert "기억해 둠" in reply and "다음 주 배포는 목요일" in reply and "(`" in reply
    texts = [m.text for m in await store.select(Selection())]
    assert "다음 주 배포는 목요일" in texts
    assert not any("hunter2" in t for t in texts) and not any("김과장" in t for t in texts)
    stored = next(m for m in await store.select(Selection()) if m.text == "다음 주 배포는 목요일")
    assert stored.category == "event"
    # the extraction prompt held only the user's words: no recalled memory, no answer system prompt
    extract_prompts = [p for p in prompts if p[0]["content"].startswith("Extract facts")]
    assert len(extract_prompts) == 1
    sent = json.dumps(extract_prompts[0], ensure_ascii=False)
    assert "wiki.example.internal" not in sent and "AI Memory Bot" not in sent
    # a channel not listed: nothing extracted
    n = await store.count()
    reply = await say(h, "@ai 참고로 다음 주 회식은 금요일입니다.", channel="c9")
    assert "기억해 둠" not in reply and await store.count() == n


async def test_extraction_rule_without_llm(store) -> None:
    h = Handlers(store, None, BOT, "http://mm", extract_channels=["c1"])
    reply = await say(h, "@ai 신규 고객사 담당자는 박지수 과장입니다.")
    assert "기억해 둠" in reply
    assert any("박지수" in m.text for m in await store.select(Selection()))
    n = await store.count()
    reply = await say(h, "@ai 신규 고객사 담당자가 누구야?")
    assert "기억해 둠" not in reply and await store.count() == n
