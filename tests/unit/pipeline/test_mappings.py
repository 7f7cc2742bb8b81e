"""The mapping tables on SQLite and PostgreSQL: filled as messages are seen, switched by the admin."""

from __future__ import annotations

from pathlib import Path

import pytest

from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.storage import storage_at
from tests.support.factories import message

pytestmark = pytest.mark.both_dialects


def msg(channel: str = "c1", name: str = "qa", user: str = "u1", user_name: str = "kim") -> IncomingMessage:
    return message(
        "@ai help", post_id="p1", channel=channel, channel_name=name, user=user, name=user_name, at=0
    )


async def test_seen_channels_and_users_are_recorded_once(storage_target: str | Path) -> None:
    async with storage_at(storage_target) as st:
        m = Mappings(st, cache_ttl=0)
        row = await m.see(msg())
        assert row.is_active and row.mchat_channel_name == "qa" and row.mchat_team_id == "t1"
        await m.see(msg(name="qa-renamed"))
        await m.see(msg(name="qa-renamed", user="u2", user_name="lee"))
        channels = await m.channels()
        assert [(c.mchat_channel_id, c.mchat_channel_name) for c in channels] == [("c1", "qa-renamed")]
        assert [u.mchat_username for u in await m.users()] == ["kim", "lee"]


async def test_disable_enable_and_webhook_survive_a_reopen(storage_target: str | Path) -> None:
    async with storage_at(storage_target) as st:
        m = Mappings(st, cache_ttl=0)
        assert await m.is_active("never-seen")
        await m.set_active("c9", False)  # before the channel was ever seen: the switch holds
        await m.set_webhook("c9", "https://mm.example/hooks/abc")
        row = await m.see(msg(channel="c9", name="later"))
        assert not row.is_active and row.mchat_channel_name == "later"
    async with storage_at(storage_target) as st:
        m = Mappings(st, cache_ttl=0)
        assert not await m.is_active("c9")
        await m.set_active("c9", True)
        row = await m.channel("c9")
        assert row is not None and row.is_active and row.incoming_webhook_url.endswith("/hooks/abc")


async def test_the_cache_sees_another_process_switch_after_its_ttl(storage_target: str | Path) -> None:
    async with storage_at(storage_target) as daemon_db, storage_at(storage_target) as admin_db:
        daemon = Mappings(daemon_db, cache_ttl=0.2)
        await daemon.see(msg())
        assert await daemon.is_active("c1")
        await Mappings(admin_db).set_active("c1", False)
        import asyncio

        await asyncio.sleep(0.25)
        assert not await daemon.is_active("c1")


async def test_migration_adds_the_tables(tmp_path: Path) -> None:  # both engines: tests/unit/storage
    async with storage_at(tmp_path / "db.sqlite3") as st:
        assert await st.schema_version() >= 2
        names = {r[0] for r in await st.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"mchat_channel_mapping", "mchat_user_mapping", "door_context"} <= names


async def test_a_change_after_caching_is_still_written(storage_target: str | Path) -> None:
    async with storage_at(storage_target) as st:
        m = Mappings(st)  # the default TTL: the rows below are served from memory
        await m.see(msg())
        await m.see(msg())  # nothing new: no write
        await m.see(msg(name="qa-2", user_name="kim-2"))  # renamed channel and user: written
        await m.see(msg(name="", user_name=""))  # a door that does not know the names: kept
        row = await m.see(
            IncomingMessage(
                post_id="p2",
                channel_id="c1",
                channel_type="O",
                channel_name="qa-2",
                team_id="t2",
                user_id="u1",
                user_name="kim-2",
                message="@ai help",
            )
        )
        assert row.mchat_team_id == "t2" and row.mchat_channel_name == "qa-2"
    async with storage_at(storage_target) as st:  # what another process (the admin's CLI) reads
        m = Mappings(st)
        [channel] = await m.channels()
        assert (channel.mchat_channel_name, channel.mchat_team_id) == ("qa-2", "t2")
        assert [u.mchat_username for u in await m.users()] == ["kim-2"]
