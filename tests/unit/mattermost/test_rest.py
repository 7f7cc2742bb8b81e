"""RestClient against a tiny scripted HTTP server on 127.0.0.1 (edge cases the devserver can't script).

The devserver integration tests cover the real endpoints; here each handler answers what a test
scripts (plain-text 429 with lower/odd-cased headers, AppErrors, hangs) and records what it got.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from mchat_bot.mattermost.rest import (
    Dropped,
    MattermostError,
    MattermostUnavailable,
    Priority,
    RestClient,
    RestHooks,
)

TOKEN = "sekrit-token-1234567890"


@dataclass
class Scripted:
    """Answers queued per request; records (method, path, query, json body, auth header, time)."""

    answers: list[Callable[[], web.StreamResponse]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "json": json.loads(body) if body else None,
                "auth": request.headers.get("Authorization"),
                "headers": dict(request.headers),
                "raw_path": request.raw_path,
                "raw_body": body,
                "peer": request.transport.get_extra_info("peername") if request.transport else None,
                "t": time.monotonic(),
            }
        )
        if self.answers:
            return self.answers.pop(0)()
        return web.json_response({"ok": True})


def app_error(status: int, error_id: str) -> Callable[[], web.Response]:
    body = {"id": error_id, "message": "m", "detailed_error": "", "status_code": status}
    return lambda: web.json_response(body, status=status)


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    scripted.url = f"http://127.0.0.1:{port}"
    yield scripted
    await runner.cleanup()


def client(url: str, **kw: Any) -> RestClient:
    kw.setdefault("backoff_factor", 0.05)
    return RestClient(url, TOKEN, **kw)


async def test_sends_bearer_and_decodes_json(server: Scripted) -> None:
    async with client(server.url) as rc:
        assert await rc.get_me() == {"ok": True}
        await rc.get_channel_posts("c1", since=123, per_page=None)
    assert server.seen[0]["path"] == "/api/v4/users/me"
    assert server.seen[0]["auth"] == f"Bearer {TOKEN}"
    assert server.seen[1]["query"] == {"since": "123"}  # None params are not sent


async def test_429_plain_text_waits_retry_after(server: Scripted) -> None:
    def limited() -> web.Response:
        return web.Response(status=429, text="limit exceeded\n",
                            headers={"retry-after": "1", "X-Ratelimit-Reset": "5"})  # fmt: skip

    server.answers = [limited]
    async with client(server.url) as rc:
        assert await rc.get_user("u1") == {"ok": True}
    gap = server.seen[1]["t"] - server.seen[0]["t"]
    assert 0.95 <= gap < 2.0  # Retry-After (1 s), not Reset (5 s) nor the tiny backoff


async def test_429_falls_back_to_ratelimit_reset(server: Scripted) -> None:
    server.answers = [
        lambda: web.Response(status=429, text="limit exceeded\n", headers={"X-Ratelimit-Reset": "1"})
    ]
    async with client(server.url) as rc:
        await rc.get_user("u1")
    assert 0.95 <= server.seen[1]["t"] - server.seen[0]["t"] < 2.0


async def test_429_on_every_try_surfaces_as_error(server: Scripted) -> None:
    server.answers = [
        lambda: web.Response(status=429, text="limit exceeded\n", headers={"Retry-After": "0"})
    ] * 3
    async with client(server.url) as rc:
        with pytest.raises(MattermostError) as info:
            await rc.get_user("u1")
    assert info.value.status == 429 and info.value.message == "limit exceeded"
    assert len(server.seen) == 3


async def test_app_error_is_not_retried_and_keeps_the_id(server: Scripted) -> None:
    server.answers = [app_error(400, "api.post.create_post.root_id.app_error")]
    async with client(server.url) as rc:
        with pytest.raises(MattermostError) as info:
            await rc.create_post("c1", "hi", root_id="r1")
    assert (info.value.status, info.value.error_id) == (400, "api.post.create_post.root_id.app_error")
    assert len(server.seen) == 1


async def test_create_post_retry_keeps_pending_post_id(server: Scripted) -> None:
    server.answers = [app_error(500, "api.post.deduplicate_create_post.pending"), app_error(503, "x")]
    async with client(server.url) as rc:
        await rc.create_post("c1", "hi", props={"a": "b"})
    bodies = [s["json"] for s in server.seen]
    assert len(bodies) == 3
    assert bodies[0]["pending_post_id"] and all(b == bodies[0] for b in bodies)
    assert bodies[0]["props"] == {"a": "b"} and bodies[0]["root_id"] == ""


async def test_5xx_after_last_try_raises_mattermost_error(server: Scripted) -> None:
    server.answers = [app_error(502, "bad.gateway")] * 3
    async with client(server.url) as rc:
        with pytest.raises(MattermostError) as info:
            await rc.ping()
    assert info.value.status == 502 and len(server.seen) == 3


async def test_connection_refused_raises_unavailable_after_tries() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}", max_tries=2) as rc:
        with pytest.raises(MattermostUnavailable):
            await rc.get_me()


async def test_read_timeout_is_retried_then_unavailable(server: Scripted) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await server.handle(request)  # records the attempt
        await asyncio.sleep(1.0)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    t0 = time.monotonic()
    try:
        async with client(url, timeout=0.3) as rc:
            with pytest.raises(MattermostUnavailable):
                await rc.get_me()
        elapsed = time.monotonic() - t0
    finally:
        await runner.cleanup()
    assert len(server.seen) == 3
    assert elapsed < 2.0  # 3 x 0.3 s timeouts + short backoff: the timeout is enforced


async def test_an_explicit_cap_limits_the_rate(server: Scripted) -> None:
    async with client(server.url, rate_per_sec=20) as rc:
        t0 = time.monotonic()
        await asyncio.gather(*(rc.ping() for _ in range(30)))
        elapsed = time.monotonic() - t0
    # 20 at once (one second's worth), then 10 more at 20/s => >= 0.5 s
    assert elapsed >= 0.45
    assert len(server.seen) == 30


def limited(remaining: int, reset: int = 1, status: int = 200) -> Callable[[], web.Response]:
    headers = {
        "X-Ratelimit-Limit": "101",
        "X-Ratelimit-Remaining": str(remaining),
        "X-Ratelimit-Reset": str(reset),
    }
    if status == 429:
        headers["Retry-After"] = str(reset)
        return lambda: web.Response(status=429, text="limit exceeded\n", headers=headers)
    return lambda: web.json_response({"ok": True}, headers=headers)


async def test_every_answer_teaches_the_pacer_and_courtesy_calls_are_dropped_first(
    server: Scripted,
) -> None:
    drops: list[str] = []
    async with client(server.url, hooks=RestHooks(on_drop=drops.append)) as rc:
        courtesy = rc.variant(tries=1, priority=Priority.COURTESY)
        server.answers = [limited(20, reset=9)]
        await rc.ping()
        assert rc.limiter.server is not None and rc.limiter.server.capacity == 101
        with pytest.raises(Dropped):  # 20 of 101 left: not for a reaction
            await courtesy.add_reaction("u1", "p1", "white_check_mark")
        with pytest.raises(Dropped):
            await courtesy.typing("u1", "c1")
        assert [s["path"] for s in server.seen] == ["/api/v4/system/ping"]  # nothing else was sent
        assert drops == ["reaction", "typing"]
        await rc.create_post("c1", "a reply still goes")  # replies spend the rest of the budget
        assert len(server.seen) == 2


async def test_a_429_holds_the_other_requests_for_the_servers_wait(server: Scripted) -> None:
    waits: list[tuple[str, float]] = []
    hooks = RestHooks(on_wait=lambda source, seconds: waits.append((source, seconds)))
    async with client(server.url, hooks=hooks) as rc:
        server.answers = [limited(0, reset=1, status=429)]
        first = asyncio.create_task(rc.get_me())
        await asyncio.sleep(0.1)  # its 429 is in: the pacer holds
        t0 = time.monotonic()
        await rc.ping()  # not sent into the same wall
        assert time.monotonic() - t0 >= 0.7
        await first
    statuses = [s["path"] for s in server.seen]
    assert statuses == ["/api/v4/users/me", "/api/v4/system/ping", "/api/v4/users/me"] or statuses == [
        "/api/v4/users/me",
        "/api/v4/users/me",
        "/api/v4/system/ping",
    ]
    assert ("server", 1.0) in waits  # the 429's own wait, read by the retry policy


async def test_token_never_logged(
    server: Scripted, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    server.answers = [app_error(500, "boom"), lambda: web.Response(status=429, text="limit exceeded\n")]
    async with client(server.url) as rc:
        await rc.get_me()
        with pytest.raises(MattermostError) as info:
            server.answers = [app_error(403, "api.context.permissions.app_error")]
            await rc.get_me()
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


# --- the aiohttp transport: headers, body, redirects, pool, timeouts, proxies, lifecycle -------------


async def test_default_headers_and_compact_utf8_json_body(server: Scripted) -> None:
    async with client(server.url) as rc:
        await rc.create_post("c1", "안녕 ☕", pending_post_id="p1")
        await rc.get_me()
    post, get = server.seen
    assert post["headers"]["Accept"] == "application/json"
    assert post["headers"]["User-Agent"] == "mchat-bot"
    assert post["headers"]["X-Requested-With"] == "XMLHttpRequest"
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["raw_body"] == '{"channel_id":"c1","message":"안녕 ☕","root_id":"","pending_post_id":"p1"}'
    assert "Content-Type" not in get["headers"] and get["auth"] == f"Bearer {TOKEN}"


async def test_query_values_as_text_and_sequences_repeat(server: Scripted) -> None:
    async with client(server.url) as rc:
        await rc.request(
            "GET", "/commands", params={"custom_only": True, "page": 0, "x": None, "ids": ["a", "b"]}
        )
    assert server.seen[0]["raw_path"] == "/api/v4/commands?custom_only=true&page=0&ids=a&ids=b"


async def test_redirect_is_not_followed(server: Scripted) -> None:
    server.answers = [lambda: web.Response(status=302, headers={"Location": "/elsewhere"})]
    async with client(server.url) as rc:
        with pytest.raises(MattermostError) as info:
            await rc.get_me()
    assert info.value.status == 302 and len(server.seen) == 1


async def test_sequential_calls_reuse_one_connection(server: Scripted) -> None:
    async with client(server.url) as rc:
        for _ in range(5):
            await rc.ping()
    assert len({s["peer"] for s in server.seen}) == 1


async def test_total_timeout_bounds_a_trickling_answer(server: Scripted) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(40):  # a byte every 0.1 s: each read is within sock_read, the whole is not
            await resp.write(b" ")
            await asyncio.sleep(0.1)
        await resp.write(b"{}")
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trickle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    t0 = time.monotonic()
    try:
        async with client(f"http://127.0.0.1:{runner.addresses[0][1]}", timeout=0.4, max_tries=1) as rc:
            with pytest.raises(MattermostUnavailable):
                await rc.get_me()
    finally:
        await runner.cleanup()
    assert time.monotonic() - t0 < 2.0  # total = 2 x timeout, not the 4 s the answer takes


def test_built_before_the_loop_runs_and_used_inside_it() -> None:
    """Daemon and CLI code build RestClients outside the loop; aiohttp needs one to make the session."""
    rc = client("http://127.0.0.1:1")  # no running loop here

    async def me(request: web.Request) -> web.Response:
        return web.json_response({"id": "me"})

    async def use() -> Any:
        app = web.Application()
        app.router.add_get("/api/v4/users/me", me)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        rc.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v4"
        try:
            async with rc:
                return await rc.get_me()
        finally:
            await runner.cleanup()

    assert asyncio.run(use()) == {"id": "me"}


async def test_closed_client_refuses_calls(server: Scripted) -> None:
    unused = client(server.url)
    await unused.aclose()  # never used: nothing to close, no error
    with pytest.raises(RuntimeError):
        await unused.get_me()
    used = client(server.url)
    await used.get_me()
    await used.aclose()
    with pytest.raises(RuntimeError):
        await used.get_me()
    assert len(server.seen) == 1


async def test_env_proxy_is_used_unless_no_proxy(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # the "Mattermost" nobody listens on: only the proxy answers
        s.bind(("127.0.0.1", 0))
        target = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with client(target) as rc:
        assert await rc.get_me() == {"ok": True}
    assert server.seen[0]["raw_path"] == f"{target}/api/v4/users/me"  # absolute-form: via the proxy
    assert server.seen[0]["auth"] == f"Bearer {TOKEN}"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with client(target, max_tries=1) as rc:
        with pytest.raises(MattermostUnavailable):
            await rc.get_me()
    assert len(server.seen) == 1


async def test_get_file_streams_and_stops_past_max_bytes(server: Scripted) -> None:
    server.answers = [
        lambda: web.Response(body=b"x" * 1000),
        lambda: web.Response(body=b"y" * 100_000),
        app_error(404, "app.file_info.get.app_error"),
    ]
    async with client(server.url) as rc:
        assert await rc.get_file("f1", 1000) == b"x" * 1000
        with pytest.raises(ValueError):
            await rc.get_file("f2", 1000)
        with pytest.raises(MattermostError) as info:
            await rc.get_file("f3", 1000)
    assert info.value.status == 404 and info.value.error_id == "app.file_info.get.app_error"
    assert [s["path"] for s in server.seen] == ["/api/v4/files/f1", "/api/v4/files/f2", "/api/v4/files/f3"]


async def test_get_file_unreachable_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}") as rc:
        with pytest.raises(MattermostUnavailable):
            await rc.get_file("f1", 10)
