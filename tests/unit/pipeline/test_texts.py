"""Reply texts and long-message splitting."""

from __future__ import annotations

from datetime import timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from mchat_bot.memory.store import Hit, Memory
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.replying import MAX_POST_CHARS, split_message
from mchat_bot.pipeline.router import detect_lang

KST = timezone(timedelta(hours=9))
TS = 1795564800.0  # 2026-11-25 00:00 KST


def mem(text: str = "X부품 불량률 12%", **kw: object) -> Memory:
    base: dict[str, object] = {
        "id": "01JABCDEFGHJKMNPQRSTVWXYZ0",
        "text": text,
        "channel_id": "c1",
        "team_id": "t1",
        "user_id": "u1",
        "user_name": "김과장",
        "permalink": "http://mm/_redirect/pl/p1",
        "created_at": TS,
    }
    base.update(kw)
    return Memory(**base)  # type: ignore[arg-type]


def test_detect_lang() -> None:
    assert detect_lang("X부품 불량률") == "ko"
    assert detect_lang("defect rate 12%") == "en"
    assert detect_lang("") == "en"


def test_remembered_seed_format_ko_and_en() -> None:
    assert texts.format_remembered(mem(), "ko") == (
        "#### 🧠 메모리 저장됨\n- **내용:** X부품 불량률 12%\n- **범위:** 이 채팅방\n- **카테고리:** fact\n"
        f"- **ID:** `{mem().id}`"
    )
    assert texts.format_remembered(mem("deploy on Friday"), "en") == (
        "#### 🧠 Memory saved\n- **Content:** deploy on Friday\n"
        f"- **Scope:** this channel\n- **Category:** fact\n- **ID:** `{mem().id}`"
    )


def test_source_line() -> None:
    line = texts.format_source(1, mem(), "ko", channel_name="품질검사", tz=KST)
    assert line == "[1] 김과장, 2026-11-25, #품질검사 (http://mm/_redirect/pl/p1)"


def test_search_shows_short_ids_and_scores() -> None:
    out = texts.format_search("불량률", [Hit(mem(), 0.8312)], "ko", KST)
    assert "`XYZ0`" not in out and "`TVWXYZ0`" not in out
    assert "`RSTVWXYZ0`"[2:] in out  # the last 8 characters of the id
    assert "(0.83)" in out and "X부품 불량률 12%" in out
    assert "맞는 메모리가 없습니다" in texts.format_search("nothing", [], "ko")
    assert "No memories match" in texts.format_search("nothing", [], "en")


def test_cited_numbers() -> None:
    assert texts.cited_numbers("a [2] b [1] c [2] d [9]", 3) == [1, 2]
    assert texts.cited_numbers("no citation", 3) == []


def test_short_message_is_one_part() -> None:
    assert split_message("hello") == ["hello"]
    text = "가" * MAX_POST_CHARS
    assert split_message(text) == [text]


def test_long_answer_splits_on_paragraphs_under_the_limit() -> None:
    paragraphs = [f"문단 {i} " + "내용 " * 300 for i in range(40)]
    text = "\n\n".join(paragraphs)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= MAX_POST_CHARS for p in parts)
    # every part ends at a paragraph end, so no paragraph is cut
    for p in parts:
        assert p.endswith("내용")
    assert "".join(parts).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_code_fence_is_closed_and_reopened() -> None:
    code = "\n".join(f"print({i})" for i in range(400))
    text = "Here is the code:\n\n```python\n" + code + "\n```\nDone."
    parts = split_message(text, limit=500)
    assert len(parts) > 3
    for p in parts:
        assert len(p) <= 500
        assert p.count("```") % 2 == 0, p  # balanced in every part
    assert parts[1].startswith("```python\n")
    assert parts[-1].endswith("Done.")


def test_single_huge_line_is_cut() -> None:
    parts = split_message("x" * 40000)
    assert [len(p) for p in parts] == [16383, 16383, 7234]


@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(["```", "```py", "~~~", "\n", "\n\n", "word ", "긴문장 ", "x" * 50, "`", " "]),
        max_size=300,
    ).map("".join),
    limit=st.integers(min_value=40, max_value=400),
)
def test_split_properties(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(0 < len(p) <= limit for p in parts) or parts == [text]
    # nothing is lost except whitespace and the fence lines added at the cuts
    joined = "".join(parts)
    for ch in set(text) - set(" \n`~"):
        assert joined.count(ch) >= text.count(ch)
