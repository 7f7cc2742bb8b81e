"""The background indexer on the real embedded engine: it empties the backlog, never brings back a
line deleted while it was being embedded, embeds an edit made meanwhile, expires old lines, and a
batch that fails is retried by the supervisor with nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.memory.store import AnyStore, Memory
from mchat_bot.net.retry import RetryPolicy
from mchat_bot.supervisor import Supervisor

SITE = "http://mm.local:8065"
FAST = RetryPolicy(first_delay=0.01, max_delay=0.02, tries=None)
DAY_MS = 86_400_000

MEETING = "백엔드 주간회의는 매주 월요일 오전 10시에 3층 소회의실에서 합니다."
LUNCH = "오늘 점심은 김치찌개로 정했습니다."


class EngineDown(RuntimeError):
    pass


class Hooked:
    """The real store, with something done just before ``add_embedded`` reaches it: ``fail`` calls
    raise first, then ``before_add`` runs (once), then the real upsert."""

    def __init__(self, store: AnyStore, *, fail: int = 0) -> None:
        self._store = store
        self.fail = fail
        self.adds = 0
        self.before_add: Callable[[], Awaitable[None]] | None = None

    async def add_embedded(self, items: list[tuple[Memory, list[float]]]) -> None:
        self.adds += 1
        if self.fail:
            self.fail -= 1
            raise EngineDown("engine down")
        hook, self.before_add = self.before_add, None
        if hook is not None:
            await hook()
        await self._store.add_embedded(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def line(post_id: str, text: str, at: int, *, channel: str = "c1") -> Line:
    return Line(post_id=post_id, channel_id=channel, text=text, create_at=at, user_name="kim")


def now_ms() -> int:
    return int(time.time() * 1000)


async def _until(cond: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():  # noqa: ASYNC110 (a condition on the database, no event to wait for)
            await asyncio.sleep(0.01)


async def test_drain_embeds_the_backlog_in_batches_and_empties_it(log: ChatLog, messages: AnyStore) -> None:
    at = now_ms()
    await log.record([line(f"p{i}", f"{i}번째 안내: {LUNCH}", at + i) for i in range(3)])
    indexer = Indexer(log, MessageIndex(messages, log, SITE), batch=2)
    assert await indexer.step() == 2  # one batch, newest first
    assert [x.post_id for x in await log.backlog(10)] == ["p0"]
    assert await indexer.drain() == 1
    assert await indexer.step() == 0
    assert indexer.indexed == 3 and await log.backlog_size() == 0
    assert await messages.count() == 3


async def test_a_line_deleted_while_being_embedded_does_not_come_back(
    log: ChatLog, messages: AnyStore
) -> None:
    at = now_ms()
    await log.record([line("meet", MEETING, at), line("lunch", LUNCH, at + 1)])
    hooked = Hooked(messages)
    index = MessageIndex(hooked, log, SITE)  # type: ignore[arg-type]

    async def deleted_meanwhile() -> None:  # the follower applies the post's deletion mid-batch
        assert await index.forget(["meet"]) == 1

    hooked.before_add = deleted_meanwhile
    # lunch twice: once in the batch, again without the deleted line as its context
    assert await Indexer(log, index).drain() == 3
    assert await messages.get("meet") is None  # the upsert that followed the deletion is undone
    kept = await messages.get("lunch")
    assert kept is not None and MEETING not in kept.text
    assert await log.get("meet") is None and await log.backlog_size() == 0
    hits = await index.search("백엔드 회의는 몇 시에 해?", "c1", 5)
    assert "meet" not in {h.memory.id for h in hits}


async def test_an_edit_made_while_being_embedded_is_embedded_next(log: ChatLog, messages: AnyStore) -> None:
    at = now_ms()
    await log.record([line("meet", MEETING, at)])
    hooked = Hooked(messages)
    edited = MEETING.replace("3층", "5층")

    async def edited_meanwhile() -> None:
        assert await log.record([line("meet", edited, at)]) == 1

    hooked.before_add = edited_meanwhile
    indexer = Indexer(log, MessageIndex(hooked, log, SITE))  # type: ignore[arg-type]
    assert await indexer.drain() == 2  # the first version, then the edit
    kept = await messages.get("meet")
    assert kept is not None and kept.body == edited and "5층" in kept.text
    assert await log.backlog_size() == 0


async def test_expire_deletes_lines_older_than_the_retention_from_log_and_index(
    log: ChatLog, messages: AnyStore
) -> None:
    at = now_ms()
    await log.record([line("old", MEETING, at - 40 * DAY_MS), line("new", LUNCH, at - DAY_MS)])
    index = MessageIndex(messages, log, SITE)
    indexer = Indexer(log, index, retention_days=30)
    await indexer.drain()
    assert await indexer.expire() == 1
    assert await log.get("old") is None and await messages.get("old") is None
    assert await log.get("new") is not None and await messages.get("new") is not None
    assert indexer.expired == 1
    assert await indexer.expire() == 0
    assert "old" not in {h.memory.id for h in await index.search("백엔드 회의", "c1", 5)}


async def test_a_failed_batch_raises_from_step_and_nothing_is_lost(log: ChatLog, messages: AnyStore) -> None:
    await log.record([line("meet", MEETING, now_ms())])
    hooked = Hooked(messages, fail=1)
    indexer = Indexer(log, MessageIndex(hooked, log, SITE))  # type: ignore[arg-type]
    with pytest.raises(EngineDown):
        await indexer.step()
    assert await log.backlog_size() == 1 and indexer.indexed == 0  # still to be embedded
    assert await indexer.step() == 1
    assert await messages.get("meet") is not None


async def test_under_the_supervisor_a_crashed_indexer_restarts_and_the_line_gets_searchable(
    log: ChatLog, messages: AnyStore
) -> None:
    await log.record([line("meet", MEETING, now_ms())])
    hooked = Hooked(messages, fail=1)
    index = MessageIndex(hooked, log, SITE)  # type: ignore[arg-type]
    indexer = Indexer(log, index)
    sup = Supervisor(policy=FAST)
    sup.start("knowledge-indexer", indexer.run)
    try:

        async def embedded() -> bool:
            return await log.backlog_size() == 0

        await _until(embedded)
        state = sup.parts["knowledge-indexer"]
        assert state.restarts == 1 and state.last_error == "EngineDown: engine down"
        assert hooked.adds == 2
        hits = await index.search("백엔드 회의는 몇 시에 해?", "c1", 5)
        assert [h.memory.id for h in hits] == ["meet"]
        assert hits[0].memory.text != hits[0].memory.body  # from the index, not the keyword backlog
        # and it keeps running: a new line is embedded once the indexer is woken
        await log.record([line("lunch", LUNCH, now_ms())])
        indexer.wake()
        await _until(embedded)
        assert sup.parts["knowledge-indexer"].running and state.restarts == 1
        assert await messages.get("lunch") is not None
    finally:
        await sup.stop()


async def test_a_line_is_embedded_again_when_the_line_after_it_arrives(
    log: ChatLog, messages: AnyStore
) -> None:
    at = now_ms()
    indexer = Indexer(log, MessageIndex(messages, log, SITE))
    await log.record([line("q", "회의실 예약은 어디서 하나요?", at)])
    assert await indexer.drain() == 1  # alone: nothing came after it yet
    await log.record([line("a", "그룹웨어 예약 메뉴에서 하시면 됩니다.", at + 1000)])
    assert await indexer.step() == 1  # the answer, which puts its question back in the backlog
    assert [x.post_id for x in await log.backlog(10)] == ["q"]
    assert await indexer.drain() == 1 and await log.backlog_size() == 0
    assert await indexer.drain() == 0  # once: an embedded-again line does not requeue others
