"""The durable inbox on both engines (a real SQLite file, a real PostgreSQL database)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.storage import MIGRATIONS, SqliteStorage, Storage, storage_at
from tests.support.factories import message


def msg(
    post_id: str, *, root: str = "", channel: str = "c1", at: int = 0, text: str = "@ai hi"
) -> IncomingMessage:
    return message(
        text, post_id=post_id, root=root, channel=channel, at=at, name="kim", channel_name="town-square"
    )


pytestmark = pytest.mark.both_dialects


async def test_storage_pragmas_migrations_and_kv(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    async with SqliteStorage(path) as st:
        assert await st.schema_version() == len(MIGRATIONS)
        row = await st.fetchone("PRAGMA journal_mode")
        assert row is not None and row[0] == "wal"
        assert await st.get_kv("cursor") is None
        assert await st.get_kv("cursor", "0") == "0"
        await st.set_kv("cursor", "1764057600000")
        await st.set_kv("cursor", "1764057600001")
    async with SqliteStorage(path) as st:  # reopened: no second migration, value kept
        assert await st.get_kv("cursor") == "1764057600001"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteStorage(path).open()


async def test_put_dedupes_by_post_id_even_after_done(storage: Storage) -> None:
    inbox = Inbox(storage)
    assert await inbox.put(msg("p1")) is True
    assert await inbox.put(msg("p1")) is False
    [item] = await inbox.claim(10)
    assert item.message == msg("p1")
    await inbox.ack("p1")
    assert await inbox.put(msg("p1")) is False
    assert await inbox.state("p1") == "done"
    assert await inbox.depth() == 0


async def test_claim_keeps_thread_order_and_one_per_thread(storage: Storage) -> None:
    inbox = Inbox(storage)
    # thread A: root a1, replies a2, a3 (put out of order); thread B: b1; another channel, same root id
    await inbox.put(msg("a3", root="a1", at=30))
    await inbox.put(msg("a1", at=10))
    await inbox.put(msg("b1", at=15))
    await inbox.put(msg("a2", root="a1", at=20))
    await inbox.put(msg("a1x", root="a1", channel="c2", at=5))
    first = await inbox.claim(10)
    assert [i.post_id for i in first] == ["a1x", "a1", "b1"]
    assert await inbox.claim(10) == []  # thread a1 in c1 is busy
    await inbox.ack("a1")
    assert [i.post_id for i in await inbox.claim(10)] == ["a2"]
    await inbox.ack("a2")
    assert [i.post_id for i in await inbox.claim(10)] == ["a3"]


async def test_retry_later_counts_attempts_and_blocks_the_thread_until_due(storage: Storage) -> None:
    inbox = Inbox(storage)
    await inbox.put(msg("a1", at=1))
    await inbox.put(msg("a2", root="a1", at=2))
    [item] = await inbox.claim(5)
    assert await inbox.retry_later(item.post_id, "503", delay=0.3) == 1
    assert await inbox.claim(5) == []  # a1 not due yet and a2 must not overtake it
    await asyncio.sleep(0.35)
    [again] = await inbox.claim(5)
    assert again.post_id == "a1" and again.attempts == 1 and again.last_error == "503"
    await inbox.fail("a1", "gave up")
    assert await inbox.state("a1") == "failed"
    assert [i.post_id for i in await inbox.claim(5)] == ["a2"]  # a failed item no longer blocks


async def test_recover_after_a_crash_and_sent_log_survive_restart(storage_target: str | Path) -> None:
    async with storage_at(storage_target) as st:
        inbox = Inbox(st)
        await inbox.put(msg("p1"))
        await inbox.claim(1)
        await inbox.save_reply("p1", "the answer")
        await inbox.record_sent("p1", 0, "reply-0")
        # the process dies here: no ack
    async with storage_at(storage_target) as st:
        inbox = Inbox(st)
        assert await inbox.claim(1) == []  # still claimed by the dead process
        assert await inbox.recover() == 1
        [item] = await inbox.claim(1)
        assert item.reply == "the answer"
        assert await inbox.sent_parts("p1") == {0: "reply-0"}
        assert await inbox.depth() == 1
        assert await inbox.oldest_age() >= 0.0


async def test_depth_oldest_age_and_prune(storage: Storage) -> None:
    inbox = Inbox(storage)
    assert await inbox.oldest_age() == 0.0
    await inbox.put(msg("p1"))
    await asyncio.sleep(0.05)
    assert await inbox.depth() == 1
    assert await inbox.oldest_age() >= 0.05
    await inbox.claim(1)
    await inbox.record_sent("p1", 0, "r0")
    await inbox.ack("p1")
    assert await inbox.prune(older_than=3600) == 0
    assert await inbox.prune(older_than=0) == 1
    assert await inbox.sent_parts("p1") == {}
    assert await inbox.put(msg("p1")) is True  # forgotten after the dedupe window


async def test_an_event_is_claimed_by_one_daemon_and_the_claims_are_pruned(storage: Storage) -> None:
    daemons = [Inbox(storage, instance=name) for name in ("a", "b", "c")]
    claims = await asyncio.gather(*(inbox.claim_event("post_edited:p1:5") for inbox in daemons))
    assert sorted(claims) == [False, False, True]
    winner = daemons[claims.index(True)]
    loser = daemons[claims.index(False)]
    assert await winner.claim_event("post_edited:p1:5") is True  # its own retry of the event
    assert await loser.claim_event("post_edited:p1:5") is False  # kept within the window
    assert await loser.claim_event("post_edited:p1:6") is True  # a later edit is another event
    assert await winner.prune(older_than=3600) == 0
    await winner.prune(older_than=0)
    assert await loser.claim_event("post_edited:p1:5") is True  # forgotten after it


async def test_put_sets_the_wakeup_event(storage: Storage) -> None:
    inbox = Inbox(storage)
    inbox.changed.clear()
    await inbox.put(msg("p1"))
    assert inbox.changed.is_set()


async def test_concurrent_claims_never_hand_out_an_item_twice(storage: Storage) -> None:
    inbox = Inbox(storage)
    for i in range(200):
        await inbox.put(msg(f"p{i}", root=f"r{i % 20}", at=i))
    seen: list[str] = []

    async def worker() -> None:
        while True:
            items = await inbox.claim(1)
            if not items:
                if await inbox.depth() == 0:
                    return
                await asyncio.sleep(0.001)
                continue
            seen.append(items[0].post_id)
            await inbox.ack(items[0].post_id)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), 30)
    assert sorted(seen) == sorted(f"p{i}" for i in range(200))
    # per thread, in create_at order
    for r in range(20):
        thread = [p for p in seen if int(p[1:]) % 20 == r]
        assert thread == sorted(thread, key=lambda p: int(p[1:]))


async def test_put_many_dedupes_within_the_batch_and_against_the_inbox(storage: Storage) -> None:
    inbox = Inbox(storage)
    assert await inbox.put(msg("old", at=1)) is True
    inbox.changed.clear()
    batch = [msg(f"p{i}", root=f"r{i % 7}", at=10 + i) for i in range(1200)]  # more than one statement
    added = await inbox.put_many([msg("old", at=1), *batch, msg("p5", at=15)])
    assert added == [False, *([True] * 1200), False]
    assert inbox.changed.is_set()
    assert await inbox.depth() == 1201
    assert await inbox.put_many([msg("old", at=1)]) == [False]
    assert await inbox.put_many([]) == []


async def test_concurrent_batch_claims_hand_out_each_item_once_and_one_per_thread(storage: Storage) -> None:
    inbox = Inbox(storage)
    await inbox.put_many([msg(f"p{i}", root=f"r{i % 10}", at=i) for i in range(300)])
    seen: list[str] = []
    holding: set[str] = set()  # threads with an item out right now

    async def worker() -> None:
        while await inbox.depth():
            items = await inbox.claim(4)
            for item in items:
                root = item.message.thread_root
                assert root not in holding, f"two items of thread {root} claimed at once"
                holding.add(root)
            await asyncio.sleep(0)
            for item in items:
                seen.append(item.post_id)
                holding.discard(item.message.thread_root)
                await inbox.ack(item.post_id)
            if not items:
                await asyncio.sleep(0.001)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(6))), 30)
    assert sorted(seen) == sorted(f"p{i}" for i in range(300))  # every item exactly once
    for r in range(10):
        thread = [int(p[1:]) for p in seen if int(p[1:]) % 10 == r]
        assert thread == sorted(thread)


async def test_sent_parts_of_a_claimed_item_follow_record_sent_and_are_read_again_after(
    storage: Storage,
) -> None:
    inbox = Inbox(storage)
    await inbox.put(msg("p1"))
    assert [i.post_id for i in await inbox.claim(1)] == ["p1"]
    assert await inbox.sent_parts("p1") == {}
    await inbox.record_sent("p1", 1, "r1")
    await inbox.record_sent("p1", 0, "r0")
    assert list((await inbox.sent_parts("p1")).items()) == [(0, "r0"), (1, "r1")]
    assert await Inbox(storage).sent_parts("p1") == {0: "r0", 1: "r1"}  # committed, not only held
    assert await inbox.retry_later("p1", "503", delay=0) == 1
    assert len(await inbox.claim(1)) == 1  # claimed again: the claim reads the sent-log back
    assert await inbox.sent_parts("p1") == {0: "r0", 1: "r1"}
    await inbox.ack("p1")
    await storage.execute("DELETE FROM sent_log WHERE source_post_id = 'p1'")
    assert await inbox.sent_parts("p1") == {}  # finished: read from SQLite, not from memory


async def test_a_one_statement_write_never_joins_a_transaction_that_rolls_back(storage: Storage) -> None:
    inside = asyncio.Event()

    async def failing_transaction() -> None:
        async with storage.transaction() as db:
            await db.execute("INSERT INTO kv (key, value) VALUES ('a', '1')")
            inside.set()
            await asyncio.sleep(0.05)  # another coroutine writes meanwhile
            raise RuntimeError("rolled back")

    task = asyncio.create_task(failing_transaction())
    await inside.wait()
    await storage.set_kv("b", "2")  # waits for the transaction instead of landing inside it
    with pytest.raises(RuntimeError):
        await task
    assert await storage.get_kv("a") is None
    assert await storage.get_kv("b") == "2"


async def test_a_finished_item_keeps_its_ids_but_not_its_words(storage: Storage) -> None:
    inbox = Inbox(storage)
    for post_id in ("p-done", "p-failed"):
        await inbox.put(msg(post_id, text="@ai remember 전화 010-2345-6789"))
    items = await inbox.claim(limit=2)
    await inbox.save_reply("p-done", "저장됨: [REDACTED:phone]")
    await inbox.ack("p-done")
    await inbox.fail("p-failed", "403 forbidden")
    assert {i.post_id for i in items} == {"p-done", "p-failed"}
    for post_id in ("p-done", "p-failed"):
        row = await storage.fetchone(
            "SELECT payload, reply, last_error FROM inbox WHERE post_id = ?", (post_id,)
        )
        assert row is not None
        assert "010-2345-6789" not in row[0] and row[1] is None
    assert await inbox.put(msg("p-done")) is False  # still recognised as a duplicate


async def test_the_prune_loop_forgets_old_items_and_empties_the_log(storage: Storage) -> None:
    inbox = Inbox(storage)
    await inbox.put(msg("p-old"))
    await inbox.claim()
    await inbox.ack("p-old")
    await storage.execute("UPDATE inbox SET updated_at = 0 WHERE post_id = 'p-old'")
    task = asyncio.create_task(inbox.prune_loop(retention_days=1, every=3600))
    try:
        for _ in range(100):
            if await inbox.state("p-old") is None:
                break
            await asyncio.sleep(0.02)
        assert await inbox.state("p-old") is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    if isinstance(storage, SqliteStorage):
        assert _wal_size(storage.path) == 0


def _wal_size(db_path: str) -> int:
    wal = Path(db_path + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_a_live_daemons_claim_is_not_taken_released_or_recovered_by_another(storage: Storage) -> None:
    a, b = Inbox(storage, instance="a"), Inbox(storage, instance="b")
    await a.put(msg("p1", root="r", at=1))
    await a.put(msg("p2", root="r", at=2))
    assert [i.post_id for i in await a.claim(5)] == ["p1"]
    assert await b.claim(5) == []  # its thread is held by a live daemon
    assert await b.recover() == (1 if storage.dialect == "sqlite" else 0)  # SQLite: one daemon a file
    if storage.dialect == "postgresql":
        await b.release("p1")
        await b.retry_later("p1", "not mine", 0)
        assert await b.claim(5) == []
        assert await a.renew() == 1


async def test_an_expired_claim_is_taken_over_as_a_resend_and_its_old_holder_lets_go(
    storage: Storage,
) -> None:
    dead, live = Inbox(storage, instance="dead", lease=0.2), Inbox(storage, instance="live")
    await dead.put(msg("p1", root="r", at=1))
    await dead.put(msg("p2", root="r", at=2))
    await dead.claim(1)
    await dead.save_reply("p1", "the answer")
    await dead.record_sent("p1", 0, "reply-0")
    assert await live.claim(5) == []  # the lease still runs
    await asyncio.sleep(0.3)
    [item] = await live.claim(5)  # the holder died: the same item, never the thread's next one
    assert (item.post_id, item.reply) == ("p1", "the answer")
    assert await live.sent_parts("p1") == {0: "reply-0"}
    await dead.release("p1")  # the old holder wakes up: the item is no longer its to give back
    assert await dead.renew() == 0
    assert await dead.claim(5) == []
    await live.ack("p1")
    assert [i.post_id for i in await live.claim(5)] == ["p2"]


async def test_renewing_keeps_a_claim_past_its_first_lease(storage: Storage) -> None:
    holder, other = Inbox(storage, instance="a", lease=0.4), Inbox(storage, instance="b")
    await holder.put(msg("p1"))
    await holder.claim(1)
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await holder.renew() == 1
    assert await other.claim(5) == []
    await asyncio.sleep(0.5)
    assert [i.post_id for i in await other.claim(5)] == ["p1"]


async def test_while_a_gap_is_read_newer_posts_wait_and_the_hold_ends(storage: Storage) -> None:
    inbox = Inbox(storage)
    await inbox.put(msg("old", root="r1", at=1000))
    await inbox.put(msg("new", root="r2", at=5000))
    await inbox.hold_after(2000)
    assert [i.post_id for i in await inbox.claim(5)] == ["old"]  # "new" may follow a missed post
    await inbox.stop_holding()
    assert [i.post_id for i in await inbox.claim(5)] == ["new"]
    await inbox.put(msg("later", root="r3", at=9000))
    await inbox.hold_after(2000, seconds=0.1)
    assert await inbox.claim(5) == []
    await asyncio.sleep(0.2)  # a hold nobody ends (its catch-up died) runs out
    assert [i.post_id for i in await inbox.claim(5)] == ["later"]


async def test_a_claim_taken_over_or_found_at_start_counts_an_attempt(storage: Storage) -> None:
    dead, live = Inbox(storage, instance="dead", lease=0.1), Inbox(storage, instance="live")
    await dead.put(msg("p1", root="r", at=1))
    [first] = await dead.claim(1)
    await asyncio.sleep(0.2)
    [taken] = await live.claim(1)  # its holder died with it
    assert (first.attempts, taken.attempts) == (0, 1)
    await live.release("p1")
    [again] = await live.claim(1)  # released by a live daemon: not an attempt
    assert again.attempts == 1
    await live.recover()  # found claimed at start: the daemon died with it
    [after_start] = await live.claim(1)
    assert after_start.attempts == 2
