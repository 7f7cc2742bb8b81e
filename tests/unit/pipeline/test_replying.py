"""The reply writer: each part once, in the asker's thread, with its markers; a lost answer or a
restart never doubles a part; a waiting web request gets the text instead of a post."""

from __future__ import annotations

import asyncio

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.turn import Chain, Turn
from mchat_bot.pipeline.waiters import Waiters, wait_answer
from mchat_bot.pipeline.workers import WorkerPool
from tests.support.chat import FakeChat
from tests.support.turns import BOT, message, until


def answering(text: str) -> Chain:
    async def handler(turn: Turn) -> Reply:
        return Reply(text, Outcome.ANSWERED)

    return Chain([], handler)


def pool(inbox: Inbox, chat: FakeChat, text: str, **kw: object) -> WorkerPool:
    writer = ReplyWriter(chat, inbox, limit=int(kw.pop("limit", 16383)), waiters=kw.pop("waiters", None))  # type: ignore[arg-type]
    return WorkerPool(inbox, answering(text), writer, BOT, poll_interval=0.05, retry_base=0.02)


async def done(inbox: Inbox, post_id: str) -> bool:
    return await inbox.state(post_id) in ("done", "failed")


async def test_an_answer_to_a_reply_goes_into_the_root_thread_with_its_markers(inbox: Inbox) -> None:
    chat = FakeChat()
    async with pool(inbox, chat, "답변입니다"):
        await inbox.put(message("p2", "@ai 질문", root="p1"))
        await until(lambda: done(inbox, "p2"))
    [reply] = chat.replies_to("p2")
    assert reply["root_id"] == "p1"  # the server rejects a root_id that is itself a reply
    assert reply["props"] == {"mchat_reply_to": "p2", "mchat_part": 0}
    assert reply["pending_post_id"] == "mchat-p2-0"
    assert reply["message"] == "답변입니다"
    assert await inbox.sent_parts("p2") == {0: reply["id"]}


async def test_an_answer_lost_on_the_way_back_is_found_in_the_thread_not_posted_twice(inbox: Inbox) -> None:
    chat = FakeChat(lose_answers=1)  # the post lands, the response does not: a 504, retried later
    async with pool(inbox, chat, "A" * 150 + "\n\n" + "B" * 150, limit=200):
        await inbox.put(message("p1"))
        await until(lambda: done(inbox, "p1"))
    assert [p["message"][0] for p in chat.replies_to("p1")] == ["A", "B"]  # one post per part
    assert [p["props"]["mchat_part"] for p in chat.replies_to("p1")] == [0, 1]
    assert await inbox.state("p1") == "done"


async def test_a_restart_after_a_crash_posts_only_the_missing_part(inbox: Inbox) -> None:
    chat = FakeChat()
    text = "A" * 150 + "\n\n" + "B" * 150
    chat.user_post("p1")
    # the first process posted part 0, then died before writing the sent-log
    await chat.create_post("c1", "A" * 150, root_id="p1", props={"mchat_reply_to": "p1", "mchat_part": 0})
    await inbox.put(message("p1"))
    await inbox.claim(1)
    await inbox.save_reply("p1", text)
    assert await inbox.recover() == 1
    async with pool(inbox, chat, "never asked again", limit=200):
        await until(lambda: done(inbox, "p1"))
    assert [p["message"][0] for p in chat.replies_to("p1")] == ["A", "B"]


async def test_a_waiting_web_request_gets_the_answer_and_nothing_is_posted(inbox: Inbox) -> None:
    chat = FakeChat()
    waiters = Waiters()
    fut = waiters.register("p1")
    async with pool(inbox, chat, "inline answer", waiters=waiters):
        await inbox.put(message("p1", door="outgoing_webhook"))
        answer = await wait_answer(waiters, "p1", fut, 5.0)
        await until(lambda: done(inbox, "p1"))
    assert answer == "inline answer"
    assert chat.replies_to("p1") == []


async def test_a_refused_post_fails_the_item_with_one_failure_notice(inbox: Inbox) -> None:
    chat = FakeChat(fail=[403])  # the bot left the channel: not worth a retry
    async with pool(inbox, chat, "answer"):
        await inbox.put(message("p1", "@ai 질문"))
        await until(lambda: chat.replies_to("p1"))
    [notice] = chat.replies_to("p1")
    assert notice["props"] == {"mchat_reply_to": "p1", "mchat_failure": True}
    assert notice["pending_post_id"] == "mchat-p1-fail" and notice["root_id"] == "p1"
    assert "답변을 보내지 못했습니다" in notice["message"]
    assert await inbox.state("p1") == "failed"
    await asyncio.sleep(0)
