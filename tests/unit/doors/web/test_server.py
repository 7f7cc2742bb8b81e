"""The HTTP doors in-process on a real socket: allowlist, incoming-webhook retries, waiter hand-off,
and a schemathesis run over /openapi.json that must find no 500."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mchat_bot.doors.web.claims import ClaimChecker
from mchat_bot.doors.web.server import HttpServer, create_app
from mchat_bot.doors.web.webhooks import (
    SLASH_TEAM_KEY,
    WebhookEndpoints,
    strip_trigger,
    token_ok,
)
from mchat_bot.mattermost.rest import MattermostError
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.pipeline.steps.gate import ChannelGate
from mchat_bot.pipeline.turn import Chain, Turn
from mchat_bot.pipeline.waiters import DoorContexts, Waiters
from mchat_bot.pipeline.workers import WorkerPool
from mchat_bot.storage import SqliteStorage

TOKEN = "outgoing-token-123"
SLASH = "slash-token-456"


class _Server:
    """The chat server's answers to the doors' claim checks: public channel c1 (team t1) with member
    u1, and u1's post p1 in it. Anything else is unknown, as a real server would answer."""

    def __init__(self) -> None:
        self.channels = {"c1": {"id": "c1", "type": "O", "team_id": "t1", "name": "qa", "display_name": "QA"}}
        self.members = {("c1", "u1")}
        self.posts = {"p1": {"id": "p1", "channel_id": "c1", "user_id": "u1", "root_id": "", "props": {}}}

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        if channel_id not in self.channels:
            raise MattermostError(404, "app.channel.get.existing.app_error", "not found")
        return self.channels[channel_id]

    async def get_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        if (channel_id, user_id) not in self.members:
            raise MattermostError(404, "app.channel.get_member.missing.app_error", "no member")
        return {"channel_id": channel_id, "user_id": user_id}

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return {"id": user_id, "username": {"u1": "kim"}.get(user_id, user_id)}

    async def get_post(self, post_id: str) -> dict[str, Any]:
        if post_id not in self.posts:
            raise MattermostError(404, "app.post.get.app_error", "not found")
        return self.posts[post_id]


class _NoPost:
    async def create_post(self, *a: Any, **k: Any) -> dict[str, Any]:
        raise AssertionError("no REST post expected")


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **kw: Any) -> AsyncIterator[tuple[str, WebhookEndpoints, Inbox]]:
    allow_from = kw.pop("allow_from", ())
    async with SqliteStorage(tmp_path / "db.sqlite3") as st:
        inbox = Inbox(st)
        mappings = Mappings(st)
        endpoints = WebhookEndpoints(
            bot=BOT,
            inbox=inbox,
            claims=ClaimChecker(_Server()),
            storage=st,
            server_url="http://127.0.0.1:8065",
            mappings=mappings,
            contexts=DoorContexts(st),
            waiters=Waiters(),
            outgoing_tokens=kw.pop("outgoing_tokens", [TOKEN]),
            slash_tokens=[SLASH],
            budget=kw.pop("budget", 2.0),
            **kw,
        )
        server = HttpServer(create_app(endpoints, allow_from=allow_from), "127.0.0.1:0", grace=1.0)
        server.bind()
        task = asyncio.create_task(server.run())
        try:
            yield f"http://127.0.0.1:{server.port}", endpoints, inbox
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


BOT = BotIdentity("bot-id", "memorybot", ("@ai",))


def hook_body(**over: Any) -> dict[str, Any]:
    return {
        "token": TOKEN,
        "channel_id": "c1",
        "channel_name": "qa",
        "team_id": "t1",
        "user_id": "u1",
        "user_name": "kim",
        "post_id": "p1",
        "text": "remember the plan",
        "trigger_word": "remember",
    } | over


def test_token_check_and_trigger_stripping() -> None:
    assert token_ok("a", ["x", "a"]) and not token_ok("", [""]) and not token_ok("b", ["a"])
    assert strip_trigger("remember X부품 12%") == "remember X부품 12%"
    assert strip_trigger("@ai 오늘 어때?") == "오늘 어때?"
    assert strip_trigger("질문: 도움말") == "도움말"
    assert strip_trigger("  ") == ""


async def test_allowlist_refuses_other_callers_before_anything(tmp_path: Path) -> None:
    async with serve(tmp_path, allow_from=["10.0.0.0/8"]) as (url, _, inbox):
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{url}/mattermost/outgoing", json=hook_body())
        assert r.status_code == 403 and "allow_from" in r.json()["detail"]
        assert await inbox.state("p1") is None


async def test_answer_within_budget_is_the_response_body(tmp_path: Path) -> None:
    async with serve(tmp_path) as (url, endpoints, inbox):

        async def handle(turn: Turn) -> Reply:
            return Reply(f"handled: {turn.msg.message}", Outcome.STORED)

        writer = ReplyWriter(_NoPost(), inbox, waiters=endpoints.waiters)  # type: ignore[arg-type]
        chain = Chain([ChannelGate(endpoints.mappings)], handle)
        pool = WorkerPool(inbox, chain, writer, BOT, poll_interval=0.05)
        async with pool:
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.post(
                    f"{url}/mattermost/outgoing",
                    data={k: str(v) for k, v in hook_body(timestamp=1700000000).items()},
                )
        assert r.status_code == 200
        body = r.json()
        assert body["response_type"] == "comment" and body["text"] == "handled: @memorybot remember the plan"
        assert await inbox.state("p1") == "done"


@pytest.mark.skipif(
    shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None,
    reason="schemathesis not installed",
)
async def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    async with serve(tmp_path, budget=0.05, max_body_bytes=2048) as (url, _endpoints, _):
        # reach past the token check: narrow the spec's token fields to the test token
        async with httpx.AsyncClient() as c:
            spec = (await c.get(f"{url}/openapi.json")).json()
        for path, token in (("/mattermost/outgoing", TOKEN), ("/mattermost/slash", SLASH)):
            for media in spec["paths"][path]["post"]["requestBody"]["content"].values():
                media["schema"]["properties"]["token"] = {"type": "string", "enum": [token]}
        spec_file = tmp_path / "openapi.json"
        import json

        spec_file.write_text(json.dumps(spec))
        exe = str(Path(sys.executable).parent / "schemathesis")
        proc = await asyncio.create_subprocess_exec(
            exe,
            "run",
            str(spec_file),
            "--url",
            url,
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its report folder
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-4000:]


async def test_a_slash_token_is_refused_outside_the_team_it_was_registered_in(tmp_path: Path) -> None:
    async with serve(tmp_path) as (url, endpoints, _):
        key = SLASH_TEAM_KEY + hashlib.sha256(SLASH.encode()).hexdigest()
        await endpoints.storage.set_kv(key, "t-other")
        body = {"token": SLASH, "channel_id": "c1", "user_id": "u1", "command": "/search", "text": "x"}
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"{url}/mattermost/slash", data=body)
            assert r.status_code == 403 and "another team" in r.json()["detail"]
            await endpoints.storage.set_kv(key, "t1")
            r = await c.post(f"{url}/mattermost/slash", data=body | {"trigger_id": "t-ok"})
            assert r.status_code == 200
        rows = await endpoints.audit.query(since=0, action="slash.refused")
        assert [row.detail for row in rows] == ["token_team_mismatch"]


async def test_an_outgoing_token_bound_to_a_team_or_channel_is_refused_elsewhere(tmp_path: Path) -> None:
    for entry, allowed in (
        (f"{TOKEN}:t-other", False),
        (f"{TOKEN}:t1:c-other", False),
        (f"{TOKEN}:t1:c1", True),
    ):
        async with serve(tmp_path / entry.replace(":", "_"), outgoing_tokens=[entry]) as (url, _, _inbox):
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.post(f"{url}/mattermost/outgoing", json=hook_body(text="@ai help"))
        assert (r.status_code == 200) is allowed, (entry, r.status_code, r.text)
        if not allowed:
            assert "another team or channel" in r.json()["detail"]
