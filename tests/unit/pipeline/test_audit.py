"""The audit log's parts without a daemon: retention pruning, query filters, --since forms, settings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mchat_bot.config import ConfigError, load_settings
from mchat_bot.pipeline.audit import Audit, AuditRow, short_detail
from mchat_bot.storage import storage_at

DAY = 86400.0

pytestmark = pytest.mark.both_dialects


async def test_prune_keeps_exactly_the_retention_period(storage_target: str | Path) -> None:
    now = 1_800_000_000.0
    async with storage_at(storage_target) as storage:
        audit = Audit(storage, retention_days=90)
        for age_days in (91, 90.01, 89.99, 1):
            await audit.record(AuditRow(at=now - age_days * DAY, action="search", detail=f"{age_days}"))
        assert await audit.prune(now) == 2
        kept = await audit.query(since=0)
        assert [r.detail for r in kept] == ["89.99", "1"]
        assert await audit.prune(now) == 0


async def test_query_filters_by_user_channel_action_and_time(storage_target: str | Path) -> None:
    async with storage_at(storage_target) as storage:
        audit = Audit(storage)
        rows = [
            AuditRow(
                at=100, action="remember", user_id="u1", user_name="kim", channel_id="c1", channel_name="qa"
            ),
            AuditRow(
                at=200, action="search", user_id="u2", user_name="lee", channel_id="c1", channel_name="qa"
            ),
            AuditRow(
                at=300, action="forget", user_id="u1", user_name="kim", channel_id="c2", memory_ids=("m1",)
            ),
        ]
        for row in rows:
            await audit.record(row)
        assert [r.action for r in await audit.query(user="kim")] == ["remember", "forget"]
        assert [r.action for r in await audit.query(user="@kim")] == ["remember", "forget"]
        assert [r.action for r in await audit.query(user="u2")] == ["search"]
        assert [r.action for r in await audit.query(channel="qa")] == ["remember", "search"]
        assert [r.action for r in await audit.query(channel="c2")] == ["forget"]
        assert [r.action for r in await audit.query(since=150, until=250)] == ["search"]
        assert [r.action for r in await audit.query(action="forget")] == ["forget"]
        assert (await audit.query(action="forget"))[0].memory_ids == ("m1",)
        assert [r.action for r in await audit.query(limit=2)] == ["search", "forget"]  # the newest, in order


def test_details_are_short_and_filtered() -> None:
    text = "call me at 010-1234-5678 or kim@example.com " + "x" * 500
    detail = short_detail(text)
    assert len(detail) < 260
    assert "010-1234-5678" not in detail and "kim@example.com" not in detail


def test_retention_days_setting_is_validated() -> None:
    env = {"MCHAT_MATTERMOST_URL": "http://127.0.0.1:1", "MCHAT_MATTERMOST_TOKEN": "t" * 26}
    assert load_settings(None, env).audit.retention_days == 90
    assert load_settings(None, env | {"MCHAT_AUDIT_RETENTION_DAYS": "7"}).audit.retention_days == 7
    with pytest.raises(ConfigError, match=r"audit\.retention_days"):
        load_settings(None, env | {"MCHAT_AUDIT_RETENTION_DAYS": "0"})
    with pytest.raises(ConfigError, match=r"audit\.retention_days"):
        load_settings(None, env | {"MCHAT_AUDIT_RETENTION_DAYS": "ninety"})


async def test_a_failing_write_never_raises(storage_target: str | Path) -> None:
    storage = await storage_at(storage_target).open()
    await storage.close()
    await Audit(storage).record(AuditRow(at=time.time(), action="search"))  # closed: logged, not raised
