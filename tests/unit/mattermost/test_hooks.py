"""Posting through Mattermost's hook URLs over a real socket: retries on 429 and 5xx, a 4xx is final."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from mchat_bot.mattermost.hooks import HookError, IncomingWebhookSender, hook_session, post_hook


async def test_incoming_webhook_sender_retries_429_and_5xx(unused_tcp_port: int) -> None:
    seen: list[dict[str, Any]] = []
    statuses = [429, 503, 200]

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.json())
        status = statuses.pop(0)
        headers = {"Retry-After": "0"} if status == 429 else {}
        return web.Response(status=status, text="ok" if status == 200 else "busy", headers=headers)

    app = web.Application()
    app.router.add_post("/hooks/abc", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        session = hook_session(f"http://127.0.0.1:{unused_tcp_port}")
        try:
            sender = IncomingWebhookSender(
                session, f"http://127.0.0.1:{unused_tcp_port}/hooks/abc", username="AI Memory Bot"
            )
            await sender.send("hello", channel="qa")
            assert len(seen) == 3 and seen[-1] == {
                "text": "hello",
                "channel": "qa",
                "username": "AI Memory Bot",
            }
            statuses.extend([400])
            with pytest.raises(HookError) as err:
                await sender.send("bad")
            assert err.value.status == 400
        finally:
            await session.aclose()
    finally:
        await runner.cleanup()


async def test_a_hook_url_off_the_server_is_refused_unsent(unused_tcp_port: int) -> None:
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    session = hook_session("http://127.0.0.1:1")  # the server is elsewhere: this listener is not it
    try:
        with pytest.raises(HookError) as err:
            await post_hook(session, f"http://127.0.0.1:{unused_tcp_port}/hooks/abc", {"text": "x"})
        assert err.value.status == 400
        assert seen == []
    finally:
        await session.aclose()
        await runner.cleanup()
