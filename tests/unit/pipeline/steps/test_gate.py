"""The channel gate: a channel switched off gets no answer from any door; every channel is recorded."""

from __future__ import annotations

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.steps.gate import ChannelGate
from mchat_bot.pipeline.turn import Chain, Turn
from mchat_bot.pipeline.waiters import Waiters, wait_answer
from mchat_bot.pipeline.workers import WorkerPool
from mchat_bot.storage import Storage
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until


async def handler(turn: Turn) -> Reply:
    return Reply("an answer", Outcome.ANSWERED)


async def test_an_inactive_channel_gets_no_answer_and_a_waiting_request_hears_nothing(
    storage: Storage, inbox: Inbox
) -> None:
    mappings = Mappings(storage, cache_ttl=0)
    await mappings.see(message("p0"))
    await mappings.set_active("c1", False)
    chat, waiters = FakeChat(), Waiters()
    fut = waiters.register("p2")
    writer = ReplyWriter(chat, inbox, waiters=waiters)  # type: ignore[arg-type]
    async with WorkerPool(inbox, Chain([ChannelGate(mappings)], handler), writer, BOT, poll_interval=0.05):
        await inbox.put(message("p1"))
        await inbox.put(message("p2", door="outgoing_webhook"))
        assert await wait_answer(waiters, "p2", fut, 5.0) == ""  # answered "nothing" at once
        await until(lambda: _all_done(inbox, "p1", "p2"))
    assert chat.replies_to("p1") == [] and chat.replies_to("p2") == []


async def test_an_active_channel_is_recorded_and_answered(storage: Storage, inbox: Inbox) -> None:
    mappings = Mappings(storage, cache_ttl=0)
    chat = FakeChat()
    writer = ReplyWriter(chat, inbox)  # type: ignore[arg-type]
    async with WorkerPool(inbox, Chain([ChannelGate(mappings)], handler), writer, BOT, poll_interval=0.05):
        await inbox.put(message("p1"))
        await until(lambda: chat.replies_to("p1"))
    assert [p["message"] for p in chat.replies_to("p1")] == ["an answer"]
    row = await mappings.channel("c1")
    assert row is not None and row.is_active


async def _all_done(inbox: Inbox, *post_ids: str) -> bool:
    return all([await inbox.state(p) == "done" for p in post_ids])
