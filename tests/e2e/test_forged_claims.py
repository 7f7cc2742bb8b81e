"""Forged web-door requests against the running daemon: a valid token is not an identity.

Every attack here carries a real webhook or slash token and claims a channel, user or post it has no
right to. The daemon checks each claim with the (dev) server before reading or writing anything, so
each one gets a 4xx, stores nothing, discloses nothing, and leaves a `refused` row in the audit log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, free_port, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOOK = "forged-claims-outgoing-token"
SLASH = "forged-claims-slash-token"
BUDGET = 2.0


class World:
    def __init__(self, dev: DevServer, llm: FakeLLM, bot: DaemonProcess, base: str, folder: Path) -> None:
        self.dev, self.llm, self.bot, self.base, self.folder = dev, llm, bot, base, folder
        self.secrets: dict[str, str] = {}

    def uid(self, name: str) -> str:
        return self.dev.seed.users[name].id

    def ch(self, name: str) -> str:
        return self.dev.seed.channels[name]

    async def outgoing(self, **fields: Any) -> httpx.Response:
        body = {
            "token": HOOK,
            "team_id": self.dev.seed.team_id,
            "trigger_word": "@ai",
            "timestamp": 1,
        } | fields
        async with httpx.AsyncClient(timeout=20) as c:
            return await c.post(f"{self.base}/mattermost/outgoing", json=body)

    async def slash(self, **fields: Any) -> httpx.Response:
        body = {"token": SLASH, "team_id": self.dev.seed.team_id, "command": "/search", "text": ""} | fields
        async with httpx.AsyncClient(timeout=20) as c:
            return await c.post(f"{self.base}/mattermost/slash", data=body)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.folder / "mchat_bot.sqlite3") as db:
            return db.execute(query, args).fetchall()

    def refusals(self) -> list[tuple[str, str]]:
        return [
            (r[0], r[1]) for r in self.sql("SELECT action, detail FROM audit_log WHERE outcome = 'refused'")
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    folder = tmp_path_factory.mktemp("forged")
    async with DevServer() as dev, FakeLLM() as llm:
        port = free_port()
        env = {
            "MCHAT_HTTP_LISTEN": f"127.0.0.1:{port}",
            "MCHAT_WEBHOOKS_OUTGOING_TOKENS": HOOK,
            "MCHAT_WEBHOOKS_SLASH_TOKENS": SLASH,
            "MCHAT_WEBHOOKS_RESPONSE_BUDGET": str(BUDGET),
        }
        bot = DaemonProcess(dev, llm, folder, env=env)
        await bot.start()
        w = World(dev, llm, bot, f"http://127.0.0.1:{port}", folder)
        # park leaves the private channel; kim keeps memories where only members (or only kim) may look
        dev.store.channels[w.ch("qa-private")].members.pop(w.uid("park"), None)
        for key, where, text in [
            ("private", "qa-private", "@memorybot remember 비밀 납품 단가는 {t}원"),
            ("dm", "dm", "remember DM 메모 {t}"),
            ("personal", "dm", "remember --me 내 사물함 번호는 {t}"),
        ]:
            w.secrets[key] = tag()
            _, reply = await bot.ask("kim", where, text.format(t=w.secrets[key]))
            assert w.secrets[key] in reply
        try:
            yield w
        finally:
            assert await bot.stop() == 0, bot.log_tail()


def listed(r: httpx.Response) -> str:
    """The memories a search answer lists (its numbered lines), without the echo of the query."""
    text = str(r.json().get("text", ""))
    return "\n".join(line for line in text.splitlines() if re.match(r"^\s*\d+\.\s", line))


def leaks(world: World, r: httpx.Response) -> list[str]:
    return [k for k, v in world.secrets.items() if v in r.text]


async def test_an_outgoing_hook_claiming_a_private_channel_is_refused(world: World) -> None:
    post = await world.dev.user_post("kim", world.ch("qa-private"), f"그냥 대화 {tag()}")
    for text in ("@ai memories", f"@ai search {world.secrets['private']}"):
        r = await world.outgoing(
            channel_id=world.ch("qa-private"), user_id=world.uid("kim"), post_id=post["id"], text=text
        )
        assert r.status_code == 403 and "public" in r.json()["detail"]
        assert not leaks(world, r)
    assert ("outgoing_webhook.refused", "not_public") in world.refusals()


@pytest.mark.parametrize("where", ["dm", "gm"])
async def test_an_outgoing_hook_claiming_a_dm_or_group_dm_is_refused(world: World, where: str) -> None:
    channel = world.dev.seed.dm["kim"] if where == "dm" else world.dev.seed.gm
    post = await world.dev.user_post("kim", channel, f"hello {tag()}")
    r = await world.outgoing(
        channel_id=channel, user_id=world.uid("kim"), post_id=post["id"], text="@ai memories"
    )
    assert r.status_code == 403
    assert not leaks(world, r)


async def test_another_users_post_cannot_speak_for_them(world: World) -> None:
    """lee's post with kim's user id: kim's personal memories are not read, and nothing is written as kim."""
    t = tag()
    lee_post = await world.dev.user_post("lee", world.ch("town-square"), f"remember 납기 변경 {t}")
    r = await world.outgoing(
        channel_id=world.ch("town-square"),
        user_id=world.uid("kim"),
        post_id=lee_post["id"],
        text=f"@ai search {world.secrets['personal']}",
    )
    assert r.status_code == 403 and "post_id" in r.json()["detail"]
    assert not leaks(world, r)
    assert not world.sql("SELECT 1 FROM inbox WHERE post_id = ?", lee_post["id"])


async def test_the_text_comes_from_the_post_not_from_the_body(world: World) -> None:
    """A real post of kim's (no mention, so only this door takes it) with a forged text asking for kim's
    personal memory: what is handled is the post's own words, never the forged question."""
    mark = tag()
    post = await world.dev.user_post("kim", world.ch("town-square"), f"ask 회의실 예약 {mark}")
    forged = f"@ai search {world.secrets['personal']}"
    r = await world.outgoing(
        channel_id=world.ch("town-square"), user_id=world.uid("kim"), post_id=post["id"], text=forged
    )
    assert r.status_code == 200, r.text
    # what was handled is the post's own question, not the forged search
    assert world.sql("SELECT action FROM audit_log WHERE post_id = ?", post["id"]) == [("answer",)]


async def test_a_user_outside_the_channel_is_refused(world: World) -> None:
    post = await world.dev.user_post("kim", world.ch("town-square"), f"@ai memories {tag()}")
    outsider = world.dev.store.add_user(f"guest{tag()}")
    r = await world.outgoing(
        channel_id=world.ch("town-square"), user_id=outsider.id, post_id=post["id"], text="@ai memories"
    )
    assert r.status_code == 403 and "member" in r.json()["detail"]


async def test_a_private_file_cannot_be_pulled_through_a_public_hook(world: World) -> None:
    mark = tag()
    secret = f"도면 비밀 {mark}"
    info = world.dev.extras.add_file(world.uid("kim"), world.ch("qa-private"), "spec.txt", secret.encode())
    post = await world.dev.posts.create(
        world.dev.seed.users["kim"],
        {"channel_id": world.ch("qa-private"), "message": "spec", "file_ids": [info["id"]]},
    )
    r = await world.outgoing(
        channel_id=world.ch("qa"), user_id=world.uid("kim"), post_id=post["id"], text="@ai remember this file"
    )
    assert r.status_code == 403
    assert not world.sql("SELECT 1 FROM inbox WHERE post_id = ?", post["id"])
    async with httpx.AsyncClient(timeout=20) as c:
        found = await c.post(
            f"{world.base}/mattermost/slash",
            data={
                "token": SLASH,
                "command": "/search",
                "text": secret,
                "channel_id": world.ch("qa"),
                "user_id": world.uid("kim"),
            },
        )
    assert found.status_code == 200 and mark not in listed(found)


async def test_a_slash_command_claiming_a_private_channel_of_a_non_member_is_refused(world: World) -> None:
    r = await world.slash(
        channel_id=world.ch("qa-private"), user_id=world.uid("park"), text=world.secrets["private"]
    )
    assert r.status_code == 403
    assert not leaks(world, r)
    assert ("slash.refused", "not_member") in world.refusals()


async def test_a_slash_command_claiming_someone_elses_dm_is_refused(world: World) -> None:
    """The channel's type comes from the server, never from a `__` in `channel_name`."""
    r = await world.slash(
        channel_id=world.dev.seed.dm["kim"],
        channel_name=f"{world.uid('kim')}__{world.uid('lee')}",
        user_id=world.uid("lee"),
        command="/memories",
    )
    assert r.status_code == 403
    assert not leaks(world, r)


async def test_no_team_memory_from_a_private_channel_through_the_slash_door(world: World) -> None:
    t = tag()
    r = await world.slash(
        channel_id=world.ch("qa-private"),
        channel_name="town-square",  # a lie the door must not believe
        user_id=world.uid("kim"),
        command="/remember",
        text=f"--team 팀 전체 공지 {t}",
    )
    assert r.status_code == 200 and "🚫" in r.json()["text"]
    found = await world.slash(channel_id=world.ch("town-square"), user_id=world.uid("lee"), text=t)
    assert found.status_code == 200 and t not in listed(found)


async def test_a_response_url_off_the_server_receives_nothing(world: World) -> None:
    got: list[str] = []

    async def catch(request: web.Request) -> web.Response:
        got.append(await request.text())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", catch)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.2", port)
    await site.start()
    world.llm.delay(BUDGET + 1.5)  # the answer misses the budget: a late one would go to response_url
    try:
        r = await world.slash(
            channel_id=world.ch("qa"),
            user_id=world.uid("kim"),
            command="/ai",
            text="what do we know?",
            trigger_id=uuid.uuid4().hex,
            response_url=f"http://127.0.0.2:{port}/hooks/commands/x",
        )
        assert r.status_code == 400 and "response_url" in r.json()["detail"]
        await asyncio.sleep(BUDGET + 2.5)
        assert got == []
    finally:
        world.llm.delay(0)
        await runner.cleanup()
    assert ("slash.refused", "foreign_response_url") in world.refusals()


async def test_a_reused_trigger_id_changes_nothing(world: World) -> None:
    trigger = uuid.uuid4().hex
    first_url = f"{world.dev.url}/hooks/commands/{uuid.uuid4().hex}"
    r = await world.slash(
        channel_id=world.ch("qa"),
        user_id=world.uid("kim"),
        command="/search",
        text="x",
        trigger_id=trigger,
        response_url=first_url,
    )
    assert r.status_code == 200
    again = await world.slash(
        channel_id=world.ch("qa"),
        user_id=world.uid("kim"),
        command="/search",
        text="y",
        trigger_id=trigger,
        response_url=f"{world.dev.url}/hooks/commands/{uuid.uuid4().hex}",
    )
    assert again.status_code == 200 and again.json()["text"] == ""
    post_id = "slash-" + hashlib.sha256(trigger.encode()).hexdigest()[:26]
    assert world.sql("SELECT response_url FROM door_context WHERE post_id = ?", post_id) == [(first_url,)]


SENSITIVE = {
    "rrn": "900101-1234567",
    "phone": "010-2345-6789",
    "card": "4111-1111-1111-1111",
    "api_key": "sk-proj-abcdefghijklmnopqrstuvwx1234",
    "password": "hunter2x9",
    "email": "kim.private@example.com",
}


async def test_nothing_sensitive_stays_in_the_inbox_once_answered(world: World) -> None:
    """A `remember` of every sensitive kind: the memory is masked, and the inbox row the message went
    through keeps its ids for dedupe but nothing of the message (words, author) once the answer is posted."""
    text = (
        f"remember 주민번호 {SENSITIVE['rrn']} 전화 {SENSITIVE['phone']} 카드 {SENSITIVE['card']}"
        f" 키 {SENSITIVE['api_key']} password: {SENSITIVE['password']} 메일 {SENSITIVE['email']}"
    )
    post, reply = await world.bot.ask("kim", "dm", text)
    assert "REDACTED" not in reply or all(v not in reply for v in SENSITIVE.values())
    for _ in range(50):  # the ack follows the reply post
        state = world.sql("SELECT state, payload, reply FROM inbox WHERE post_id = ?", post["id"])
        if state and state[0][0] == "done":
            break
        await asyncio.sleep(0.1)
    [(state, payload, saved)] = state
    assert state == "done" and saved is None
    assert json.loads(payload) == {}  # the row's post_id column is what dedupes; nothing else stays
    # nor in the file's pages, once the write-ahead log is folded in (the daemon does it hourly)
    world.sql("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = (world.folder / "mchat_bot.sqlite3").read_bytes()
    found = [kind for kind, value in SENSITIVE.items() if value.encode() in raw]
    assert found == [], f"raw {found} at rest in SQLite"
