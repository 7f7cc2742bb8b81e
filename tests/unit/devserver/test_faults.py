"""Fault switches and WebSocket rules of the dev server, seen from a client over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from mchat_bot.devserver import DevServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer(port=0) as d:
        yield d


class Client:
    """A bot-side WebSocket that records every text frame (aiohttp, so pings are visible)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.pings = 0
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.raw.append(msg.data)
                    try:
                        self.frames.append(json.loads(msg.data))
                    except ValueError:
                        pass
                elif msg.type == aiohttp.WSMsgType.PING:
                    self.pings += 1
        finally:
            self.closed.set()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if "event" in f and (name is None or f["event"] == name)]

    async def wait(self, pred: Any, within: float = 3.0) -> dict[str, Any]:
        end = time.monotonic() + within
        while time.monotonic() < end:
            for f in self.frames:
                if pred(f):
                    return f
            await asyncio.sleep(0.01)
        raise AssertionError(
            f"no matching frame; got {[f.get('event', f.get('status')) for f in self.frames]}"
        )


async def connect(
    session: aiohttp.ClientSession, dev: DevServer, token: str, autoping: bool = True, **query: Any
) -> Client:
    ws = await session.ws_connect(
        dev.url + "/api/v4/websocket",
        headers={"Authorization": f"Bearer {token}"},
        params={k: str(v) for k, v in query.items()},
        autoping=autoping,
        timeout=aiohttp.ClientWSTimeout(ws_close=2),
        max_msg_size=16 * 2**20,
    )
    return Client(ws)


def posted_id(f: dict[str, Any]) -> str:
    return json.loads(f["data"]["post"])["id"] if f.get("event") == "posted" else ""


async def test_drop_and_resume_replays_missed_events(dev: DevServer) -> None:
    qa = dev.seed.channels["qa"]
    async with aiohttp.ClientSession() as s:
        c1 = await connect(s, dev, dev.seed.bot.token)
        hello = await c1.wait(lambda f: f.get("event") == "hello")
        p0 = await dev.user_post("kim", qa, "before the drop")
        await c1.wait(lambda f: posted_id(f) == p0["id"])
        last = max(f["seq"] for f in c1.events())
        assert dev.faults.drop_sockets() == 1
        await asyncio.wait_for(c1.closed.wait(), 2)
        assert c1.ws.close_code in (None, 1006)  # no close frame
        missed = [await dev.user_post("kim", qa, f"missed {i}") for i in range(2)]
        c2 = await connect(
            s, dev, dev.seed.bot.token, connection_id=hello["data"]["connection_id"], sequence_number=last + 1
        )
        await c2.wait(lambda f: posted_id(f) == missed[-1]["id"])
        evs = c2.events()
        assert not c2.events("hello")
        assert [posted_id(e) for e in evs] == [p["id"] for p in missed]
        assert [e["seq"] for e in evs] == [last + 1, last + 2]
        await c2.ws.close()


async def test_restart_loses_replay(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as s:
        c1 = await connect(s, dev, dev.seed.bot.token)
        hello = await c1.wait(lambda f: f.get("event") == "hello")
        await dev.restart(lose_replay=True)
        await asyncio.wait_for(c1.closed.wait(), 2)
        old = hello["data"]["connection_id"]
        c2 = await connect(s, dev, dev.seed.bot.token, connection_id=old, sequence_number=1)
        h2 = await c2.wait(lambda f: "event" in f)
        assert h2["event"] == "hello" and h2["seq"] == 0
        assert h2["data"]["connection_id"] != old
        await c2.ws.close()


async def test_dead_queue_eviction_means_loss(dev: DevServer) -> None:
    qa = dev.seed.channels["qa"]
    async with aiohttp.ClientSession() as s:
        c1 = await connect(s, dev, dev.seed.bot.token)
        hello = await c1.wait(lambda f: f.get("event") == "hello")
        for i in range(130):
            await dev.user_post("kim", qa, f"flood {i}")
        await c1.wait(lambda f: f.get("seq") == 130)
        dev.faults.drop_sockets()
        await asyncio.wait_for(c1.closed.wait(), 2)
        cid = hello["data"]["connection_id"]
        c2 = await connect(s, dev, dev.seed.bot.token, connection_id=cid, sequence_number=2)  # evicted
        h = await c2.wait(lambda f: "event" in f)
        assert h["event"] == "hello" and h["data"]["connection_id"] != cid
        await c2.ws.close()


async def test_fail_posts_429_is_plain_text_with_headers(dev: DevServer) -> None:
    dev.faults.fail_posts(1, status=429)
    body = {"channel_id": dev.seed.channels["qa"], "message": "hi"}
    h = {"Authorization": f"Bearer {dev.seed.bot.token}"}
    async with httpx.AsyncClient(base_url=dev.url + "/api/v4", timeout=5, trust_env=False) as http:
        r = await http.post("/posts", json=body, headers=h)
        assert r.status_code == 429
        assert r.text == "limit exceeded\n"
        assert r.headers["content-type"].startswith("text/plain")
        assert r.headers["retry-after"] == "1"
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)
        ok = await http.post("/posts", json=body, headers=h)
        assert ok.status_code == 201
        dev.faults.fail_posts(1, status=503)
        r = await http.post("/posts", json=body, headers=h)
        assert r.status_code == 503 and r.headers["content-type"] == "application/json"
        assert r.json()["status_code"] == 503 and r.json()["request_id"] == r.headers["x-request-id"]
    assert len(dev.posts_by(dev.seed.bot.id)) == 1


async def test_pending_post_id_dedupe_and_in_flight_500(dev: DevServer) -> None:
    h = {"Authorization": f"Bearer {dev.seed.bot.token}"}
    body = {"channel_id": dev.seed.channels["qa"], "message": "once", "pending_post_id": "p-1"}
    async with httpx.AsyncClient(base_url=dev.url + "/api/v4", timeout=5, trust_env=False) as http:
        dev.faults.delay_posts(0.3)
        first = asyncio.create_task(http.post("/posts", json=body, headers=h))
        await asyncio.sleep(0.1)
        busy = await http.post("/posts", json=body, headers=h)
        assert busy.status_code == 500
        assert busy.json()["id"] == "api.post.deduplicate_create_post.pending"
        r1 = await first
        dev.faults.delay_posts(0)
        r2 = await http.post("/posts", json=body, headers=h)
        assert r1.status_code == r2.status_code == 201
        assert r1.json()["id"] == r2.json()["id"]
        # a failed create frees the key so a retry goes through
        dev.faults.fail_posts(0)
        bad = {**body, "pending_post_id": "p-2", "root_id": "x" * 26}
        assert (await http.post("/posts", json=bad, headers=h)).status_code == 400
        good = await http.post("/posts", json={**body, "pending_post_id": "p-2"}, headers=h)
        assert good.status_code == 201
    assert len(dev.posts_by(dev.seed.bot.id)) == 2


async def test_freeze_holds_frames_and_resume_of_half_open_is_fresh(dev: DevServer) -> None:
    qa = dev.seed.channels["qa"]
    async with aiohttp.ClientSession() as s:
        c1 = await connect(s, dev, dev.seed.bot.token)
        hello = await c1.wait(lambda f: f.get("event") == "hello")
        dev.faults.freeze_sockets(True)
        p = await dev.user_post("kim", qa, "while frozen")
        await asyncio.sleep(0.3)
        assert not any(posted_id(f) == p["id"] for f in c1.frames)
        c2 = await connect(
            s, dev, dev.seed.bot.token, connection_id=hello["data"]["connection_id"], sequence_number=1
        )
        dev.faults.freeze_sockets(False)
        h2 = await c2.wait(lambda f: "event" in f)
        assert h2["event"] == "hello" and h2["data"]["connection_id"] != hello["data"]["connection_id"]
        await c1.wait(lambda f: posted_id(f) == p["id"])  # held frame goes out after unfreezing
        await c1.ws.close()
        await c2.ws.close()


async def test_server_pings_and_pong_deadline() -> None:
    async with DevServer(port=0, ws_ping_interval=0.1, pong_wait=0.6) as dev, aiohttp.ClientSession() as s:
        c = await connect(s, dev, dev.seed.bot.token, autoping=False)  # never answers pings
        t0 = time.monotonic()
        await asyncio.wait_for(c.closed.wait(), 3)
        assert c.pings >= 2
        assert 0.5 <= time.monotonic() - t0 < 2.0


async def test_send_raw_to_bot_and_posted_mentions(dev: DevServer) -> None:
    seed = dev.seed
    async with aiohttp.ClientSession() as s:
        bot = await connect(s, dev, seed.bot.token)
        lee = await connect(s, dev, seed.users["lee"].token)
        await bot.wait(lambda f: f.get("event") == "hello")
        assert await dev.faults.send_raw_to_bot("{not json") == 1
        await bot.wait(lambda f: True)
        for _ in range(100):
            if "{not json" in bot.raw:
                break
            await asyncio.sleep(0.01)
        assert "{not json" in bot.raw
        gm = await dev.user_post("kim", seed.gm, "hello group")
        ev = await bot.wait(lambda f: posted_id(f) == gm["id"])
        assert ev["data"]["channel_type"] == "G" and ev["data"]["team_id"] == ""
        assert json.loads(ev["data"]["mentions"]) == [seed.bot.id]
        code = await dev.user_post("kim", seed.channels["qa"], "```\n@memorybot\n```\nand @lee.")
        ev_bot = await bot.wait(lambda f: posted_id(f) == code["id"])
        ev_lee = await lee.wait(lambda f: posted_id(f) == code["id"])
        assert "mentions" not in ev_bot["data"]
        assert json.loads(ev_lee["data"]["mentions"]) == [seed.users["lee"].id]
        nb = await dev.user_post("kim", seed.channels["no-bot"], "@memorybot you can't see this")
        await lee.wait(lambda f: posted_id(f) == nb["id"])
        await asyncio.sleep(0.1)
        assert not any(posted_id(f) == nb["id"] for f in bot.frames)
        await bot.ws.close()
        await lee.ws.close()


async def test_python_api_wait_thread_and_timestamps(dev: DevServer) -> None:
    qa = dev.seed.channels["qa"]
    root = await dev.user_post("kim", qa, "root")
    waiter = asyncio.create_task(dev.wait_for_posts(lambda p: p["root_id"] == root["id"], count=2, timeout=3))
    await dev.user_post("lee", qa, "r1", root_id=root["id"])
    await dev.user_post("park", qa, "r2", root_id=root["id"])
    got = await waiter
    assert [p["message"] for p in got] == ["r1", "r2"]
    assert [p["message"] for p in dev.thread(root["id"])] == ["root", "r1", "r2"]
    assert root["id"] in dev.post_timestamps
    with pytest.raises(TimeoutError):
        await dev.wait_for_posts(lambda p: p["message"] == "never", timeout=0.2)


async def test_control_api_and_rate_limiter(dev: DevServer) -> None:
    async with httpx.AsyncClient(base_url=dev.url, timeout=5, trust_env=False) as http:
        seed = (await http.get("/__dev/seed")).json()
        assert seed["bot"]["id"] == dev.seed.bot.id and seed["channels"]["qa"] == dev.seed.channels["qa"]
        r = await http.post(
            "/__dev/user_post",
            json={"username": "kim", "channel_id": seed["channels"]["qa"], "message": "ctl"},
        )
        assert r.status_code == 201 and r.json()["user_id"] == dev.seed.users["kim"].id
        await http.post("/__dev/faults/rate_limit", json={"enabled": True, "per_sec": 1, "burst": 2})
        h = {"Authorization": f"Bearer {dev.seed.bot.token}"}
        codes = [(await http.get("/api/v4/users/me", headers=h)) for _ in range(4)]
        assert [c.status_code for c in codes] == [200, 200, 200, 429]
        assert codes[0].headers["x-ratelimit-limit"] == "3"
        assert codes[0].headers["x-ratelimit-remaining"] == "2"
        assert codes[3].headers["retry-after"] == "1" and codes[3].text == "limit exceeded\n"
        await http.post("/__dev/faults/reset")
        assert (await http.get("/api/v4/users/me", headers=h)).status_code == 200


async def test_send_queue_overflow_closes_without_status(dev: DevServer) -> None:
    url = dev.url.replace("http://", "ws://") + "/api/v4/websocket"
    auth = {"Authorization": f"Bearer {dev.seed.bot.token}"}
    async with ws_connect(url, additional_headers=auth, proxy=None, open_timeout=3) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 3))["event"] == "hello"
        dev.faults.freeze_sockets(True)  # nothing drains the 256-slot send queue
        for i in range(257):
            await dev.user_post("kim", dev.seed.channels["qa"], f"overflow {i}")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1005
    assert len(dev.hub.conns) == 0
