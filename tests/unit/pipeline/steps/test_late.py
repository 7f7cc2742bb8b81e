"""The late note: an answer given long after its question starts by saying why (caught up after an
outage, or queued behind many questions), once, in the asker's language: in the first part only,
from a stream's first edit on, and never on a prompt answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.steps.late import LateNote
from mchat_bot.pipeline.steps.streaming import MARKER, Streams
from mchat_bot.pipeline.turn import Chain, Step, Turn
from mchat_bot.pipeline.workers import WorkerPool
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until

NOW = 1_800_000_000.0
LATE_NOTE_KO = texts.late_note("ko", 600)
ANSWER = " ".join(f"word{i}" for i in range(60))


def ms_ago(seconds: float) -> int:
    return int((NOW - seconds) * 1000)


def late(after: float = 120.0) -> LateNote:
    return LateNote(after, clock=lambda: NOW)


async def answer(turn: Turn) -> Reply:
    return Reply("an answer", Outcome.ANSWERED)


async def run(chat: FakeChat, inbox: Inbox, steps: list[Step], *posts: Any, handler: Any = answer) -> None:
    writer = ReplyWriter(chat, inbox, edit_sent_parts=True, limit=200)  # type: ignore[arg-type]
    async with WorkerPool(inbox, Chain(steps, handler), writer, BOT, poll_interval=0.05):
        for post in posts:
            await inbox.put(post)
        await until(lambda: all(chat.replies_to(p.post_id) for p in posts), within=10)


def test_the_note_says_how_long_ago_in_the_askers_language() -> None:
    assert texts.late_note("ko", 600).startswith("_⏰ 봇이 잠시 오프라인") and "10분" in texts.late_note(
        "ko", 600
    )
    assert "(asked 3 min ago)" in texts.late_note("en", 200)
    assert "90 s" in texts.late_note("en", 90) and "2 h" in texts.late_note("en", 7300)
    assert "\n" not in texts.late_note("ko", 600)


async def test_a_late_answer_starts_with_the_note_and_a_prompt_one_does_not(inbox: Inbox) -> None:
    chat = FakeChat()
    await run(
        chat,
        inbox,
        [late()],
        message("old", "@ai 배포 언제?", at=ms_ago(600)),
        message("old-en", "@ai when is the release?", at=ms_ago(600)),
        message("new", "@ai 배포 언제?", at=ms_ago(5)),
        message("unknown", "@ai 배포 언제?", at=0),  # no time known: no claim about it
    )
    assert [p["message"] for p in chat.replies_to("old")] == [f"{LATE_NOTE_KO}\n\nan answer"]
    [en] = chat.replies_to("old-en")
    assert en["message"].startswith("_⏰ I was offline") and en["message"].endswith("\n\nan answer")
    assert [p["message"] for p in chat.replies_to("new")] == ["an answer"]
    assert [p["message"] for p in chat.replies_to("unknown")] == ["an answer"]


async def noted(step: LateNote, *, asked_ago: float, enqueued_ago: float | None) -> str:
    """The reply's text after the step, for a question asked and put in the inbox that long ago."""
    enqueued = 0.0 if enqueued_ago is None else NOW - enqueued_ago
    turn = Turn.start(
        message("q", "@ai when is the release?", at=ms_ago(asked_ago)), BOT, enqueued_at=enqueued
    )

    async def handler(t: Turn) -> None:
        t.reply = Reply("an answer", Outcome.ANSWERED)

    await step(turn, handler)
    assert turn.reply is not None
    return turn.reply.text


async def test_a_question_that_waited_its_turn_is_not_told_the_bot_was_offline() -> None:
    up_an_hour = LateNote(120, clock=lambda: NOW, started=NOW - 3600)
    waited = await noted(up_an_hour, asked_ago=600, enqueued_ago=599.9)  # on time, then a queue
    assert waited.startswith("_⏰ Sorry for the wait: many questions") and "offline" not in waited
    assert waited.endswith("\n\nan answer")
    caught_up = await noted(up_an_hour, asked_ago=600, enqueued_ago=100)  # read late: a catch-up
    assert caught_up.startswith("_⏰ I was offline")
    restarted = LateNote(120, clock=lambda: NOW, started=NOW - 60)  # it waited through a restart
    assert (await noted(restarted, asked_ago=600, enqueued_ago=599.9)).startswith("_⏰ I was offline")
    assert (await noted(up_an_hour, asked_ago=600, enqueued_ago=None)).startswith("_⏰ I was offline")
    assert await noted(up_an_hour, asked_ago=60, enqueued_ago=59.9) == "an answer"  # not late at all
    assert texts.late_note("ko", 600, away=False).startswith(
        "_⏰ 질문이 한꺼번에"
    ) and "10분" in texts.late_note("ko", 600, away=False)


async def test_zero_switches_it_off(inbox: Inbox) -> None:
    chat = FakeChat()
    await run(chat, inbox, [late(0)], message("old", at=ms_ago(86400)))
    assert [p["message"] for p in chat.replies_to("old")] == ["an answer"]


async def test_only_the_first_part_of_a_long_answer_has_it(inbox: Inbox) -> None:
    async def long(turn: Turn) -> Reply:
        return Reply(ANSWER * 2, Outcome.ANSWERED)

    chat = FakeChat()
    await run(chat, inbox, [late()], message("old", "@ai 배포 언제?", at=ms_ago(600)), handler=long)
    await until(lambda: len(chat.replies_to("old")) >= 4)
    parts = [p["message"] for p in chat.replies_to("old")]
    assert parts[0].startswith(LATE_NOTE_KO)
    assert sum(p.count("⏰") for p in parts) == 1


class RecordingChat(FakeChat):
    """Keeps every text a reply post showed (creates and edits), to see a stream from its start."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[str] = []

    async def create_post(self, channel_id: str, message: str, **kw: Any) -> dict[str, Any]:
        self.shown.append(message)
        return await super().create_post(channel_id, message, **kw)

    async def patch_post(self, post_id: str, *, message: str | None = None) -> dict[str, Any]:
        if message is not None:
            self.shown.append(message)
        return await super().patch_post(post_id, message=message)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        server.reply_with(ANSWER)
        server.stream_delay(0.01)
        yield server


async def test_a_streamed_late_answer_shows_the_note_from_the_first_edit_and_once(
    inbox: Inbox, fake: FakeLLM
) -> None:
    llm = LLM("openai/fake", f"{fake.url}/v1", "k", timeout=5.0, retry_base=0.01)

    async def streamed(turn: Turn) -> Reply:
        assert turn.sink is not None
        text = await turn.sink.complete(llm, [{"role": "user", "content": "배포 언제?"}])
        return Reply(f"{text}\n\n[1] kim, 2026-11-25", Outcome.ANSWERED)

    chat = RecordingChat()
    writer = ReplyWriter(chat, inbox, edit_sent_parts=True)  # type: ignore[arg-type]
    streams = Streams(chat, writer, interval=0.02, first_post_after=0.0)  # type: ignore[arg-type]
    try:
        async with WorkerPool(inbox, Chain([late(), streams], streamed), writer, BOT, poll_interval=0.05):
            await inbox.put(message("old", "@ai 배포 언제?", at=ms_ago(600)))
            await until(lambda: _done(inbox), within=20)
    finally:
        await llm.aclose()
    [post] = chat.replies_to("old")
    assert post["message"] == f"{LATE_NOTE_KO}\n\n{ANSWER}\n\n[1] kim, 2026-11-25"
    assert len(chat.shown) >= 3  # streamed: created, edited while written, finished
    assert all(s.startswith(f"{LATE_NOTE_KO}\n\n") and s.count("⏰") == 1 for s in chat.shown)
    assert MARKER in chat.shown[0]


async def _done(inbox: Inbox) -> bool:
    return await inbox.state("old") == "done"
