"""What a message's indexed text holds: speaker, date, its conversation around it, and no more."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

from mchat_bot.knowledge.documents import (
    DEFAULT_MAX_GAP_S,
    ChatLine,
    Recipe,
    format_date,
    index_text,
    keyword_text,
    neighbours,
)

T0 = 1683554160.0  # 8 May 2023, 13:56 UTC


def line(pid: str, text: str, at: float, user: str = "ann", root: str = "") -> ChatLine:
    return ChatLine(post_id=pid, channel_id="c1", user_name=user, text=text, create_at=at, root_id=root)


def test_speaker_and_date_head_the_message() -> None:
    text = index_text(line("p1", "the deploy moved to Friday", T0), [], [])
    assert text == "[8 May 2023] ann: the deploy moved to Friday"


def test_date_is_in_the_channel_time_zone() -> None:
    late = T0 + 11 * 3600  # 00:56 on 9 May in UTC
    assert format_date(late, UTC) == "9 May 2023"
    assert format_date(late, timezone(timedelta(hours=-5))) == "8 May 2023"


def test_recipe_can_leave_out_speaker_and_date() -> None:
    text = index_text(line("p1", "hello", T0), [], [], recipe=Recipe(speaker=False, date=False))
    assert text == "hello"


def test_context_follows_the_message_in_time_order() -> None:
    q = line("p1", "How was the support group?", T0, "mel")
    a = line("p2", "I went yesterday, it was so powerful", T0 + 1, "caroline")
    nxt = line("p3", "So glad to hear it", T0 + 2, "mel")
    text = index_text(a, [q], [nxt])
    own, ctx = text.split("\n")
    assert own == "[8 May 2023] caroline: I went yesterday, it was so powerful"
    assert ctx == "Context: mel: How was the support group? | mel: So glad to hear it"


def test_context_is_bounded() -> None:
    long = "word " * 2000
    lines = [line(f"p{i}", long, T0 + i) for i in range(7)]
    recipe = Recipe(before=2, after=2, context_chars=100, own_chars=500)
    text = index_text(lines[3], lines[:3], lines[4:], recipe=recipe)
    own, ctx = text.split("\n")
    assert len(own) <= len("[8 May 2023] ann: ") + 500
    assert ctx.count("ann:") == 4  # at most 2 before and 2 after, whatever is passed
    assert len(text) < 1200
    assert own.endswith("…")


def test_top_level_neighbours_stop_at_a_silence() -> None:
    lines = [
        line("a", "yesterday's topic", T0 - DEFAULT_MAX_GAP_S - 60),
        line("b", "first", T0),
        line("c", "second", T0 + 30),
        line("d", "tomorrow's topic", T0 + 30 + DEFAULT_MAX_GAP_S + 60),
    ]
    before, after = neighbours(lines, 1, 2, 2)
    assert before == []
    assert [x.post_id for x in after] == ["c"]
    before, after = neighbours(lines, 2, 2, 2)
    assert [x.post_id for x in before] == ["b"] and after == []


def test_a_reply_includes_its_root_and_its_thread_only() -> None:
    lines = [
        line("root", "Which DB for the new service?", T0, "kim"),
        line("other", "lunch anyone?", T0 + 5, "lee"),
        line("r1", "Postgres, I think", T0 + 10, "park", root="root"),
        line("r2", "agreed, with pgvector", T0 + 20, "kim", root="root"),
        line("r3", "I'll set it up", T0 + 30, "park", root="root"),
    ]
    before, after = neighbours(lines, 3, 1, 1)
    assert [x.post_id for x in before] == ["root", "r1"]
    assert [x.post_id for x in after] == ["r3"]
    text = index_text(lines[3], before, after, recipe=Recipe(before=1, after=1))
    assert "Which DB for the new service?" in text
    assert "lunch" not in text


def test_the_root_is_kept_when_earlier_replies_fill_the_window() -> None:
    root = line("root", "Which DB?", T0)
    replies = [line(f"r{i}", f"reply {i}", T0 + i, root="root") for i in range(1, 5)]
    before, after = neighbours([root, *replies], 4, 1, 1)
    text = index_text(replies[-1], before, after, recipe=Recipe(before=1, after=1))
    assert "Which DB?" in text and "reply 3" in text and "reply 1" not in text


def test_a_thread_root_takes_its_replies_as_context() -> None:
    lines = [
        line("root", "Which DB?", T0),
        line("other", "lunch anyone?", T0 + 5),
        line("r1", "Postgres", T0 + 10, root="root"),
    ]
    before, after = neighbours(lines, 0, 1, 1)
    assert before == [] and [x.post_id for x in after] == ["r1"]
    before, after = neighbours(lines, 1, 1, 1)  # replies are not the channel's flow
    assert [x.post_id for x in before] == ["root"] and after == []


def test_no_neighbours_asked_gives_none() -> None:
    lines = [line("a", "x", T0), line("b", "y", T0 + 1), line("c", "z", T0 + 2)]
    assert neighbours(lines, 1, 0, 0) == ([], [])
    assert index_text(lines[1], lines[:1], lines[2:], recipe=Recipe(before=0, after=0)).count("\n") == 0


def test_keyword_text_is_the_dated_line_alone_and_heads_the_index_text() -> None:
    q = line("p1", "How was the support group?", T0, "mel")
    a = line("p2", "I went yesterday", T0 + 1, "caroline")
    assert keyword_text(a) == "[8 May 2023] caroline: I went yesterday"
    assert index_text(a, [q], []).startswith(keyword_text(a) + "\n")
    assert "support group" not in keyword_text(a)
