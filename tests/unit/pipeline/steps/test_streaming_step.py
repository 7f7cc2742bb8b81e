"""The streaming step through the chain: only the answer goes through the turn's stream (the
extraction call the same handler makes does not), and the thread ends with one post per part
showing the complete answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM
from mchat_bot.memory.embedder import load_embedder
from mchat_bot.memory.store import EdgeMemoryStore
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.steps.streaming import MARKER, Streams
from mchat_bot.pipeline.turn import Chain
from mchat_bot.pipeline.workers import WorkerPool
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until

ANSWER = " ".join(f"단어{i}" for i in range(40))


def reply(messages: list[dict[str, Any]]) -> str:
    system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    return ANSWER if "Memories:" in system else json.dumps({"facts": []})


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        server.reply_with(reply)
        server.stream_delay(0.02)
        yield server


async def test_only_the_answer_is_streamed_and_the_thread_ends_complete(
    tmp_path: Path, inbox: Inbox, fake: FakeLLM
) -> None:
    store = EdgeMemoryStore(tmp_path / "mem", load_embedder("default"))
    llm = LLM("openai/fake", f"{fake.url}/v1", "k", timeout=5.0, retry_base=0.01)
    chat = FakeChat()
    writer = ReplyWriter(chat, inbox, edit_sent_parts=True)  # type: ignore[arg-type]
    streams = Streams(chat, writer, interval=0.05, first_post_after=0.0)  # type: ignore[arg-type]
    handlers = Handlers(store, llm, BOT, "http://mm", extract_channels=["c1"])
    try:
        async with WorkerPool(inbox, Chain([streams], handlers), writer, BOT, poll_interval=0.05):
            await inbox.put(message("p1", "@ai 우리 배포는 언제 해요?"))
            await until(lambda: _done(inbox), within=20)
    finally:
        await llm.aclose()
        await store.close()
    streamed = [bool(r.get("stream")) for r in fake.requests]
    assert streamed.count(True) == 1 and len(streamed) == 2  # the answer streamed, the extraction not
    [post] = chat.replies_to("p1")
    assert post["message"].startswith(ANSWER) and MARKER not in post["message"]
    assert post["pending_post_id"] == "mchat-p1-0"
    assert chat.edits.count(post["id"]) >= 2  # written while the model wrote, then finished


async def _done(inbox: Inbox) -> bool:
    return await inbox.state("p1") == "done"
