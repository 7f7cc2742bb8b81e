"""The real daemon with its state in PostgreSQL (``storage.url``): it answers, a Postgres restart
loses nothing and no log line shows the password (``check`` with PostgreSQL: tests/e2e/test_cli.py)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess
from tests.support.fixtures import create_database
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared dev server and fake LLM
# no Qdrant server can run here: each daemon keeps an embedded store (allowed for tests only)
EMBEDDED_BESIDE_POSTGRES = {"MCHAT_MEMORY_ALLOW_EMBEDDED_WITH_SHARED_STATE": "true"}


async def test_the_daemon_answers_from_postgres_and_loses_nothing_over_a_restart(
    dev: DevServer, llm: FakeLLM, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster, "mchat_e2e")
    daemon = DaemonProcess(dev, llm, tmp_path, env={"MCHAT_STORAGE_URL": url, **EMBEDDED_BESIDE_POSTGRES})
    await daemon.start()
    try:
        _, reply = await daemon.ask("kim", "qa", "@ai help")
        assert reply, daemon.log_tail()
        assert not (tmp_path / "data" / "mchat_bot.sqlite3").exists()  # the state is in PostgreSQL

        await asyncio.to_thread(pg_cluster.stop)
        try:
            channel = dev.seed.channels["qa"]
            post = await dev.user_post("kim", channel, "@ai 질문 재시작 중에 물어본 것")
            await asyncio.sleep(1.0)  # the socket hands it over while the database is away
        finally:
            await asyncio.to_thread(pg_cluster.start)
        replies = await daemon.replies_to(post, timeout=60.0)
        assert len(replies) == 1, daemon.log_tail()
        assert pg_cluster.password not in daemon.log_tail(200_000)
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.log_tail()
    assert "storage.migrated" in daemon.log_tail(200_000)


async def test_an_edit_made_while_postgres_restarts_is_followed(
    dev: DevServer, llm: FakeLLM, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """The follower's first step (claiming the edit in the shared state) meets the database away:
    it is tried again until the database is back, and the memory follows the edit."""
    url = create_database(pg_cluster, "mchat_follow")
    daemon = DaemonProcess(dev, llm, tmp_path, env={"MCHAT_STORAGE_URL": url, **EMBEDDED_BESIDE_POSTGRES})
    await daemon.start()
    try:
        word = uuid.uuid4().hex[:6]
        post, confirmed = await daemon.ask("kim", "qa", f"@ai remember gauge{word} is calibrated weekly")
        assert f"gauge{word}" in confirmed, daemon.log_tail()
        kim = dev.store.user_by_name("kim")
        assert kim is not None
        await asyncio.to_thread(pg_cluster.stop)
        try:
            dev.posts.patch(kim, post["id"], {"message": f"@ai remember gauge{word} is calibrated daily"})
            await asyncio.sleep(1.0)  # the socket hands the edit over while the database is away
        finally:
            await asyncio.to_thread(pg_cluster.start)
        await dev.wait_for_posts(
            lambda p: p["user_id"] == dev.seed.bot.id and f"gauge{word} is calibrated daily" in p["message"],
            timeout=60,
        )
        _, found = await daemon.ask("kim", "qa", f"@ai search gauge{word}")
        assert f"gauge{word} is calibrated daily" in found, found
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.log_tail()
