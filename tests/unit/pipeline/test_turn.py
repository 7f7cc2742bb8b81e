"""The chain: steps run in their one order around the handler, and hear how the turn ended in reverse."""

from __future__ import annotations

import pytest

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.router import Command, Question
from mchat_bot.pipeline.turn import Chain, Delivery, Next, Turn
from mchat_bot.pipeline.workers import WorkerPool
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until


class Recorder:
    """A step that notes when it runs and how the turn ended."""

    def __init__(self, name: str, log: list[str], *, answer: str | None = None) -> None:
        self.name, self.log, self.answer = name, log, answer

    async def __call__(self, turn: Turn, next: Next) -> None:
        self.log.append(f"{self.name}>")
        if self.answer is not None:  # answers itself: the later steps and the handler never run
            turn.reply = Reply(self.answer, Outcome.HELP)
            return
        await next(turn)
        self.log.append(f"<{self.name}")

    async def settle(self, turn: Turn) -> None:
        self.log.append(f"{self.name}:{turn.delivery.value}")


async def test_steps_wrap_the_handler_in_order_and_settle_in_reverse(inbox: Inbox) -> None:
    log: list[str] = []

    async def handler(turn: Turn) -> Reply:
        log.append("handler")
        return Reply("hello back", Outcome.ANSWERED)

    chat = FakeChat()
    chain = Chain([Recorder("a", log), Recorder("b", log)], handler)
    async with WorkerPool(inbox, chain, ReplyWriter(chat, inbox), BOT, poll_interval=0.05):
        await inbox.put(message("p1"))
        await until(lambda: "a:sent" in log)
    assert log == ["a>", "b>", "handler", "<b", "<a", "b:sent", "a:sent"]
    assert [p["message"] for p in chat.replies_to("p1")] == ["hello back"]


async def test_a_step_that_answers_stops_the_chain(inbox: Inbox) -> None:
    log: list[str] = []

    async def handler(turn: Turn) -> Reply:
        raise AssertionError("the handler must not run")

    chat = FakeChat()
    chain = Chain([Recorder("a", log, answer="from a"), Recorder("b", log)], handler)
    async with WorkerPool(inbox, chain, ReplyWriter(chat, inbox), BOT, poll_interval=0.05):
        await inbox.put(message("p1"))
        await until(lambda: "a:sent" in log)
    assert log == ["a>", "b:sent", "a:sent"]
    assert [p["message"] for p in chat.replies_to("p1")] == ["from a"]


async def test_a_crashing_handler_ends_the_turn_as_failed_for_every_step(inbox: Inbox) -> None:
    log: list[str] = []

    async def handler(turn: Turn) -> Reply:
        raise RuntimeError("bug")

    chat = FakeChat()
    chain = Chain([Recorder("a", log)], handler)
    async with WorkerPool(inbox, chain, ReplyWriter(chat, inbox), BOT, poll_interval=0.05):
        await inbox.put(message("p1", "@ai 질문"))
        await until(lambda: chat.replies_to("p1"))
    assert log == ["a>", "a:failed"]
    [notice] = chat.replies_to("p1")
    assert notice["props"]["mchat_failure"] is True
    assert await inbox.state("p1") == "failed"


def test_a_turn_is_routed_once_when_it_starts() -> None:
    turn = Turn.start(message("p1", "@ai remember 회의는 3시"), BOT)
    assert isinstance(turn.routed, Command) and turn.routed.name == "remember"
    assert turn.reply is None and not turn.resent and turn.delivery is Delivery.PENDING
    again = Turn.start(message("p2", "@ai 회의는 언제?"), BOT, saved_reply="3시입니다")
    assert isinstance(again.routed, Question)
    assert again.resent and again.text == "3시입니다" and again.outcome is Outcome.RESENT


@pytest.mark.parametrize(
    ("outcome", "failure"),
    [(Outcome.LLM_FAILED, True), (Outcome.FAILED, True), (Outcome.ANSWERED, False), (Outcome.REFUSED, False)],
)
def test_only_apologies_count_as_failures(outcome: Outcome, failure: bool) -> None:
    assert outcome.is_failure is failure
