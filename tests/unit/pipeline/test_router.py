"""Routing: who talks to the bot, and which command or question they send."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.router import BotIdentity, Command, Ignore, Question, route

BOT = BotIdentity(user_id="bot1", username="memorybot", aliases=("@ai",))


def msg(text: str, channel_type: str = "O", **kw: object) -> IncomingMessage:
    base: dict[str, object] = {
        "post_id": "p1",
        "channel_id": "c1",
        "channel_type": channel_type,
        "channel_name": "품질검사",
        "team_id": "t1",
        "user_id": "u1",
        "user_name": "kim",
        "message": text,
    }
    base.update(kw)
    return IncomingMessage(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@ai remember X부품 불량률 12%", Command("remember", "X부품 불량률 12%", "ko")),
        ("@AI Remember the deploy is on Friday", Command("remember", "the deploy is on Friday", "en")),
        ("@memorybot search deploy", Command("search", "deploy", "en")),
        ("@ai /search deploy", Command("search", "deploy", "en")),
        ("@ai !forget 01ABCDEF", Command("forget", "01ABCDEF", "en")),
        ("@ai 기억해 회의는 3시", Command("remember", "회의는 3시", "ko")),
        ("@ai 기억 회의는 3시", Command("remember", "회의는 3시", "ko")),
        ("@ai 검색 불량률", Command("search", "불량률", "ko")),
        ("@ai 찾아 불량률", Command("search", "불량률", "ko")),
        ("@ai 삭제 불량률", Command("forget", "불량률", "ko")),
        ("@ai 잊어 불량률", Command("forget", "불량률", "ko")),
        ("@ai 목록", Command("memories", "", "ko")),
        ("@ai memories", Command("memories", "", "en")),
        ("@ai 도움말", Command("help", "", "ko")),
        ("@ai help", Command("help", "", "en")),
        ("@ai", Command("help", "", "en")),
        ("@ai   ", Command("help", "", "en")),
        ("@ai 오늘 X부품 불량률 어때?", Question("오늘 X부품 불량률 어때?", "ko")),
        ("@ai야 오늘 불량률 어때?", Question("오늘 불량률 어때?", "ko")),
        ("@ai님 불량률 알려주세요", Question("불량률 알려주세요", "ko")),
        ("@ai, what is the defect rate?", Question("what is the defect rate?", "en")),
        ("what is the defect rate, @ai?", Question("what is the defect rate, ?", "en")),
        ("(@ai) status?", Question("() status?", "en")),
        ("@ai remember\nline two", Command("remember", "line two", "en")),
    ],
)
def test_mentions_commands_and_questions(text: str, expected: object) -> None:
    assert route(msg(text), BOT) == expected


@pytest.mark.parametrize(
    "text",
    [
        "hello team",
        "x@ai remember this",  # an e-mail-like token is no mention
        "@ai-bot remember this",  # another user
        "@aim remember this",
        "@ai_x remember this",
        "@ai.bot remember this",
        "`@ai remember this`",  # inline code
        "```\n@ai remember this\n```",  # code fence
        "look: ``@ai `x` `` done",
    ],
)
def test_not_a_mention_in_a_channel(text: str) -> None:
    routed = route(msg(text), BOT)
    assert isinstance(routed, Ignore)
    assert routed.reason == "not mentioned"


def test_mention_after_code_still_counts() -> None:
    routed = route(msg("```\ncode @ai\n```\n@ai what does this do?"), BOT)
    assert routed == Question("```\ncode @ai\n```\n what does this do?", "en")


def test_mention_at_end_of_sentence_with_period() -> None:
    assert route(msg("deploy status please @ai."), BOT) == Question("deploy status please .", "en")


def test_dm_needs_no_mention_and_strips_one_if_present() -> None:
    assert route(msg("remember 주차장 B2", "D"), BOT) == Command("remember", "주차장 B2", "ko")
    assert route(msg("@ai what is up", "D"), BOT) == Question("what is up", "en")
    assert route(msg("   ", "D"), BOT) == Ignore("empty message")


@pytest.mark.parametrize("channel_type", ["O", "P", "G"])
def test_group_channels_need_a_mention(channel_type: str) -> None:
    assert isinstance(route(msg("remember x", channel_type), BOT), Ignore)
    assert route(msg("@ai remember x", channel_type), BOT) == Command("remember", "x", "en")


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"user_id": "bot1"}, "own post"),
        ({"from_bot": True}, "from a bot"),
        ({"post_type": "system_join_channel"}, "system post"),
        ({"from_webhook": True}, "webhook post"),
    ],
)
def test_ignored_authors(kw: dict[str, object], reason: str) -> None:
    assert route(msg("@ai remember x", "D", **kw), BOT) == Ignore(reason)


def test_username_with_hyphen_wins_over_shorter_alias() -> None:
    bot = BotIdentity("b", "ai-bot", ("@ai",))
    assert route(msg("@ai-bot help"), bot) == Command("help", "", "en")
    assert route(msg("@ai help"), bot) == Command("help", "", "en")


def test_korean_alias_needs_a_particle_or_boundary() -> None:
    bot = BotIdentity("b", "memorybot", ("@비서",))
    assert route(msg("@비서야 목록"), bot) == Command("memories", "", "ko")
    assert isinstance(route(msg("@비서실 목록"), bot), Ignore)


@settings(max_examples=3000, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [*"@ai -_.`~\n,!/가야님기억해 memorybot검색", "```", "@ai", "\u2028", "İ", "@memorybot"]
        ),
        max_size=40,
    ).map("".join)
    | st.text(max_size=200),
    channel_type=st.sampled_from(["O", "P", "D", "G"]),
)
def test_random_messages_never_raise(text: str, channel_type: str) -> None:
    routed = route(msg(text, channel_type), BOT)
    assert isinstance(routed, Ignore | Command | Question)
    if isinstance(routed, Command | Question):
        assert routed.lang in ("ko", "en")
