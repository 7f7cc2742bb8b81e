"""The PostgreSQL engine against a real throwaway cluster: migrations under a lock, claims across
connections, a server restart, an unreachable server."""

from __future__ import annotations

import asyncio
import random

import pytest

from mchat_bot.net.retry import RetryPolicy, is_transient
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.storage import MIGRATIONS, StorageUnavailable
from mchat_bot.storage.postgres import PostgresStorage, pyformat, without_password
from tests.support.factories import message
from tests.support.fixtures import create_database
from tests.support.postgres import PostgresCluster, free_port


def test_placeholders_are_translated_outside_quotes_only() -> None:
    assert pyformat("SELECT a FROM t WHERE b = ? AND c LIKE 'x%?' AND d = ?") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%?' AND d = %s"
    )
    assert pyformat("SELECT 5 % 2") == "SELECT 5 %% 2"


def test_the_printed_url_has_no_password() -> None:
    url = "postgresql://bot:s3cr%40t@db.example:6432/mchat?sslmode=require"
    assert without_password(url) == "postgresql://bot@db.example:6432/mchat"
    assert "s3cr" not in PostgresStorage(url).where


async def test_daemons_starting_together_migrate_once(pg_cluster: PostgresCluster) -> None:
    url = create_database(pg_cluster, "mchat_migrate")
    storages = [PostgresStorage(url, pool_size=1) for _ in range(4)]
    await asyncio.gather(*(st.open() for st in storages))  # without the lock: duplicate CREATE TABLE
    try:
        for st in storages:
            assert await st.schema_version() == len(MIGRATIONS)
        rows = await storages[0].fetchall("SELECT version FROM schema_version")
        assert [tuple(r) for r in rows] == [(len(MIGRATIONS),)]
        await storages[0].execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
        with pytest.raises(RuntimeError, match="newer"):
            await PostgresStorage(url).open()
    finally:
        await asyncio.gather(*(st.close() for st in storages))


async def test_claims_from_several_connections_keep_one_item_per_thread_in_order(pg_url: str) -> None:
    """Three claimers on their own pools (as three daemons would be): every item is handed out once,
    a thread never has two items in flight, and each thread's items come in post order."""
    async with (
        PostgresStorage(pg_url, pool_size=2) as a,
        PostgresStorage(pg_url, pool_size=2) as b,
        PostgresStorage(pg_url, pool_size=2) as c,
    ):
        producer = Inbox(a)
        posts = [
            message("@ai q", post_id=f"p{t}-{n}", root=f"root{t}", channel="c1", at=1000 * n + t)
            for n in range(8)
            for t in range(6)
        ]
        assert all(await producer.put_many(posts))
        in_flight: set[str] = set()
        handed: dict[str, list[int]] = {}
        errors: list[str] = []

        async def claimer(inbox: Inbox) -> None:
            idle = 0
            while idle < 5:
                items = await inbox.claim(limit=3)
                if not items:
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                for item in items:
                    thread = item.message.root_id
                    if thread in in_flight:
                        errors.append(f"{thread} twice in flight")
                    in_flight.add(thread)
                    handed.setdefault(thread, []).append(item.message.create_at)
                await asyncio.sleep(random.uniform(0, 0.01))
                for item in items:
                    in_flight.discard(item.message.root_id)
                    await inbox.ack(item.post_id)

        await asyncio.gather(claimer(Inbox(a)), claimer(Inbox(b)), claimer(Inbox(c)))
        assert errors == []
        assert sum(len(v) for v in handed.values()) == len(posts)
        for times in handed.values():
            assert times == sorted(times) and len(times) == 8
        assert await producer.depth() == 0


async def test_a_server_restart_is_a_transient_error_and_the_pool_recovers(
    pg_cluster: PostgresCluster, pg_url: str
) -> None:
    async with PostgresStorage(pg_url, pool_size=2, connect_timeout=1.0) as st:
        await st.set_kv("cursor", "1")
        await asyncio.to_thread(pg_cluster.stop)
        try:
            with pytest.raises(StorageUnavailable) as caught:
                await st.get_kv("cursor")
            assert is_transient(caught.value)  # what the workers and the supervisor retry
        finally:
            await asyncio.to_thread(pg_cluster.start)
        # the first statements may still meet the pool's reconnect backoff: retried as the daemon does
        again = RetryPolicy(first_delay=0.2, max_delay=1.0, tries=30)
        assert await again.call(lambda: st.get_kv("cursor")) == "1"  # connections replaced, nothing lost
        await st.set_kv("cursor", "2")
        assert await st.get_kv("cursor") == "2"


async def test_an_unreachable_server_fails_fast_and_says_where_without_the_password() -> None:
    url = f"postgresql://bot:hunter2@127.0.0.1:{free_port()}/mchat"
    storage = PostgresStorage(url, connect_timeout=1.0, policy=RetryPolicy(first_delay=0.01, tries=2))
    with pytest.raises(StorageUnavailable) as caught:
        await asyncio.wait_for(storage.open(), timeout=10)
    assert "127.0.0.1" in str(caught.value) and "refused" in str(caught.value)
    assert "hunter2" not in str(caught.value)
