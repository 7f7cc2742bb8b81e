"""/healthz and /readyz on a real socket, served by the daemon's own HTTP server, asking real parts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI

from mchat_bot.doors.web.server import HttpServer
from mchat_bot.memory.store import EdgeMemoryStore
from mchat_bot.observe import health
from mchat_bot.observe.readiness import Readiness, memory_check, socket_check, storage_check
from mchat_bot.storage import SqliteStorage

TIMEOUT = aiohttp.ClientTimeout(total=10)


@contextlib.asynccontextmanager
async def serving(readiness: Readiness) -> AsyncIterator[str]:
    """The operator endpoints installed on an app, as the daemon does, on a free port of 127.0.0.1."""
    app = FastAPI()
    health.install(app, readiness)
    server = HttpServer(app, "127.0.0.1:0", grace=1.0)
    server.bind()
    task = asyncio.create_task(server.run())
    base = f"http://127.0.0.1:{server.port}"
    try:
        await _until_listening(base)
        yield base
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until_listening(base: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        while True:
            try:
                async with session.get(f"{base}/healthz") as resp:
                    await resp.read()
                    return
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)


async def get(base: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(base + path) as resp:
        return resp.status, await resp.json()


async def test_healthz_says_alive_with_the_uptime() -> None:
    readiness = Readiness(started_at=time.time() - 5)
    async with serving(readiness) as base:
        status, body = await get(base, "/healthz")
    assert status == 200
    assert body["alive"] is True and 5.0 <= body["uptime_s"] < 60


async def test_readyz_is_503_while_the_parts_are_not_built_yet() -> None:
    async with serving(Readiness()) as base:
        status, body = await get(base, "/readyz")
    assert status == 503
    assert body == {
        "ready": False,
        "checks": {name: {"ok": False, "reason": "starting"} for name in ("socket", "storage", "memory")},
    }


async def test_readyz_is_200_when_socket_storage_and_memory_answer(
    tmp_path: Path, store: EdgeMemoryStore
) -> None:
    authenticated = asyncio.Event()
    authenticated.set()
    async with SqliteStorage(tmp_path / "db.sqlite3") as storage:
        readiness = Readiness(
            checks={
                "socket": socket_check(authenticated),
                "storage": storage_check(storage),
                "memory": memory_check(store),
            }
        )
        async with serving(readiness) as base:
            status, body = await get(base, "/readyz")
    assert status == 200
    assert body == {"ready": True, "checks": {n: {"ok": True} for n in ("socket", "storage", "memory")}}


async def test_readyz_names_each_failing_part_and_healthz_stays_up(
    tmp_path: Path, store: EdgeMemoryStore
) -> None:
    """A lost socket, a storage that raises and a part that hangs: 503 with one reason each."""
    storage = SqliteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    await storage.close()  # every query on it now raises

    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    readiness = Readiness(
        checks={
            "socket": socket_check(asyncio.Event()),  # never authenticated
            "storage": storage_check(storage),
            "memory": hangs,
        },
        timeout=0.3,
    )
    async with serving(readiness) as base:
        started = time.monotonic()
        (status, body), (alive, _) = await asyncio.gather(get(base, "/readyz"), get(base, "/healthz"))
        took = time.monotonic() - started  # a hanging part holds /readyz only for its timeout
        await store.count()  # the store opens lazily: not inside the 0.3 s a check is given
        async with SqliteStorage(tmp_path / "good.sqlite3") as good:
            authenticated = asyncio.Event()
            authenticated.set()
            readiness.checks.update(
                socket=socket_check(authenticated),
                storage=storage_check(good),
                memory=memory_check(store),
            )
            recovered, _ = await get(base, "/readyz")
    assert alive == 200
    assert status == 503 and body["ready"] is False
    checks = body["checks"]
    assert checks["socket"] == {"ok": False, "reason": "websocket not connected/authenticated"}
    assert checks["storage"]["ok"] is False and checks["storage"]["reason"]
    assert checks["memory"] == {"ok": False, "reason": "no answer within 0.3s"}
    assert took < 3.0
    assert recovered == 200  # ready again as soon as the parts answer


async def test_metrics_are_served_as_prometheus_text() -> None:
    async with serving(Readiness()) as base, aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(f"{base}/metrics") as resp:
            text = await resp.text()
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in text
