"""The audit step writes one row per handled message, with the memory ids the reply names and an
outcome read from the reply (never from its text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mchat_bot.llm import LLM
from mchat_bot.memory.embedder import Embedder, load_embedder
from mchat_bot.memory.store import EdgeMemoryStore
from mchat_bot.pipeline.audit import Audit
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.steps.audit import AuditStep
from mchat_bot.pipeline.texts import short_id
from mchat_bot.pipeline.turn import Chain
from mchat_bot.pipeline.workers import WorkerPool
from mchat_bot.storage import Storage
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder("default")


@pytest.fixture
async def store(tmp_path: Path, embedder: Embedder) -> AsyncIterator[EdgeMemoryStore]:
    s = EdgeMemoryStore(tmp_path / "mem", embedder)
    yield s
    await s.close()


async def run(
    inbox: Inbox, chat: FakeChat, handlers: Handlers, audit: Audit, *texts: str, first: int = 0
) -> None:
    """Each text as the post ``p<first + i>``, one after the other, until its reply is posted."""
    chain = Chain([AuditStep(audit)], handlers)
    async with WorkerPool(inbox, chain, ReplyWriter(chat, inbox), BOT, poll_interval=0.05):  # type: ignore[arg-type]
        for i, text in enumerate(texts, first):
            await inbox.put(message(f"p{i}", text, at=i, root="p0" if i else ""))
            await until(lambda i=i: chat.replies_to(f"p{i}"), within=20)


async def test_rows_name_the_memory_stored_then_forgotten(
    storage: Storage, inbox: Inbox, store: EdgeMemoryStore
) -> None:
    audit = Audit(storage)
    chat = FakeChat()
    handlers = Handlers(store, None, BOT, "http://mm")
    await run(inbox, chat, handlers, audit, "@ai remember 배포는 금요일 오후 3시")
    rows = await audit.query()
    [remembered] = rows
    assert remembered.action == "remember" and remembered.outcome == "ok" and remembered.post_id == "p0"
    [memory_id] = remembered.memory_ids
    assert (await store.get(memory_id)) is not None
    assert remembered.detail == ""  # a remembered text is not kept in the audit log

    await run(
        inbox,
        chat,
        handlers,
        audit,
        f"@ai forget {short_id(memory_id)}",
        "@ai forget nothing-like-it",
        first=1,
    )
    rows = await audit.query()
    forgot = next(r for r in rows if r.post_id == "p1")
    assert forgot.action == "forget" and forgot.outcome == "ok" and forgot.memory_ids == (memory_id,)
    nothing = next(r for r in rows if r.post_id == "p2")
    assert nothing.outcome == "no_change"
    assert await store.get(memory_id) is None


async def test_an_answer_the_model_could_not_give_is_an_llm_error_row(
    storage: Storage, inbox: Inbox, store: EdgeMemoryStore, unused_tcp_port: int
) -> None:
    audit = Audit(storage)
    chat = FakeChat()
    dead = LLM("openai/none", f"http://127.0.0.1:{unused_tcp_port}/v1", "k", timeout=2.0, retry_base=0.01)
    try:
        await run(inbox, chat, Handlers(store, dead, BOT, "http://mm"), audit, "@ai 배포는 언제야?")
    finally:
        await dead.aclose()
    [row] = await audit.query()
    assert row.action == "answer" and row.outcome == "llm_error"
    assert row.detail == "배포는 언제야?"
