"""`summarize`: periods in the asker's zone, the token budget across map and merge calls, citations
that name only lines of the prompt, the extractive summary, and the sources (a learning channel's
log, a thread over REST, another channel for the asker alone); on a real SQLite log."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mchat_bot.devserver.fake_llm import default_reply
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.llm import LLMError
from mchat_bot.pipeline.message import Outcome
from mchat_bot.pipeline.periods import parse_period
from mchat_bot.pipeline.router import Command, parse_request
from mchat_bot.pipeline.summaries import (
    OVERHEAD_TOKENS,
    Summaries,
    citations,
    estimate_tokens,
    extract,
    pack,
    plan,
    prompt_tokens,
    sample_evenly,
)
from mchat_bot.storage import Storage
from tests.support.chat import ChatError, FakeChat
from tests.support.factories import SITE, message

SEOUL = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 12, 3, 15, 30, tzinfo=SEOUL)  # a Thursday
BOT = "u-bot"


# --- periods --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "start", "end"),
    [
        ("", NOW - timedelta(hours=24), NOW),
        ("24h", NOW - timedelta(hours=24), NOW),
        ("48시간", NOW - timedelta(hours=48), NOW),
        ("3d", NOW - timedelta(days=3), NOW),
        ("today", datetime(2026, 12, 3, tzinfo=SEOUL), NOW),
        ("오늘", datetime(2026, 12, 3, tzinfo=SEOUL), NOW),
        ("어제", datetime(2026, 12, 2, tzinfo=SEOUL), datetime(2026, 12, 3, tzinfo=SEOUL)),
        ("yesterday", datetime(2026, 12, 2, tzinfo=SEOUL), datetime(2026, 12, 3, tzinfo=SEOUL)),
        ("this week", datetime(2026, 11, 30, tzinfo=SEOUL), NOW),
        ("이번 주", datetime(2026, 11, 30, tzinfo=SEOUL), NOW),
        ("since monday", datetime(2026, 11, 30, tzinfo=SEOUL), NOW),
        ("since Thursday", datetime(2026, 12, 3, tzinfo=SEOUL), NOW),
        ("화요일부터", datetime(2026, 12, 1, tzinfo=SEOUL), NOW),
    ],
)
def test_periods_in_the_askers_zone(words: str, start: datetime, end: datetime) -> None:
    period, rest = parse_period(words, NOW)
    assert (period.start, period.end, rest) == (start, end, "")


def test_a_period_until_now_holds_a_post_the_server_stamped_ahead() -> None:
    period, _ = parse_period("today", NOW)
    assert period.holds(period.end_ms + 5000)
    yesterday, _ = parse_period("어제", NOW)
    assert not yesterday.holds(yesterday.end_ms) and yesterday.holds(yesterday.end_ms - 1)


def test_a_channel_and_a_period_in_any_order() -> None:
    period, rest = parse_period("#qa 오늘", NOW)
    assert rest == "#qa" and period.start == datetime(2026, 12, 3, tzinfo=SEOUL)
    period, rest = parse_period("since monday ~ops", NOW)
    assert rest == "~ops" and period.start.day == 30


def test_midnight_is_the_askers() -> None:
    utc_now = NOW.astimezone(ZoneInfo("UTC"))  # 06:30 UTC: "today" in Seoul began at 15:00 UTC
    seoul, _ = parse_period("today", NOW)
    utc, _ = parse_period("today", utc_now)
    assert seoul.start_ms != utc.start_ms
    assert seoul.start.astimezone(ZoneInfo("UTC")).hour == 15


def test_the_command_words() -> None:
    for text in ("summarize", "summary today", "요약 #qa", "정리해줘", "정리 어제"):
        routed = parse_request(text, "ko")
        assert isinstance(routed, Command) and routed.name == "summarize", text
    routed = parse_request("이번 주 대화 정리해줘", "ko")  # the verb last, as Korean says it
    assert routed == Command("summarize", "이번 주 대화", "ko")
    assert not isinstance(parse_request("정리된 문서는 어디 있나요?", "ko"), Command)


# --- the budget -----------------------------------------------------------------------------------


def test_sample_evenly_keeps_the_ends_in_order() -> None:
    assert sample_evenly(10, 3) == [0, 4, 9] or sample_evenly(10, 3) == [0, 5, 9]
    assert sample_evenly(5, 9) == [0, 1, 2, 3, 4]
    assert sample_evenly(5, 0) == []


def test_pack_never_exceeds_a_chunk() -> None:
    entries = [f"[{i}] 09:00 kim: " + "word " * (i % 40) for i in range(500)] + ["x" * 9000]
    for chunk in pack(entries, 300):
        assert sum(estimate_tokens(e) + 1 for e in chunk) <= 300


@pytest.mark.parametrize(("count", "budget"), [(50, 24000), (2000, 24000), (2000, 6000), (20000, 24000)])
def test_the_plan_stays_within_the_budget(count: int, budget: int) -> None:
    def numbered(kept: list[int]) -> list[str]:
        return [
            f"[{n}] 09:{i % 60:02d} user{i % 7}: message number {i} about lot {i % 13}"
            for n, i in enumerate(kept, 1)
        ]

    p = plan(count, numbered, 3000, budget, OVERHEAD_TOKENS)
    assert p.kept == sorted(p.kept) and p.kept
    calls = [sum(estimate_tokens(e) + 1 for e in c) + OVERHEAD_TOKENS for c in p.chunks]
    assert all(c <= 3000 for c in calls)
    merge = OVERHEAD_TOKENS + (p.partial_tokens + 8) * len(p.chunks) if len(p.chunks) > 1 else 0
    assert sum(calls) + merge <= budget
    if count == 50:
        assert len(p.chunks) == 1 and p.partial_tokens == 0


def test_citations_name_only_lines_of_the_prompt() -> None:
    clean, cited = citations("- lot B [3][1]\n- invented [99] [0]\n- again [3]", 5)
    assert cited == [1, 3]
    assert "[99]" not in clean and "[0]" not in clean and "[3][1]" in clean


# --- extractive -----------------------------------------------------------------------------------


def line(i: int, text: str, channel: str = "c1", at: int | None = None, user: str = "kim") -> Line:
    return Line(
        post_id=f"p{channel}{i:04d}",
        channel_id=channel,
        text=text,
        create_at=at if at is not None else int(NOW.timestamp() * 1000) - (400 - i) * 60_000,
        team_id="t1",
        channel_name="품질검사",
        user_id=user,
        user_name=user,
    )


def test_extract_picks_decisions_questions_tasks_and_the_central() -> None:
    lines = [
        line(0, "lot A failed the salt test"),
        line(1, "Decided: we take lot B from Daesung"),
        line(2, "Who checks the lot B certificate?"),
        line(3, "@lee will send the lot B certificate by Friday, please"),
        line(4, "lunch was good"),
        line(5, "lot B salt test passed, lot B certificate pending"),
    ]
    picks = extract(lines)
    assert picks.decisions == [1]
    assert picks.questions == [2]
    assert picks.tasks == [3]
    assert 5 in picks.central and 4 not in picks.central


# --- the command ----------------------------------------------------------------------------------


@dataclass
class MemberChat(FakeChat):
    """Channels by name, members per channel, the asker's time zone."""

    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)

    async def get_channel_by_name(self, team_id: str, name: str) -> dict[str, Any]:
        if name not in self.by_name:
            raise ChatError(404)
        return self.by_name[name]

    async def get_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        if user_id not in self.members.get(channel_id, set()):
            raise ChatError(404)
        return {"channel_id": channel_id, "user_id": user_id, "roles": "channel_user"}

    async def get_user(self, user_id: str) -> dict[str, Any]:
        zone = {"useAutomaticTimezone": "true", "automaticTimezone": "Asia/Seoul", "manualTimezone": ""}
        return {"id": user_id, "username": user_id, "timezone": zone}


class RecordingLLM:
    """Answers like the dev server's fake LLM; keeps every prompt."""

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []

    async def complete(self, messages: list[dict[str, str]]) -> str:
        self.prompts.append(messages)
        return default_reply(list(messages))


@dataclass
class World:
    summaries: Summaries
    log: ChatLog
    chat: MemberChat
    llm: RecordingLLM | None


async def make_world(storage: Storage, *, llm: bool = True, budget: int = 24000) -> World:
    log = await ChatLog(storage).load()
    channels = await LearningChannels(storage, ["c1", "c3"]).load()
    chat = MemberChat(
        by_name={
            "ops": {"id": "c3", "type": "O", "name": "ops"},
            "quiet": {"id": "c4", "type": "O", "name": "quiet"},
            "nobot": {"id": "c5", "type": "O", "name": "nobot"},
        },
        members={"c3": {"u1", BOT}, "c4": {"u1", BOT}, "c5": {"u1"}},
    )
    fake = RecordingLLM() if llm else None
    summaries = Summaries(
        chat, log, channels, fake, BOT, SITE, chunk_tokens=3000, budget_tokens=budget, clock=NOW.timestamp
    )
    return World(summaries, log, chat, fake)


def links(text: str) -> list[str]:
    return re.findall(r"/_redirect/pl/([A-Za-z0-9]+)", text)


async def test_a_day_of_300_lines_cites_only_that_channel_and_period(storage: Storage) -> None:
    w = await make_world(storage)
    day = [line(i, f"message {i}: lot {i % 9} moisture {i % 17}%", at=None) for i in range(300)]
    old = [line(900 + i, "old news", at=int((NOW - timedelta(days=3)).timestamp() * 1000)) for i in range(5)]
    other = [line(i, f"SECRET{i} elsewhere", channel="c2") for i in range(50)]
    await w.log.record([*day, *old, *other])
    reply = await w.summaries.summarize(message("@ai 요약", channel="c1"), "", "ko")
    assert reply.outcome is Outcome.ANSWERED and not reply.private
    cited = links(reply.text)
    assert cited and set(cited) <= {x.post_id for x in day}, reply.text
    assert "SECRET" not in reply.text and "old news" not in reply.text
    assert "결정 사항" in reply.text and "글 300개" in reply.text
    assert w.llm is not None
    sent = "\n".join(m["content"] for p in w.llm.prompts for m in p)
    assert "SECRET" not in sent and "old news" not in sent
    assert w.summaries.last_tokens == sum(prompt_tokens(p) for p in w.llm.prompts) <= 24000


async def test_a_long_history_is_mapped_merged_and_sampled_within_the_budget(storage: Storage) -> None:
    w = await make_world(storage, budget=8000)
    day = [line(i, f"message {i}: " + "lot B moisture reading " * 4, at=None) for i in range(400)]
    await w.log.record(day)
    reply = await w.summaries.summarize(message("@ai summarize", channel="c1"), "", "en")
    assert w.llm is not None and len(w.llm.prompts) > 2  # parts, then the merge
    assert sum(prompt_tokens(p) for p in w.llm.prompts) <= 8000
    assert "even sample" in reply.text
    assert set(links(reply.text)) <= {x.post_id for x in day}


async def test_without_an_llm_the_summary_is_extractive_and_says_so(storage: Storage) -> None:
    w = await make_world(storage, llm=False)
    await w.log.record(
        [
            line(1, "Decided: we take lot B"),
            line(2, "Who signs the lot B order?"),
            line(3, "lot B order goes out Friday"),
        ]
    )
    reply = await w.summaries.summarize(message("@ai summarize today", channel="c1"), "today", "en")
    assert "Extractive summary (no LLM)" in reply.text
    assert "Decided: we take lot B" in reply.text and "/_redirect/pl/pc10001" in reply.text


async def test_a_channel_that_does_not_learn_is_told_how(storage: Storage) -> None:
    w = await make_world(storage)
    reply = await w.summaries.summarize(message("@ai 요약", channel="c9"), "", "ko")
    assert reply.outcome is Outcome.REFUSED and "학습 켜기" in reply.text


async def test_a_thread_is_read_over_rest_masked(storage: Storage) -> None:
    w = await make_world(storage)
    w.chat.posts = {
        "r1": {
            "id": "r1",
            "channel_id": "c9",
            "root_id": "",
            "user_id": "kim",
            "message": "Which lot?",
            "create_at": 1,
        },
        "r2": {
            "id": "r2",
            "channel_id": "c9",
            "root_id": "r1",
            "user_id": "lee",
            "message": "lot B, call 010-1234-5678",
            "create_at": 2,
        },
        "r3": {
            "id": "r3",
            "channel_id": "c9",
            "root_id": "r1",
            "user_id": BOT,
            "message": "an answer",
            "create_at": 3,
        },
    }
    msg = message("@ai summarize", channel="c9", root="r1", post_id="r4")
    reply = await w.summaries.summarize(msg, "", "en")
    assert w.llm is not None
    sent = w.llm.prompts[-1][1]["content"]
    assert "lot B" in sent and "1234-5678" not in sent and "an answer" not in sent
    assert set(links(reply.text)) <= {"r1", "r2"} and links(reply.text)


async def test_another_channel_goes_to_the_asker_alone(storage: Storage) -> None:
    w = await make_world(storage)
    await w.log.record([line(i, f"ops note {i}", channel="c3") for i in range(5)])
    reply = await w.summaries.summarize(message("@ai summarize #ops", channel="c1", user="u1"), "#ops", "en")
    assert "sent it to you alone" in reply.text and "ops note" not in reply.text
    assert "/_redirect/pl/pc3" in reply.private
    # not a member, no such channel: one answer; the bot not in it; a channel that does not learn
    for name, want in (
        ("secret", "that you are a member of"),
        ("nobot", "I am not in"),
        ("quiet", "does not learn"),
    ):
        refused = await w.summaries.summarize(message(f"@ai summarize #{name}", user="u1"), f"#{name}", "en")
        assert refused.outcome is Outcome.REFUSED and want in refused.text and not refused.private, name
    stranger = await w.summaries.summarize(message("@ai summarize #ops", user="u2"), "#ops", "en")
    assert "that you are a member of" in stranger.text and not stranger.private


class RecordingSink:
    """The turn's sink: which prompts went through it (streamed into the thread)."""

    def __init__(self) -> None:
        self.prompts: list[list[dict[str, str]]] = []

    async def complete(self, llm: Any, messages: list[dict[str, str]]) -> str:
        self.prompts.append(messages)
        return str(await llm.complete(messages))


async def test_only_the_final_call_streams_and_never_for_another_channel(storage: Storage) -> None:
    w = await make_world(storage)
    await w.log.record([line(i, f"message {i}: " + "lot B moisture reading " * 4) for i in range(300)])
    await w.log.record([line(i, f"ops note {i}", channel="c3") for i in range(5)])
    sink = RecordingSink()
    await w.summaries.summarize(message("@ai summarize", channel="c1"), "", "en", sink)
    assert w.llm is not None and len(w.llm.prompts) > 2
    assert sink.prompts == [w.llm.prompts[-1]]  # the merge, not the parts
    assert "Merge them" in sink.prompts[0][0]["content"]
    private_sink = RecordingSink()
    reply = await w.summaries.summarize(message("@ai summarize #ops", user="u1"), "#ops", "en", private_sink)
    assert reply.private and not private_sink.prompts


async def test_a_failing_llm_still_gives_the_extractive_summary(storage: Storage) -> None:
    w = await make_world(storage)
    await w.log.record([line(1, "Decided: we take lot B"), line(2, "Who signs the lot B order?")])

    async def fails(messages: list[dict[str, str]]) -> str:
        raise LLMError("timeout")

    assert w.llm is not None
    w.llm.complete = fails  # type: ignore[method-assign]
    reply = await w.summaries.summarize(message("@ai summarize", channel="c1"), "", "en")
    assert "did not respond" in reply.text and "Extractive summary (no LLM)" in reply.text
    assert "/_redirect/pl/pc10001" in reply.text
