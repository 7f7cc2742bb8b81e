"""Self-service through the real daemon: `export` puts a JSONL file of the asker's memories in their
DM (only they can download it) that `mchat-bot memory import` reads back as it was; `forget me`
leaves nothing of the asker in the store, the channel knowledge, the inbox or the audit text, and
takes nothing of anyone else's.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.knowledge.index import open_message_store
from mchat_bot.memory.embedder import Embedder
from mchat_bot.memory.store import Selection
from tests.support.daemon import running_daemon, tag
from tests.support.ops import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

NO_LLM = {"MCHAT_LLM_MODEL": ""}


def memory_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mchat_bot", "memory", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


async def download(dev: DevServer, user: str, file_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
        return await http.get(
            f"/api/v4/files/{file_id}", headers={"Authorization": f"Bearer {dev.seed.users[user].token}"}
        )


async def test_export_arrives_in_the_dm_and_round_trips_through_memory_import(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    mark = tag()
    (tmp_path / "bot").mkdir()
    async with running_daemon(dev, llm, tmp_path / "bot", env=NO_LLM) as bot:
        await bot.ask("kim", "dm", f"remember 개인: 사물함 번호는 {mark}-17")
        await bot.ask("kim", "qa", f"@ai remember 회의실 예약은 하루 전까지 {mark}")
        await bot.ask("lee", "qa", f"@ai remember 주차 등록은 총무팀 {mark}")
        _, refused = await bot.ask("kim", "qa", "@ai export")
        assert "direct message" in refused and not dev.posts_by(dev.seed.bot.id)[-1].get("file_ids")
        asked = await dev.user_post("kim", dev.seed.dm["kim"], "export")
        [reply] = await bot.replies_to(asked)
    assert reply["channel_id"] == dev.seed.dm["kim"] and reply["root_id"] == asked["id"], reply
    assert "2 memories" in reply["message"], reply["message"]
    [file_id] = reply["file_ids"]
    assert (await download(dev, "lee", file_id)).status_code == 403  # not lee's DM
    got = await download(dev, "kim", file_id)
    assert got.status_code == 200
    rows = [json.loads(line) for line in got.text.splitlines()]
    assert {r["user_id"] for r in rows} == {dev.seed.users["kim"].id}
    assert sorted(r["scope"] for r in rows) == ["channel", "user"]
    assert all(mark in r["text"] for r in rows) and not any("주차" in r["text"] for r in rows)

    # an administrator imports the file into another store: the same memories come back
    exported = tmp_path / "kim.jsonl"
    exported.write_bytes(got.content)
    other = tmp_path / "restored"
    memory_cli("import", "--path", str(other), "--jsonl", str(exported))
    back = [json.loads(line) for line in memory_cli("export", "--path", str(other)).splitlines()]
    assert {(r["id"], r["text"], r["scope"], r["channel_id"]) for r in back} == {
        (r["id"], r["text"], r["scope"], r["channel_id"]) for r in rows
    }


def rows_naming(db: Path, table: str, column: str, needle: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} LIKE ?", (f"%{needle}%",)).fetchone()
    return int(row[0])


async def test_forget_me_leaves_nothing_of_the_asker_and_takes_nothing_of_others(
    dev: DevServer, llm: FakeLLM, tmp_path: Path, embedder: Embedder
) -> None:
    mark, kim, lee = tag(), dev.seed.users["kim"].id, dev.seed.users["lee"].id
    qa = dev.seed.channels["qa"]
    env = NO_LLM | {"MCHAT_KNOWLEDGE_CHANNELS": qa, "MCHAT_KNOWLEDGE_BACKFILL_DAYS": "0"}
    async with running_daemon(dev, llm, tmp_path, env=env) as bot:
        await bot.ask("kim", "dm", f"remember 개인: 내 휴대폰 메모 {mark}")
        await bot.ask("kim", "qa", f"@ai remember QA 회의는 목요일 {mark}")
        await bot.ask("lee", "qa", f"@ai remember 검사 장비 교정은 매월 {mark}")
        await dev.user_post("kim", qa, f"코발트 협력사 단가가 올랐습니다 Cobalt{mark}")
        await dev.user_post("lee", qa, f"니켈 협력사는 그대로입니다 Nickel{mark}")

        async def search(word: str) -> str:
            return (await bot.ask("lee", "qa", f"@ai search {word}{mark}"))[1]

        await wait_for(lambda: search("Cobalt"), lambda text: "코발트 협력사" in text, timeout=20, every=0.3)

        _, preview = await bot.ask("kim", "dm", "forget me")
        assert "nothing deleted yet" in preview and "1 message of yours" in preview, preview
        assert f"QA 회의는 목요일 {mark}" in preview  # her channel memory, offered as a choice
        _, receipt = await bot.ask("kim", "dm", "forget me confirm")
        assert "Forgotten" in receipt and "1 personal memories" in receipt, receipt
        assert "1 message of yours" in receipt and "were kept" in receipt, receipt

        # nothing of hers is found any more; lee's line and memory are
        assert "코발트 협력사" not in await search("Cobalt")
        assert "니켈 협력사" in await wait_for(
            lambda: search("Nickel"), lambda text: "니켈 협력사" in text, timeout=20, every=0.3
        )
        _, mine = await bot.ask("kim", "dm", "my memories")
        assert "휴대폰" not in mine and f"QA 회의는 목요일 {mark}" in mine, mine  # kept: her choice
        _, everything = await bot.ask("kim", "dm", "forget me confirm all")
        assert "1 channel and team memories you wrote" in everything, everything
        _, lees = await bot.ask("lee", "qa", f"@ai search 교정 {mark}")
        assert f"검사 장비 교정은 매월 {mark}" in lees
        # a line is found by its keywords before it is embedded: stop only once the index holds it
        metrics = f"{await bot.http_url()}/metrics"
        async with httpx.AsyncClient(timeout=5.0) as http:

            async def backlog() -> str:
                return (await http.get(metrics)).text

            await wait_for(
                backlog, lambda text: "\nmchat_knowledge_backlog 0.0" in text, timeout=30, every=0.3
            )

    db = tmp_path / "mchat_bot.sqlite3"
    assert rows_naming(db, "knowledge_line", "user_id", kim) == 0
    assert rows_naming(db, "knowledge_line", "user_id", lee) >= 1
    assert rows_naming(db, "inbox", "payload", kim) == 0 and rows_naming(db, "inbox", "payload", mark) == 0
    with sqlite3.connect(db) as conn:  # her actions stay in the audit, never her words
        details = conn.execute("SELECT action, detail FROM audit_log WHERE user_id = ?", (kim,)).fetchall()
    assert ("remember", "") in details and not [d for _, d in details if mark in d or "휴대폰" in d], details
    for f in sorted(tmp_path.glob("mchat_bot.sqlite3*")):  # noqa: ASYNC240 (the daemon is stopped)
        assert "코발트 협력사 단가가".encode() not in f.read_bytes(), f
    # the store and the index, opened as the daemon opens them
    memories = [
        json.loads(line) for line in memory_cli("export", "--path", str(tmp_path / "qdrant")).splitlines()
    ]
    assert not [m for m in memories if m["user_id"] == kim]
    assert [m for m in memories if m["user_id"] == lee and mark in m["text"]]
    index = open_message_store(tmp_path / "qdrant", None, embedder)
    try:
        lines: list[Any] = [m async for m in index.scan(Selection())]
    finally:
        await index.close()
    assert lines and not [m for m in lines if m.user_id == kim or f"Cobalt{mark}" in m.text]
