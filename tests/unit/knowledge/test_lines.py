"""The chat log of learning channels, on SQLite and PostgreSQL: masking, versions (the indexer's
backlog), the conversation around a line, retention, and the in-memory set of channels."""

from __future__ import annotations

import pytest

from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.storage import Storage

CARD = "4111111111111111"  # passes Luhn: the redaction module masks it as [REDACTED:card]

pytestmark = pytest.mark.both_dialects


def line(post_id: str, text: str, at: int, *, channel: str = "c1", root: str = "") -> Line:
    return Line(post_id=post_id, channel_id=channel, text=text, create_at=at, root_id=root, user_name="kim")


async def backlog_ids(log: ChatLog) -> list[str]:
    return [x.post_id for x in await log.backlog(100)]


async def test_record_masks_sensitive_data_before_storing(log: ChatLog, storage: Storage) -> None:
    assert await log.record([line("p1", f"법인카드 {CARD} 로 결제했습니다", 1000)]) == 1
    kept = await log.get("p1")
    assert kept is not None
    assert CARD not in kept.text and "[REDACTED:card]" in kept.text
    assert kept.text.startswith("법인카드 ") and kept.text.endswith(" 로 결제했습니다")
    # nothing raw anywhere in the table, not only in what get() returns
    rows = await storage.fetchall("SELECT * FROM knowledge_line")
    assert rows and all(CARD not in str(v) for r in rows for v in r)


async def test_a_line_with_nothing_left_after_masking_and_stripping_is_not_kept(log: ChatLog) -> None:
    assert await log.record([line("p1", "   \n ", 1000)]) == 0
    assert await log.get("p1") is None
    assert not log.has("c1")


async def test_recording_the_same_text_again_changes_nothing(log: ChatLog) -> None:
    first = line("p1", "배포는 금요일에 하지 않습니다", 1000)
    assert await log.record([first]) == 1
    [queued] = await log.backlog(10)
    await log.mark_indexed([queued])
    assert await log.backlog(10) == []
    # a catch-up re-reading the post: same text, so no write, no new version, not back in the backlog
    assert await log.record([first]) == 0
    kept = await log.get("p1")
    assert kept is not None and kept.version == 1
    assert await log.backlog(10) == [] and await log.backlog_size() == 0


async def test_a_raw_text_that_masks_to_the_stored_text_is_the_same_text(log: ChatLog) -> None:
    await log.record([line("p1", f"카드 {CARD}", 1000)])
    await log.mark_indexed(await log.backlog(10))
    other_card = "5555555555554444"  # another card number: masked alike
    assert await log.record([line("p1", f"카드 {other_card}", 1000)]) == 0
    kept = await log.get("p1")
    assert kept is not None and kept.version == 1 and await log.backlog_size() == 0


async def test_an_edit_bumps_the_version_and_puts_the_line_back_in_the_backlog(log: ChatLog) -> None:
    await log.record([line("p1", "회의는 3층에서 합니다", 1000)])
    await log.mark_indexed(await log.backlog(10))
    assert await log.backlog_size() == 0
    assert await log.record([line("p1", "회의는 5층으로 옮겼습니다", 1000)]) == 1
    [queued] = await log.backlog(10)
    assert (queued.post_id, queued.text, queued.version) == ("p1", "회의는 5층으로 옮겼습니다", 2)
    assert await log.backlog_size() == 1
    assert await log.size() == 1  # the same line, not a second one


async def test_mark_indexed_with_an_older_version_leaves_an_edited_line_in_the_backlog(log: ChatLog) -> None:
    await log.record([line("p1", "초안", 1000)])
    [being_embedded] = await log.backlog(10)  # version 1, read by the indexer
    await log.record([line("p1", "수정본", 1000)])  # edited while it was being embedded
    await log.mark_indexed([being_embedded])
    [queued] = await log.backlog(10)
    assert queued.version == 2 and queued.text == "수정본"
    await log.mark_indexed([queued])
    assert await log.backlog(10) == []


async def test_mark_indexed_never_moves_the_indexed_version_back(log: ChatLog) -> None:
    await log.record([line("p1", "초안", 1000)])
    [v1] = await log.backlog(10)
    await log.record([line("p1", "수정본", 1000)])
    [v2] = await log.backlog(10)
    await log.mark_indexed([v2])
    await log.mark_indexed([v1])  # a late, older mark
    assert await log.backlog(10) == []


async def test_backlog_is_newest_first_and_backlog_in_channel_only_of_its_channel(
    log: ChatLog,
) -> None:
    await log.record(
        [
            line("p3", "셋", 3000),
            line("p1", "하나", 1000),
            line("x2", "다른 채널", 2000, channel="c2"),
            line("p2", "둘", 2500),
        ]
    )
    # newest first: what was just said is what people ask about
    assert await backlog_ids(log) == ["p3", "p2", "x2", "p1"]
    assert [x.post_id for x in await log.backlog(2)] == ["p3", "p2"]
    assert [x.post_id for x in await log.backlog_in_channel("c1", 10)] == ["p3", "p2", "p1"]


async def test_a_replys_window_is_its_root_and_the_replies_around_it_in_its_thread(
    log: ChatLog,
) -> None:
    await log.record(
        [
            line("root", "배포 일정 정리합니다", 1000),
            line("top2", "점심 뭐 먹죠", 1500),  # top-level, nearer in time than the root
            line("r1", "월요일 가능", 2000, root="root"),
            line("r2", "화요일도 가능", 3000, root="root"),
            line("r3", "그럼 화요일로", 4000, root="root"),
            line("r4", "확정", 5000, root="root"),
            line("other", "다른 스레드 답글", 4500, root="top2"),
        ]
    )
    r3 = await log.get("r3")
    assert r3 is not None
    # the root always (not top2, nearer in time), then the thread's replies; never "other" (4500),
    # a reply of another thread
    assert [x.post_id for x in await log.window(r3, 1, 1)] == ["root", "r2", "r3", "r4"]
    assert [x.post_id for x in await log.window(r3, 2, 1)] == ["root", "r1", "r2", "r3", "r4"]
    r1 = await log.get("r1")
    assert r1 is not None
    assert [x.post_id for x in await log.window(r1, 1, 2)] == ["root", "r1", "r2", "r3"]


async def test_a_top_level_posts_window_is_the_channels_top_level_posts_and_its_own_replies(
    log: ChatLog,
) -> None:
    await log.record(
        [
            line("t1", "첫 글", 1000),
            line("t1r", "첫 글의 답글", 1900, root="t1"),
            line("t2", "둘째 글", 3000),
            line("t2r", "둘째 글의 답글", 3100, root="t2"),
            line("elsewhere", "다른 채널의 글", 3500, channel="c2"),
            line("t3", "셋째 글", 5000),
        ]
    )
    t2 = await log.get("t2")
    assert t2 is not None
    # t1's reply and other channels never; t2's own reply (what answered it) is in
    assert [x.post_id for x in await log.window(t2, 1, 1)] == ["t1", "t2", "t2r", "t3"]
    assert [x.post_id for x in await log.window(t2, 5, 5)] == ["t1", "t2", "t2r", "t3"]
    assert [x.post_id for x in await log.window(t2, 0, 0)] == ["t2"]


async def test_older_than_and_remove(log: ChatLog) -> None:
    await log.record(
        [line("old1", "옛날 글", 1000), line("old2", "옛날 글 둘", 2000), line("new", "새 글", 9000)]
    )
    assert sorted(await log.older_than(5000)) == ["old1", "old2"]
    assert len(await log.older_than(5000, limit=1)) == 1
    assert await log.older_than(1000) == []  # strictly older
    assert sorted(await log.remove(["old1", "old2", "never-there"])) == ["old1", "old2"]
    assert await log.get("old1") is None and await log.get("new") is not None
    assert await log.older_than(5000) == []
    assert await log.remove([]) == []
    assert await log.present(["old1", "new"]) == {"new"}


async def test_has_dropped_and_load_keep_the_set_of_channels_with_lines(
    storage: Storage, log: ChatLog
) -> None:
    assert not log.has("c1")
    await log.record([line("p1", "안녕하세요", 1000), line("q1", "반갑습니다", 1000, channel="c2")])
    assert log.has("c1") and log.has("c2") and not log.has("c3")
    reloaded = await ChatLog(storage).load()  # a restart: the set comes back from the table
    assert reloaded.has("c1") and reloaded.has("c2") and not reloaded.has("c3")
    await log.remove(["p1"])
    log.dropped("c1")
    assert not log.has("c1") and log.has("c2")
    assert not (await ChatLog(storage).load()).has("c1")
    assert await log.of_channel("c2") == ["q1"]


async def test_in_channel_since_a_time_oldest_first(log: ChatLog) -> None:
    await log.record([line("a", "가", 3000), line("b", "나", 1000), line("c", "다", 2000, channel="c2")])
    assert [x.post_id for x in await log.in_channel("c1")] == ["b", "a"]
    assert [x.post_id for x in await log.in_channel("c1", since_ms=2000)] == ["a"]
