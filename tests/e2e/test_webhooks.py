"""The web doors end to end: the real daemon process, the dev server firing real outgoing webhooks and
running real slash commands against it, over 127.0.0.1.

One daemon serves the module. Hooks and commands are created through the dev server's REST API (as an
admin would), the slash commands by `mchat-bot register-commands`, and their tokens go to the daemon
through MCHAT_* variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.daemon import write_config
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, free_port, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

BUDGET = 3.0
MAX_BODY = 4096
WEBHOOK_NAME = "AI Memory Bot"


class World:
    """The dev server, the daemon and the integration ids/tokens made for this module."""

    def __init__(self, dev: DevServer, bot: DaemonProcess, port: int, hooks: dict[str, Any], folder: Path):
        self.dev, self.bot, self.port, self.hooks, self.folder = dev, bot, port, hooks, folder

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ch(self, name: str) -> str:
        return self.dev.seed.channels[name]

    def hook_posts(self, post: dict[str, Any]) -> list[dict[str, Any]]:
        """Posts made by an outgoing webhook's response in the trigger post's thread."""
        return self.dev.posts.find(
            lambda p: p["root_id"] == post["id"] and p["props"].get("from_webhook") == "true"
        )

    async def execute(self, user: str, channel: str, command: str) -> dict[str, Any]:
        """Run a slash command as a user (POST /api/v4/commands/execute), return the CommandResponse."""
        token = self.dev.seed.users[user].token
        async with httpx.AsyncClient(timeout=40) as c:
            r = await c.post(
                f"{self.dev.url}/api/v4/commands/execute",
                json={"channel_id": self.ch(channel), "command": command},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert r.status_code == 200, r.text
        return r.json()

    def inbox_has(self, post_id: str) -> bool:
        with sqlite3.connect(self.folder / "mchat_bot.sqlite3") as db:
            return db.execute("SELECT 1 FROM inbox WHERE post_id = ?", (post_id,)).fetchone() is not None


async def _admin(dev: DevServer, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.request(
            method,
            f"{dev.url}/api/v4{path}",
            json=body,
            headers={"Authorization": f"Bearer {dev.seed.users['admin'].token}"},
        )
    assert r.status_code < 300, r.text
    return r.json()


async def run_cli(folder: Path, dev: DevServer, *args: str, env: dict[str, str] | None = None) -> str:
    """`mchat-bot ARGS --config folder/config.toml` as a child process; returns its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    full_env |= {"MCHAT_MATTERMOST_TOKEN": dev.seed.bot.token, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mchat_bot",
        *args,
        "--config",
        str(folder / "config.toml"),
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    folder = tmp_path_factory.mktemp("doors")
    async with DevServer() as dev, FakeLLM() as llm:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        team = dev.seed.team_id
        json_hook = await _admin(
            dev,
            "POST",
            "/hooks/outgoing",
            {
                "team_id": team,
                "display_name": "memory (json)",
                "trigger_words": ["@ai", "remember", "search", "ask"],
                "trigger_when": 0,
                "callback_urls": [f"{url}/mattermost/outgoing"],
                "content_type": "application/json",
            },
        )
        form_hook = await _admin(
            dev,
            "POST",
            "/hooks/outgoing",
            {
                "team_id": team,
                "channel_id": dev.seed.channels["no-bot"],
                "display_name": "memory (form)",
                "trigger_words": ["질문"],
                "trigger_when": 1,
                "callback_urls": [f"{url}/mattermost/outgoing"],
            },
        )
        write_config(folder, dev.url, llm.url)
        registered = await run_cli(
            folder,
            dev,
            "register-commands",
            "--team",
            "mchat",
            env={"MCHAT_ADMIN_TOKEN": dev.seed.users["admin"].token, "MCHAT_HTTP_PUBLIC_URL": url},
        )
        slash_tokens = [
            line.split("token=")[1].strip() for line in registered.splitlines() if "token=" in line
        ]
        env = {
            "MCHAT_HTTP_LISTEN": f"127.0.0.1:{port}",
            "MCHAT_HTTP_MAX_BODY_BYTES": str(MAX_BODY),
            "MCHAT_WEBHOOKS_OUTGOING_TOKENS": f"{json_hook['token']},{form_hook['token']}",
            "MCHAT_WEBHOOKS_SLASH_TOKENS": ",".join(slash_tokens),
            "MCHAT_WEBHOOKS_RESPONSE_BUDGET": str(BUDGET),
        }
        daemon = DaemonProcess(dev, llm, folder, env=env)
        await daemon.start()
        try:
            yield World(
                dev,
                daemon,
                port,
                {"json": json_hook, "form": form_hook, "registered": registered, "llm": llm},
                folder,
            )
        finally:
            code = await daemon.stop()
            assert code == 0, daemon.log_tail()


# --- register-commands ---------------------------------------------------------------------------


async def test_register_commands_created_the_five_commands(world: World) -> None:
    cmds = await _admin(world.dev, "GET", f"/commands?team_id={world.dev.seed.team_id}&custom_only=true")
    assert sorted(c["trigger"] for c in cmds) == ["ai", "forget", "memories", "remember", "search"]
    assert {c["url"] for c in cmds} == {f"{world.base}/mattermost/slash"}
    assert all(c["method"] == "P" for c in cmds)
    assert "slash_tokens" in world.hooks["registered"]
    # run again: updated, not duplicated
    out = await run_cli(
        world.folder,
        world.dev,
        "register-commands",
        "--team",
        "mchat",
        env={"MCHAT_ADMIN_TOKEN": world.dev.seed.users["admin"].token, "MCHAT_HTTP_PUBLIC_URL": world.base},
    )
    assert out.count("updated") == 5
    again = await _admin(world.dev, "GET", f"/commands?team_id={world.dev.seed.team_id}&custom_only=true")
    assert len(again) == 5


# --- outgoing webhooks -----------------------------------------------------------------------------


async def test_trigger_word_answered_inline_in_the_thread(world: World) -> None:
    t = tag()
    post = await world.dev.user_post("kim", world.ch("qa"), f"remember 웹훅 납기 {t}")
    replies = await world.dev.wait_for_posts(
        lambda p: p["root_id"] == post["id"] and p["props"].get("from_webhook") == "true", timeout=15
    )
    reply = replies[0]
    assert "메모리 저장됨" in reply["message"] and t in reply["message"]
    assert reply["user_id"] == world.dev.seed.users["admin"].id  # posted by the server as the hook's creator
    assert reply["props"]["override_username"] == WEBHOOK_NAME
    await asyncio.sleep(0.5)
    assert not world.bot.bot_posts(lambda p: p["root_id"] == post["id"])  # no second answer over REST
    # it is really stored: a search through the same door finds it
    found = await world.dev.user_post("lee", world.ch("qa"), f"search 납기 {t}")
    hits = await world.dev.wait_for_posts(
        lambda p: p["root_id"] == found["id"] and p["props"].get("from_webhook") == "true", timeout=15
    )
    assert t in hits[0]["message"]


async def test_slow_answer_says_working_then_follows_in_the_thread(world: World) -> None:
    llm: FakeLLM = world.hooks["llm"]
    llm.delay(BUDGET + 1.5)
    try:
        post = await world.dev.user_post("kim", world.ch("qa"), f"ask what is the plan {tag()}")
        first = await world.dev.wait_for_posts(
            lambda p: p["root_id"] == post["id"] and p["props"].get("from_webhook") == "true", timeout=15
        )
        assert "Working on it" in first[0]["message"]
        late = await world.bot.replies_to(post, timeout=20)  # the worker's REST reply, same thread
        assert late[0]["root_id"] == post["id"]
    finally:
        llm.delay(0)


async def test_trigger_in_a_thread_reply_is_answered_in_the_root_thread(world: World) -> None:
    root = await world.dev.user_post("kim", world.ch("qa"), f"스레드 시작 {tag()}")
    reply = await world.dev.user_post("lee", world.ch("qa"), f"search 아무거나 {tag()}", root_id=root["id"])
    answers = await world.bot.replies_to(reply, timeout=15)
    assert answers[0]["root_id"] == root["id"]
    rec = [d for d in world.dev.integrations.deliveries if d["post_id"] == reply["id"]]
    assert rec and json.loads(rec[0]["body"]) == {}  # no comment the server would drop
    assert "post_error" not in rec[0]


async def test_form_hook_with_prefix_trigger_in_a_channel_without_the_bot(world: World) -> None:
    post = await world.dev.user_post("kim", world.ch("no-bot"), "질문: 도움말")
    replies = await world.dev.wait_for_posts(
        lambda p: p["root_id"] == post["id"] and p["props"].get("from_webhook") == "true", timeout=15
    )
    assert "remember" in replies[0]["message"] or "기억" in replies[0]["message"]
    rec = next(d for d in world.dev.integrations.deliveries if d["post_id"] == post["id"])
    assert rec["status"] == 200


async def test_exact_trigger_rule_and_private_channels_do_not_fire(world: World) -> None:
    t = tag()
    quiet = [
        await world.dev.user_post(
            "kim", world.ch("no-bot"), f"@ai, help {t}"
        ),  # trigger_when 0: "@ai," ≠ "@ai"
        await world.dev.user_post(
            "kim", world.ch("qa-private"), f"remember 비밀 {t}"
        ),  # private: never fires
        await world.dev.user_post("kim", world.ch("no-bot"), f"hello remember {t}"),  # not the first word
    ]
    await asyncio.sleep(1.0)
    fired = {d["post_id"] for d in world.dev.integrations.deliveries}
    assert not fired & {p["id"] for p in quiet}


async def test_bot_posts_fire_the_hook_but_never_loop(world: World) -> None:
    bot_user = world.dev.seed.bot
    post = await world.dev.posts.create(
        bot_user, {"channel_id": world.ch("qa"), "message": f"remember {tag()}"}
    )
    for _ in range(50):
        if any(d["post_id"] == post["id"] and "status" in d for d in world.dev.integrations.deliveries):
            break
        await asyncio.sleep(0.1)
    rec = next(d for d in world.dev.integrations.deliveries if d["post_id"] == post["id"])
    assert rec["status"] == 200 and json.loads(rec["body"]) == {}
    await asyncio.sleep(0.5)
    assert not world.hook_posts(post)


# --- slash commands ----------------------------------------------------------------------------------


async def test_slash_search_is_ephemeral_and_remember_public_is_in_channel(world: World) -> None:
    t = tag()
    resp = await world.execute("kim", "qa", f"/remember --public 슬래시 회의 {t}")
    assert resp["response_type"] == "in_channel" and t in resp["text"]
    shown = world.dev.posts.find(lambda p: t in p["message"] and p["props"].get("from_webhook") == "true")
    assert shown and shown[0]["user_id"] == world.dev.seed.users["kim"].id
    resp = await world.execute("lee", "qa", f"/search 슬래시 {t}")
    assert resp["response_type"] == "ephemeral" and t in resp["text"]
    eph = world.dev.integrations.ephemeral[-1]
    assert eph["to_user_id"] == world.dev.seed.users["lee"].id and t in eph["message"]


async def test_slash_late_answer_arrives_through_response_url(world: World) -> None:
    llm: FakeLLM = world.hooks["llm"]
    llm.delay(BUDGET + 1.0)
    t = tag()
    try:
        resp = await world.execute("park", "qa", f"/ai what do we know {t}")
        assert resp["response_type"] == "ephemeral" and "Working on it" in resp["text"]
        late = await world.dev.integrations.wait_ephemeral(
            lambda e: e["to_user_id"] == world.dev.seed.users["park"].id and "Working" not in e["message"],
            timeout=20,
        )
        assert late["message"]
    finally:
        llm.delay(0)


# --- bad input -----------------------------------------------------------------------------------------


def _payload(**over: Any) -> dict[str, Any]:
    p = {
        "token": "",
        "team_id": "t",
        "channel_id": "c" * 26,
        "channel_name": "qa",
        "user_id": "u" * 26,
        "user_name": "kim",
        "post_id": "p" + uuid.uuid4().hex[:25],
        "text": f"remember 401 {tag()}",
        "trigger_word": "remember",
        "timestamp": 1,
    }
    return p | over


async def test_bad_token_is_401_and_nothing_is_stored(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as c:
        for token in ("wrong", ""):
            body = _payload(token=token)
            r = await c.post("/mattermost/outgoing", json=body)
            assert r.status_code == 401 and "token" in r.json()["detail"]
            assert not world.inbox_has(body["post_id"])
        r = await c.post(
            "/mattermost/slash", data={"token": "nope", "channel_id": "c", "user_id": "u", "command": "/ai"}
        )
        assert r.status_code == 401


async def test_bad_requests_get_clear_4xx(world: World) -> None:
    good = world.hooks["json"]["token"]
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as c:
        r = await c.post("/mattermost/outgoing", content=b"hi", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "Content-Type" in r.json()["detail"]
        r = await c.post("/mattermost/outgoing", json=_payload(token=good, text="x" * (MAX_BODY + 10)))
        assert r.status_code == 413 and "larger" in r.json()["detail"]
        body = _payload(token=good)
        del body["text"]
        r = await c.post("/mattermost/outgoing", json=body)
        assert r.status_code == 400 and "text" in r.json()["detail"]
        r = await c.post(
            "/mattermost/outgoing", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and "JSON" in r.json()["detail"]
        r = await c.post("/mattermost/outgoing", content=b"[1]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        r = await c.post(
            "/mattermost/outgoing", content=b"\xff\xfe", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400
        for stamp in (122592662463014051327770624, -5):  # found by schemathesis: once a 500
            body = _payload(token=good, timestamp=stamp)
            r = await c.post("/mattermost/outgoing", data={k: str(v) for k, v in body.items()})
            assert r.status_code == 400 and "timestamp" in r.json()["detail"]
            assert not world.inbox_has(body["post_id"])
        r = await c.get("/openapi.json")
        spec = r.json()
        assert {"/mattermost/outgoing", "/mattermost/slash"} <= set(spec["paths"])


# --- mapping tables ------------------------------------------------------------------------------------


async def test_inactive_channel_gets_no_answer_from_any_door(world: World) -> None:
    dev = world.dev
    town = world.ch("town-square")
    # "@memorybot", not "@ai": the outgoing webhook's trigger words include "@ai", and a post that
    # reaches both doors is answered by whichever takes it first (inline, or over REST in the thread)
    await world.bot.ask("kim", "town-square", "@memorybot help")  # seen (and active) first
    listing = await run_cli(world.folder, dev, "channels", "list")
    assert town in listing and "town-square" in listing
    assert "kim" in await run_cli(world.folder, dev, "users", "list")
    await run_cli(world.folder, dev, "channels", "disable", town)
    await asyncio.sleep(2.5)  # the daemon's mapping cache
    try:
        quiet = await dev.user_post("kim", town, f"@ai help {tag()}")  # the WebSocket door
        hooked = await dev.user_post("kim", town, f"remember 꺼진 채널 {tag()}")  # the outgoing webhook door
        resp = await world.execute("kim", "town-square", "/memories")  # the slash door
        assert "switched off" in resp["text"]
        await asyncio.sleep(2.0)
        assert not world.bot.bot_posts(lambda p: p["root_id"] in (quiet["id"], hooked["id"]))
        assert not world.hook_posts(hooked)
    finally:
        await run_cli(world.folder, dev, "channels", "enable", town)
    await asyncio.sleep(2.5)
    await world.bot.ask("kim", "town-square", "@memorybot help")
