"""The daemon's HTTP server under abuse: half-sent requests, deep JSON, callers outside the allowlist.

The real daemon runs against the dev server; the attacks come over real sockets on 127.0.0.1, and the
checks are what a user and an operator see: a DM still answered within 2 s, /healthz still answering,
a 4xx for a bad body, and the log not flooded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, free_port, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOOK = "abuse-outgoing-token"
HEADER_TIMEOUT = 3.0
HALF_OPEN = 250


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[DaemonProcess, str]]:
    folder: Path = tmp_path_factory.mktemp("abuse")
    async with DevServer() as dev, FakeLLM() as llm:
        port = free_port()
        env = {
            "MCHAT_HTTP_LISTEN": f"127.0.0.1:{port}",
            "MCHAT_WEBHOOKS_OUTGOING_TOKENS": HOOK,
            "MCHAT_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        }
        bot = DaemonProcess(dev, llm, folder, env=env)
        await bot.start()
        try:
            yield bot, f"http://127.0.0.1:{port}"
        finally:
            assert await bot.stop() == 0, bot.log_tail()


async def _half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /mattermost/outgoing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    await writer.drain()  # and never the blank line that ends the head
    return reader, writer


async def test_half_open_requests_do_not_starve_the_bot(daemon: tuple[DaemonProcess, str]) -> None:
    bot, base = daemon
    port = int(base.rsplit(":", 1)[1])
    conns = await asyncio.gather(*(_half_open(port) for _ in range(HALF_OPEN)))
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            started = time.monotonic()
            r = await c.get(f"{base}/healthz")
            assert r.status_code == 200 and time.monotonic() - started < 2.0
        started = time.monotonic()
        _, reply = await bot.ask("kim", "dm", f"help {tag()}", timeout=10)
        assert reply and time.monotonic() - started < 2.0
        # the server closes each half-sent request once its head is overdue
        closed = 0
        deadline = time.monotonic() + HEADER_TIMEOUT + 5
        for reader, _ in conns:
            left = max(0.1, deadline - time.monotonic())
            try:
                data = await asyncio.wait_for(reader.read(), left)
            except (TimeoutError, ConnectionError):
                continue
            closed += data == b"" or data.startswith(b"HTTP/1.1 4")
        assert closed == HALF_OPEN
    finally:
        for _, writer in conns:
            writer.close()
    log = bot.log_tail(200_000)
    assert log.count("request_head_timeout") < 5, "repeated events must be counted, not logged one by one"
    assert "out of system resource" not in log


async def test_a_deeply_nested_json_body_is_a_400(daemon: tuple[DaemonProcess, str]) -> None:
    _, base = daemon
    body = b'{"token": "' + HOOK.encode() + b'", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert len(body) > 40_000
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(
            f"{base}/mattermost/outgoing", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and "nests" in r.json()["detail"], r.text
        r = await c.post(
            f"{base}/mattermost/outgoing",
            content=b"[" * 10_000,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400 and "nests" in r.json()["detail"]
        assert (await c.get(f"{base}/healthz")).status_code == 200
