"""The dev server's bench hooks: when `posted` reached the bot's socket, when its reply came back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets

from mchat_bot.devserver import DevServer


@pytest.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer(host="127.0.0.1", port=0) as server:
        yield server


async def _bot_socket(dev: DevServer) -> Any:
    ws = await websockets.connect(
        dev.url.replace("http", "ws") + "/api/v4/websocket",
        additional_headers={"Authorization": f"Bearer {dev.seed.bot.token}"},
    )
    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello["event"] == "hello"
    return ws


async def _next_posted(ws: Any) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if frame.get("event") == "posted":
            return json.loads(frame["data"]["post"])


async def test_socket_write_and_reply_arrival_are_timed(dev: DevServer) -> None:
    before = time.monotonic()
    ws = await _bot_socket(dev)
    try:
        qa = dev.seed.channels["qa"]
        asked = await dev.user_post("kim", qa, "@memorybot what is the defect rate?")
        assert (await _next_posted(ws))["id"] == asked["id"]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{dev.url}/api/v4/posts",
                json={
                    "channel_id": qa,
                    "message": "12%",
                    "root_id": asked["id"],
                    "props": {"mchat_reply_to": asked["id"]},
                },
                headers={"Authorization": f"Bearer {dev.seed.bot.token}"},
            ) as r:
                assert r.status == 201
            async with http.get(f"{dev.url}/__dev/timings?user_id={dev.seed.bot.id}") as r:
                t = await r.json()
            sent = t["posted_sent"][asked["id"]]
            replied = t["reply_at"][asked["id"]]
            assert before <= t["auth_at"][dev.seed.bot.id][0] <= sent <= replied <= time.monotonic()
            assert dev.post_timestamps[asked["id"]] <= sent  # created, then written to the socket

            async with http.post(f"{dev.url}/__dev/timings/clear", json={}) as r:
                assert r.status == 200
            async with http.get(f"{dev.url}/__dev/timings") as r:
                assert await r.json() == {"posted_sent": {}, "reply_at": {}, "auth_at": {}}
    finally:
        await ws.close()


async def test_batch_posts_reach_the_socket_in_order(dev: DevServer) -> None:
    ws = await _bot_socket(dev)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{dev.url}/__dev/user_posts",
                json={
                    "username": "lee",
                    "channel_id": dev.seed.channels["qa"],
                    "messages": [f"chat {i}" for i in range(20)],
                },
            ) as r:
                assert r.status == 201
                ids = (await r.json())["ids"]
            async with http.post(
                f"{dev.url}/__dev/user_posts",
                json={"username": "nobody", "channel_id": "x", "messages": ["a"]},
            ) as r:
                assert r.status == 400
        got = [(await _next_posted(ws))["id"] for _ in ids]
        assert got == ids
        assert set(ids) <= set(dev.posts.timings.posted_sent[dev.seed.bot.id])
    finally:
        await ws.close()


async def test_loop_lag_is_sampled_once_asked_and_cleared(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as http:

        async def lag() -> dict[str, Any]:
            async with http.get(f"{dev.url}/__dev/loop_lag") as r:
                assert r.status == 200
                return dict(await r.json())

        started = time.monotonic()
        assert (await lag())["samples"] == []  # nothing ran before the first call
        await asyncio.sleep(0.2)
        got = await lag()
        after = time.monotonic()
        assert got["every_s"] > 0
        # on this process's monotonic clock, never early, at most one per `every_s` (a busy loop wakes later)
        assert 1 <= len(got["samples"]) <= (after - started) / got["every_s"] + 1
        assert all(started <= at <= after and late >= -0.001 for at, late in got["samples"])

        cleared = time.monotonic()
        async with http.post(f"{dev.url}/__dev/timings/clear", json={}) as r:
            assert r.status == 200
        assert all(at >= cleared for at, _ in (await lag())["samples"])
