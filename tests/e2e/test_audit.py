"""The audit log end to end: the real daemon records remember/search/forget/answer with memory ids;
`mchat-bot audit` reads them back by user, channel and time; admin settings changes are recorded;
rows past `audit.retention_days` are pruned when the daemon starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.pipeline.audit import Audit, AuditRow
from mchat_bot.storage import SqliteStorage
from tests.support.daemon import DaemonProcess, running_daemon, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

DAY = 86400.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(dev: DevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("audit")
    # rows from before: one past the retention period (10 days here), one inside it
    async with SqliteStorage(folder / "mchat_bot.sqlite3") as storage:
        audit = Audit(storage)
        await audit.record(
            AuditRow(at=time.time() - 11 * DAY, action="search", user_name="ghost", detail="old")
        )
        await audit.record(
            AuditRow(at=time.time() - 2 * DAY, action="search", user_name="ghost", detail="new")
        )
    env = {"MCHAT_AUDIT_RETENTION_DAYS": "10"}
    async with FakeLLM() as llm, running_daemon(dev, llm, folder, env) as daemon:
        yield daemon


async def cli(bot: DaemonProcess, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    env["MCHAT_MATTERMOST_TOKEN"] = bot.dev.seed.bot.token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mchat_bot",
        *args,
        "--config",
        str(bot.folder / "config.toml"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def audit_rows(bot: DaemonProcess, *args: str) -> list[dict[str, Any]]:
    out = await cli(bot, "audit", "--jsonl", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_remember_search_forget_and_answer_are_recorded(bot: DaemonProcess, dev: DevServer) -> None:
    word = tag()
    remember_post, _ = await bot.ask("kim", "qa", f"@ai remember 포장 라인 {word} 정비는 금요일")
    search_post, _ = await bot.ask("lee", "qa", f"@ai search 포장 라인 {word}")
    answer_post, _ = await bot.ask("lee", "qa", f"@ai 포장 라인 {word} 정비는 언제?")

    rows = await audit_rows(bot, "--since", "10m", "--channel", "qa")
    by_post = {r["post_id"]: r for r in rows}
    remembered = by_post[remember_post["id"]]
    assert remembered["action"] == "remember" and remembered["outcome"] == "ok"
    assert remembered["user_id"] == dev.seed.users["kim"].id and remembered["user_name"] == "kim"
    assert remembered["channel_id"] == dev.seed.channels["qa"] and remembered["door"] == "websocket"
    assert len(remembered["memory_ids"]) == 1
    assert word not in remembered["detail"]  # the remembered text itself is not kept in the audit log
    memory_id = remembered["memory_ids"][0]

    searched = by_post[search_post["id"]]
    assert searched["action"] == "search" and searched["user_name"] == "lee"
    assert memory_id in searched["memory_ids"] and word in searched["detail"]
    answered = by_post[answer_post["id"]]
    assert answered["action"] == "answer" and memory_id in answered["memory_ids"]

    # what was disclosed is recorded by id: the list, the history, and a history of an id the asker
    # may not see (another channel's) is not an "ok"
    listed_post, _ = await bot.ask("lee", "qa", "@ai memories")
    history_post, _ = await bot.ask("lee", "qa", f"@ai history {memory_id}")
    _, private_reply = await bot.ask("kim", "qa-private", f"@ai remember 비공개 {word}")
    private_id = private_reply.split("**ID:** `")[1].split("`")[0] if "**ID:** `" in private_reply else ""
    hidden_post, _ = await bot.ask("lee", "qa", f"@ai history {private_id or 'ZZZZZZZZ'}")
    rows = {r["post_id"]: r for r in await audit_rows(bot, "--since", "10m", "--channel", "qa")}
    assert memory_id in rows[listed_post["id"]]["memory_ids"]
    assert (
        rows[history_post["id"]]["memory_ids"] == [memory_id] and rows[history_post["id"]]["outcome"] == "ok"
    )
    hidden = rows[hidden_post["id"]]
    assert hidden["outcome"] != "ok" and hidden["memory_ids"] == []

    forget_post, reply = await bot.ask("kim", "qa", f"@ai forget {memory_id}")
    assert "삭제" in reply or "forgotten" in reply.lower()
    rows = await audit_rows(bot, "--since", "10m", "--action", "forget")
    forgot = next(r for r in rows if r["post_id"] == forget_post["id"])
    assert forgot["memory_ids"] == [memory_id] and forgot["outcome"] == "ok"

    # a forget that removes nothing is recorded as such
    nothing_post, _ = await bot.ask("kim", "qa", f"@ai forget {memory_id}")
    rows = await audit_rows(bot, "--since", "10m", "--action", "forget")
    assert next(r for r in rows if r["post_id"] == nothing_post["id"])["outcome"] == "no_change"


async def test_cli_filters_by_user_channel_and_time(bot: DaemonProcess, dev: DevServer) -> None:
    word = tag()
    p1, _ = await bot.ask("park", "qa-private", f"@ai search 비밀 {word}")
    p2, _ = await bot.ask("park", "qa", f"@ai search 일정 {word}")
    p3, _ = await bot.ask("kim", "qa-private", f"@ai search 회의 {word}")

    park = {r["post_id"] for r in await audit_rows(bot, "--since", "10m", "--user", "park")}
    assert {p1["id"], p2["id"]} <= park and p3["id"] not in park
    by_id = {
        r["post_id"] for r in await audit_rows(bot, "--since", "10m", "--user", dev.seed.users["park"].id)
    }
    assert by_id == park
    private = {r["post_id"] for r in await audit_rows(bot, "--since", "10m", "--channel", "qa-private")}
    assert {p1["id"], p3["id"]} <= private and p2["id"] not in private
    both = await audit_rows(
        bot, "--since", "10m", "--user", "park", "--channel", dev.seed.channels["qa-private"]
    )
    assert [r["post_id"] for r in both if word in r["detail"]] == [p1["id"]]
    assert await audit_rows(bot, "--since", "2099-01-01") == []

    table = await cli(bot, "audit", "--since", "1h", "--user", "park")
    assert "search" in table and "park" in table and "row(s)" in table


async def test_admin_settings_change_is_recorded(bot: DaemonProcess, dev: DevServer) -> None:
    qa = dev.seed.channels["qa"]
    await cli(bot, "channels", "disable", qa)
    await cli(bot, "channels", "enable", qa)
    rows = await audit_rows(bot, "--since", "10m", "--channel", qa)
    actions = [r["action"] for r in rows if r["door"] == "cli"]
    assert actions[-2:] == ["channels.disable", "channels.enable"]
    assert all(r["user_name"] for r in rows if r["door"] == "cli")  # who: the operator's login


async def test_rows_past_retention_are_pruned_at_start(bot: DaemonProcess) -> None:
    ghost = await audit_rows(bot, "--since", "30d", "--user", "ghost")
    assert [r["detail"] for r in ghost] == ["new"]
    assert '"audit.pruned"' in bot.log_path.read_text()
