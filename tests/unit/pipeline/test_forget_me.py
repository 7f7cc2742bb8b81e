"""`forget me`: a preview that deletes nothing, then everything of the asker (personal memories,
their lines in the channel knowledge, their text in the audit and the inbox), their channel and team
memories only when they choose, nobody else's anything."""

from __future__ import annotations

import pytest
import pytest_asyncio

from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.memory.store import AnyStore, MemoryStore, Selection
from mchat_bot.pipeline.audit import Audit, AuditRow
from mchat_bot.pipeline.forget_me import ForgetMe
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import Outcome
from mchat_bot.pipeline.router import Command, parse_request
from mchat_bot.storage import Storage
from tests.support.factories import BOT, KIM, LEE, SITE, answer, in_dm, mem, message, seed

AT = 1_700_000_000_000


pytestmark = pytest.mark.both_dialects  # the `storage` fixture: SQLite and PostgreSQL


@pytest_asyncio.fixture
async def index(storage: Storage, messages: AnyStore) -> MessageIndex:
    return MessageIndex(messages, await ChatLog(storage).load(), SITE)


def handlers(store: MemoryStore, index: MessageIndex, storage: Storage) -> Handlers:
    erase = ForgetMe(store, index=index, inbox=Inbox(storage), audit=Audit(storage))
    return Handlers(store, None, BOT, SITE, forget_me=erase)


def said(post_id: str, user: str, text: str, at: int, channel: str = "c_learn") -> Line:
    return Line(post_id, channel, text, at, team_id="t1", user_id=user, user_name=user)


async def kept_ids(store: MemoryStore, user: str) -> set[str]:
    return {m.id async for m in store.scan(Selection(user_id=user))}


def test_routing_forget_me_and_its_confirmations() -> None:
    assert parse_request("forget me", "en") == Command("forget_me", "", "en")
    assert parse_request("forget me confirm all", "en") == Command("forget_me", "confirm all", "en")
    assert parse_request("나를 잊어줘 확인", "ko") == Command("forget_me", "확인", "ko")
    # anything else after "forget me" is an ordinary forget of a query
    assert parse_request("forget me not flowers", "en") == Command("forget", "me not flowers", "en")


async def test_the_preview_deletes_nothing_and_says_what_would_go(
    store: MemoryStore, index: MessageIndex, storage: Storage
) -> None:
    made = await seed(store)
    await index.log.record([said("p1", KIM, "the supplier call is at 3", AT)])
    before = await kept_ids(store, KIM)
    reply = await in_dm(handlers(store, index, storage), "forget me")
    assert reply.outcome is Outcome.LISTED and "nothing deleted yet" in reply.text
    assert "1 personal memories" in reply.text and "1 message of yours" in reply.text
    assert made["kim_channel"].text in reply.text and made["kim_team"].text in reply.text  # the choice
    assert made["kim_personal"].text not in reply.text  # personal ones are counted, not listed
    assert "forget me confirm all" in reply.text
    assert await kept_ids(store, KIM) == before and await index.log.size() == 1


async def test_in_a_channel_it_points_to_the_dm_and_deletes_nothing(
    store: MemoryStore, index: MessageIndex, storage: Storage
) -> None:
    await seed(store)
    before = await kept_ids(store, KIM)
    reply = await answer(handlers(store, index, storage), "@ai forget me confirm all", user=KIM, name=KIM)
    assert reply.outcome is Outcome.REFUSED and "direct message" in reply.text
    assert await kept_ids(store, KIM) == before


async def test_confirm_deletes_the_asker_and_keeps_their_channel_memories_and_everyone_else(
    store: MemoryStore, index: MessageIndex, storage: Storage
) -> None:
    made = await seed(store)
    await index.log.record(
        [
            said("p1", LEE, "lunch is at noon", AT),
            said("p2", KIM, "the cobalt supplier raised prices", AT + 1000),
            said("p3", LEE, "meeting moved to Thursday", AT + 2000),
        ]
    )
    await Indexer(index.log, index).drain()
    reply = await in_dm(handlers(store, index, storage), "forget me confirm")
    assert reply.outcome is Outcome.FORGOTTEN, reply.text
    assert "1 personal memories" in reply.text and "1 message of yours" in reply.text
    assert "were kept" in reply.text
    kept = await kept_ids(store, KIM)
    assert made["kim_personal"].id not in kept
    assert {made[k].id for k in ("kim_channel", "kim_team", "kim_old", "kim_left")} <= kept
    assert {made[k].id for k in ("lee_channel", "lee_personal", "lee_team")} <= await kept_ids(store, LEE)
    # kim's line is gone from the log and the index; her words leave her neighbours' documents too
    assert await index.log.get("p2") is None and await index.store.get("p2") is None
    await Indexer(index.log, index).drain()
    for post_id in ("p1", "p3"):
        neighbour = await index.store.get(post_id)
        assert neighbour is not None and "cobalt" not in neighbour.text, post_id
    assert set(reply.memory_ids) == {made["kim_personal"].id}


async def test_confirm_all_also_deletes_what_they_wrote_and_brings_back_what_it_replaced(
    store: MemoryStore, index: MessageIndex, storage: Storage
) -> None:
    made = await seed(store)
    lee_old = mem("the budget review is in May", "channel", LEE)
    kim_new = mem("the budget review is in June", "channel", KIM, replaces=lee_old.id)
    await store.add_many([lee_old, kim_new])
    await store.supersede(lee_old.id, kim_new.id, 1.0)
    reply = await in_dm(handlers(store, index, storage), "나를 잊어줘 확인 전부")
    assert reply.outcome is Outcome.FORGOTTEN and "잊었습니다" in reply.text
    assert await kept_ids(store, KIM) == set()
    restored = await store.get(lee_old.id)
    assert restored is not None and restored.current  # lee's version is current again
    assert made["lee_channel"].id in await kept_ids(store, LEE)


async def test_the_audit_and_the_inbox_keep_nothing_of_their_words(
    store: MemoryStore, index: MessageIndex, storage: Storage
) -> None:
    await seed(store)
    audit, inbox = Audit(storage), Inbox(storage)
    await audit.record(AuditRow(at=1.0, action="remember", user_id=KIM, detail="kim likes green tea"))
    await audit.record(AuditRow(at=1.0, action="remember", user_id=LEE, detail="lee prefers coffee"))
    old = message("remember kim likes green tea", user=KIM, post_id="old1")
    await inbox.put(old)
    await storage.execute(  # a row finished before finished rows were blanked whole
        "UPDATE inbox SET state = 'done' WHERE post_id = 'old1'"
    )
    await in_dm(handlers(store, index, storage), "forget me confirm")
    rows = {r.user_id: r.detail for r in await audit.query()}
    assert rows[KIM] == "" and rows[LEE] == "lee prefers coffee"
    [(payload,)] = await storage.fetchall("SELECT payload FROM inbox WHERE post_id = 'old1'")
    assert KIM not in payload and "green tea" not in payload


async def test_nothing_to_forget_says_so(store: MemoryStore, index: MessageIndex, storage: Storage) -> None:
    reply = await in_dm(handlers(store, index, storage), "forget me confirm", user="u_new")
    assert reply.outcome is Outcome.NOTHING_FOUND and "Nothing to forget" in reply.text
