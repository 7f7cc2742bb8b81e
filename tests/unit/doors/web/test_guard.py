"""The HTTP server's guard on a real socket: the accept-time allowlist, the per-path allowlists, the
request-head deadline, and the counting of repeated events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from fastapi import FastAPI

from mchat_bot.doors.web.guard import PathAllowlist, allowed, networks
from mchat_bot.doors.web.server import HttpServer
from mchat_bot.observe.logging import QuietCounter


@contextlib.asynccontextmanager
async def serve(
    *, accept_from: Sequence[str] = (), webhooks: Sequence[str] = (), operators: Sequence[str] = ()
) -> AsyncIterator[str]:
    app = FastAPI()

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"ok": "metrics"}

    @app.post("/mattermost/outgoing")
    async def outgoing() -> dict[str, str]:
        return {"ok": "hook"}

    app.add_middleware(PathAllowlist, webhooks=networks(webhooks), operators=networks(operators))
    server = HttpServer(app, "127.0.0.1:0", grace=1.0, accept_from=accept_from, header_timeout=0.5)
    server.bind()
    task = asyncio.create_task(server.run())
    while server.server is None or not server.server.started:  # noqa: ASYNC110 (uvicorn has no started event)
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_allowed_reads_v4_v6_and_mapped_addresses() -> None:
    nets = networks(["10.0.0.0/8", "::1"])
    assert allowed("10.1.2.3", nets) and allowed("::1", nets) and allowed("::ffff:10.0.0.7", nets)
    assert not allowed("127.0.0.1", nets) and not allowed("", nets) and not allowed(None, nets)
    assert allowed("203.0.113.9", ())  # no list: everyone


async def test_a_caller_outside_every_list_is_dropped_at_accept() -> None:
    async with serve(accept_from=["10.0.0.0/8"], webhooks=["10.0.0.0/8"], operators=["10.0.0.0/8"]) as url:
        async with httpx.AsyncClient(timeout=5) as c:
            with pytest.raises(httpx.TransportError):  # closed before a byte of HTTP was exchanged
                await c.get(f"{url}/metrics")


async def test_operators_and_webhooks_have_their_own_lists() -> None:
    async with serve(
        accept_from=["10.0.0.0/8", "127.0.0.1"], webhooks=["10.0.0.0/8"], operators=["127.0.0.1"]
    ) as url:
        async with httpx.AsyncClient(timeout=5) as c:
            assert (await c.get(f"{url}/metrics")).status_code == 200
            r = await c.post(f"{url}/mattermost/outgoing")
            assert r.status_code == 403 and "http.allow_from" in r.json()["detail"]
    async with serve(webhooks=["127.0.0.1"], operators=["10.0.0.0/8"]) as url:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(f"{url}/metrics")
            assert r.status_code == 403 and "allow_from_metrics" in r.json()["detail"]
            assert (await c.post(f"{url}/mattermost/outgoing")).status_code == 200


async def test_a_request_head_that_never_ends_is_closed_and_a_kept_alive_one_too() -> None:
    async with serve() as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        # a complete request is served; the next, half-sent head on the same connection is closed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b'"metrics"}'), 3)
        assert first.startswith(b"HTTP/1.1 200")
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()


def test_a_repeated_event_is_logged_once_per_period_with_its_count() -> None:
    counter = QuietCounter(every=60)
    assert counter.due() == 1  # the first is logged
    assert [counter.due() for _ in range(99)] == [0] * 99  # the rest are counted
    counter._next = 0  # the period is over
    assert counter.due() == 100
