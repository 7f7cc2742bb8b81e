"""The reaction on the asking post comes from the reply's outcome: ✅ for an answer, ⚠️ for an
apology (even one whose text no list of apologies knows) or a failed delivery, none for no reply."""

from __future__ import annotations

import pytest

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.steps.feedback import DONE, FAILED, Feedback
from mchat_bot.pipeline.turn import Chain, Turn
from mchat_bot.pipeline.workers import WorkerPool
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until


async def reactions_after(
    inbox: Inbox, reply: Reply, *, fail: list[int] | None = None, attempts: int = 1
) -> list[str]:
    chat = FakeChat(fail=list(fail or []))
    chat.user_post("p1")
    feedback = Feedback(chat, BOT.user_id, typing=False, delay=0)

    async def handler(turn: Turn) -> Reply:
        return reply

    chain = Chain([feedback], handler)
    async with WorkerPool(
        inbox, chain, ReplyWriter(chat, inbox), BOT, poll_interval=0.05, max_attempts=attempts
    ):
        await inbox.put(message("p1"))
        await until(lambda: _finished(inbox))
    await feedback.aclose(grace=5.0)
    return chat.reactions.get("p1", [])


async def _finished(inbox: Inbox) -> bool:
    return await inbox.state("p1") in ("done", "failed")


@pytest.mark.parametrize(
    ("reply", "emoji"),
    [
        (Reply("3시입니다 [1]", Outcome.ANSWERED), [DONE]),
        (Reply("모델이 지금 답하지 못했어요", Outcome.LLM_FAILED), [FAILED]),  # an apology worded anew
        (Reply("저장소 오류", Outcome.FAILED), [FAILED]),
        (Reply.nothing(), []),
    ],
)
async def test_the_reaction_follows_the_outcome(inbox: Inbox, reply: Reply, emoji: list[str]) -> None:
    assert await reactions_after(inbox, reply) == emoji  # 👀 was put (delay 0) and taken off


async def test_a_reply_that_could_not_be_posted_gets_a_warning(inbox: Inbox) -> None:
    assert await reactions_after(inbox, Reply("answer", Outcome.ANSWERED), fail=[403, 403]) == [FAILED]


async def test_an_apology_sent_again_after_a_failed_send_still_gets_a_warning(inbox: Inbox) -> None:
    """The retry sends the saved reply; its outcome is kept with it, so the apology is not a ✅."""
    apology = Reply("모델이 지금 답하지 못했어요", Outcome.LLM_FAILED)
    assert await reactions_after(inbox, apology, fail=[503], attempts=3) == [FAILED]
