"""The message index on the real embedded engine with the real embedder: a channel's lines are
found by meaning once embedded, by keywords while they wait, and never from another channel."""

from __future__ import annotations

import asyncio

import pytest

from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.memory.embedder import Embedder
from mchat_bot.memory.relevance import coverage, keywords
from mchat_bot.memory.store import AnyStore

SITE = "http://mm.local:8065"
AT = 1_700_000_000_000  # 14 November 2023, in ms

MEETING = "백엔드 주간회의는 매주 월요일 오전 10시에 3층 소회의실에서 합니다."
LUNCH = "오늘 점심은 김치찌개로 정했습니다."
PASSWORD = "스테이징 서버 비밀번호는 90일마다 바뀝니다."


@pytest.fixture
def index(messages: AnyStore, log: ChatLog) -> MessageIndex:
    return MessageIndex(messages, log, SITE + "/")


def line(post_id: str, text: str, at: int = AT, *, channel: str = "c1", root: str = "") -> Line:
    return Line(
        post_id=post_id,
        channel_id=channel,
        text=text,
        create_at=at,
        team_id="t1",
        root_id=root,
        user_id="u-kim",
        user_name="kim",
    )


async def test_an_embedded_line_is_found_by_a_paraphrase_in_its_channel_only(
    index: MessageIndex, log: ChatLog
) -> None:
    # the lunch line is a reply to a root never learned, so neither line is the other's context:
    # two neighbours each indexed with the other's text tie in the keyword half of the search
    await log.record(
        [
            line("meet", MEETING, AT),
            line("lunch", LUNCH, AT + 1000, root="not-learned"),
            line("pw", PASSWORD, AT + 2000, channel="c2"),
            line("lunch2", "점심 메뉴 투표는 오전에 마감합니다.", AT + 3000, channel="c2"),
        ]
    )
    assert await Indexer(log, index).drain() == 4
    assert await log.backlog_size() == 0
    hits = await index.search("백엔드 회의는 몇 시에 어디서 해?", "c1", 5)
    assert {h.memory.channel_id for h in hits} == {"c1"}
    [top] = [h.memory for h in hits if h.memory.id == "meet"]  # its rank: see the ranking test below
    assert top.shown == MEETING and top.body == MEETING  # the line itself, not its context
    assert top.text == f"[14 November 2023] kim: {MEETING}"  # its keywords: the dated, attributed line
    assert top.permalink == f"{SITE}/_redirect/pl/meet" and top.is_message
    # the same question (and c1's exact words) asked in another channel never reach c1's lines
    for query in ("백엔드 회의는 몇 시에 어디서 해?", MEETING, LUNCH):
        hits2 = await index.search(query, "c2", 5)
        assert hits2, "c2 has lines of its own"
        assert {h.memory.id for h in hits2} <= {"pw", "lunch2"}
    assert await index.search(MEETING, "c3", 5) == []  # a channel with no lines at all
    assert await index.search("   ", "c1", 5) == []
    assert await index.search(MEETING, "", 5) == []


async def test_a_line_not_embedded_yet_is_found_by_its_keywords(index: MessageIndex, log: ChatLog) -> None:
    await log.record([line("lunch", LUNCH), line("other", LUNCH, channel="c2"), line("meet", MEETING)])
    hits = await index.search("점심 김치찌개", "c1", 5)
    assert [h.memory.id for h in hits] == ["lunch"]  # not c2's copy, not the unrelated line
    # a keyword hit scores its share of the query's keywords (there is no cosine yet)
    assert hits[0].score == coverage(keywords("점심 김치찌개"), LUNCH) >= 0.5
    assert hits[0].memory.shown == LUNCH and hits[0].memory.channel_id == "c1"
    assert await index.search("배포 일정 공유", "c1", 5) == []  # no shared words, nothing
    assert [h.memory.id for h in await index.search("점심 김치찌개", "c2", 5)] == ["other"]


async def test_an_embedded_line_is_not_found_twice_with_its_backlog_copy(
    index: MessageIndex, log: ChatLog
) -> None:
    await log.record([line("lunch", LUNCH)])
    await Indexer(log, index).drain()
    await log.record([line("lunch", LUNCH + " 맛있었습니다.")])  # edited: back in the backlog
    hits = await index.search("점심 김치찌개", "c1", 5)
    assert [h.memory.id for h in hits] == ["lunch"]


async def test_forget_removes_a_line_from_search_and_the_log(
    index: MessageIndex, log: ChatLog, messages: AnyStore
) -> None:
    await log.record([line("meet", MEETING), line("lunch", LUNCH, AT + 1000)])
    await Indexer(log, index).drain()
    assert await index.forget(["meet", "never-there"]) == 1
    assert await log.get("meet") is None and await messages.get("meet") is None
    hits = await index.search("백엔드 회의는 몇 시에 해?", "c1", 5)
    assert "meet" not in {h.memory.id for h in hits}
    assert [h.memory.id for h in hits] == ["lunch"]
    assert await index.forget([]) == 0


async def test_forget_channel_removes_all_of_its_lines_and_nothing_else(
    index: MessageIndex, log: ChatLog, messages: AnyStore
) -> None:
    await log.record(
        [line("meet", MEETING), line("lunch", LUNCH, AT + 1000), line("pw", PASSWORD, channel="c2")]
    )
    await Indexer(log, index).drain()
    await log.record([line("late", "아직 임베딩 안 된 글", AT + 2000)])  # in the backlog only
    assert await index.forget_channel("c1") == 3
    assert await log.of_channel("c1") == [] and not log.has("c1")
    assert await messages.get("meet") is None and await messages.get("lunch") is None
    assert await index.search("백엔드 회의", "c1", 5) == []
    assert await index.search("아직 임베딩", "c1", 5) == []
    assert [h.memory.id for h in await index.search("스테이징 비밀번호", "c2", 5)] == ["pw"]
    assert log.has("c2") and await messages.count() == 1


async def test_the_document_of_a_reply_carries_its_root_and_the_next_reply(
    index: MessageIndex, log: ChatLog
) -> None:
    await log.record(
        [
            line("root", "배포 일정 정해 주세요", AT),
            line("r1", "월요일 가능", AT + 1000, root="root"),
            line("r2", "화요일도 가능", AT + 2000, root="root"),
            line("r3", "화요일로 확정", AT + 3000, root="root"),
        ]
    )
    r2 = await log.get("r2")
    assert r2 is not None
    doc, embedded = await index.document(r2)
    # embedded: the dated line, then its root, the reply before it and the one after it
    assert embedded == (
        "[14 November 2023] kim: 화요일도 가능\n"
        "Context: kim: 배포 일정 정해 주세요 | kim: 월요일 가능 | kim: 화요일로 확정"
    )
    assert doc.text == "[14 November 2023] kim: 화요일도 가능"  # keywords: the line alone
    assert doc.body == "화요일도 가능" and doc.id == "r2" and doc.source_post_id == "r2"
    assert (doc.scope, doc.channel_id, doc.team_id, doc.user_id) == ("channel", "c1", "t1", "u-kim")
    assert doc.created_at == (AT + 2000) / 1000


async def test_the_line_that_answers_ranks_above_a_newer_unrelated_line(
    index: MessageIndex, log: ChatLog
) -> None:
    await log.record([line("meet", MEETING, AT), line("lunch", LUNCH, AT + 1000, root="not-learned")])
    await Indexer(log, index).drain()
    hits = await index.search("백엔드 회의는 몇 시에 어디서 해?", "c1", 5)
    assert hits[0].memory.id == "meet", [(h.memory.id, round(h.score, 3)) for h in hits]


async def test_a_deleted_line_leaves_no_trace_in_its_neighbours_documents(
    index: MessageIndex, log: ChatLog, messages: AnyStore
) -> None:
    deleted = "새 협력사 단가표는 다음 주 화요일에 공개합니다."
    await log.record(
        [line("before", LUNCH, AT), line("gone", deleted, AT + 1000), line("after", MEETING, AT + 2000)]
    )
    await Indexer(log, index).drain()
    await index.forget(["gone"])
    assert await Indexer(log, index).drain() == 2  # both neighbours, embedded again without it
    for post_id in ("before", "after"):
        kept = await messages.get(post_id)
        assert kept is not None and deleted not in kept.text, post_id


async def test_a_waiting_line_with_every_word_of_the_question_comes_before_the_index(
    index: MessageIndex, log: ChatLog
) -> None:
    await log.record([line("meet", MEETING, AT)])
    await Indexer(log, index).drain()
    await log.record([line("lunch", LUNCH, AT + 1000)])  # just said, not embedded yet
    query = "점심은 김치찌개로"
    assert coverage(keywords(query), LUNCH) == 1.0
    hits = await index.search(query, "c1", 5)
    assert [h.memory.id for h in hits] == ["lunch", "meet"]
    assert hits[0].score == 1.0 and hits[0].memory.text == LUNCH
    assert [h.memory.id for h in await index.search(query, "c1", 1)] == ["lunch"]


async def test_background_embedding_waits_while_a_question_waits_for_the_model(
    index: MessageIndex, log: ChatLog, embedder: Embedder
) -> None:
    await log.record([line("meet", MEETING, AT)])
    waiting = await log.backlog(1)
    embedder.waiting_queries += 1  # type: ignore[attr-defined]  # a question holds the model
    try:
        adding = asyncio.create_task(index.add(waiting))
        await asyncio.sleep(0.3)
        assert not adding.done()  # the line waits for the question, not the other way round
    finally:
        embedder.waiting_queries -= 1  # type: ignore[attr-defined]
    await asyncio.wait_for(adding, 10)
    assert (await index.store.get("meet")) is not None
