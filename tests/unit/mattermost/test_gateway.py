"""Gateway against a small scripted Mattermost WebSocket on 127.0.0.1.

The scripted server follows protocol 3.2-3.7 (header auth, hello, seq, dead-queue resume, ping
reply) and lets a test inject what the devserver cannot: an arbitrary seq jump. The devserver
integration tests (test_mattermost_devserver.py) cover the same paths against the faithful server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve

from mchat_bot.mattermost.events import Hello
from mchat_bot.mattermost.gateway import Gateway
from tests.support.gateway import Recorder, running_gateway

TOKEN = "bot-token"
CH = "c" * 26


@dataclass
class Conn:
    id: str
    events: list[str] = field(default_factory=list)  # index == seq
    ws: ServerConnection | None = None


@dataclass
class FakeMM:
    conns: dict[str, Conn] = field(default_factory=dict)
    current: Conn | None = None
    frozen: bool = False
    reject_resume: bool = False  # close resume attempts at once, as for a bad connection_id (3.7)
    upgrades: list[dict[str, list[str]]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    origins: list[str | None] = field(default_factory=list)
    url: str = ""
    _post_n: int = 0

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        self.upgrades.append(query)
        self.auth_headers.append(ws.request.headers.get("Authorization"))
        self.origins.append(ws.request.headers.get("Origin"))
        if ws.request.headers.get("Authorization") != f"Bearer {TOKEN}":
            await asyncio.sleep(0.2)
            return  # anonymous socket: closed without a word
        cid = query.get("connection_id", [""])[0]
        if cid and self.reject_resume:
            return
        conn = self.conns.get(cid)
        replay: list[str] = []
        if conn is not None:
            n = int(query["sequence_number"][0])
            if 1 <= n <= len(conn.events):
                replay = conn.events[n:]
            else:
                conn = None
        if conn is None:
            conn = Conn(secrets.token_hex(13))
            self.conns[conn.id] = conn
            hello = {"event": "hello", "data": {"connection_id": conn.id, "server_version": "10.5.0"},
                     "broadcast": {}, "seq": 0}  # fmt: skip
            conn.events.append(json.dumps(hello))
            replay = conn.events[:]
        conn.ws = ws
        self.current = conn
        for frame in replay:
            await ws.send(frame)
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("action") == "ping" and not self.frozen:
                    await ws.send(
                        json.dumps({"status": "OK", "seq_reply": msg["seq"], "data": {"text": "pong"}})
                    )
        conn.ws = None

    async def emit(self, event: str, data: dict[str, Any], *, skip_seq: int = 0) -> None:
        """Record an event on the current connection and send it if the socket is up."""
        conn = self.current
        assert conn is not None
        for _ in range(skip_seq):
            conn.events.append("{}")  # seq numbers consumed by events this client never gets
        frame = json.dumps(
            {"event": event, "data": data, "broadcast": {"channel_id": CH}, "seq": len(conn.events)}
        )
        conn.events.append(frame)
        if conn.ws is not None and not self.frozen:
            with contextlib.suppress(Exception):
                await conn.ws.send(frame)

    async def post(self, message: str, *, skip_seq: int = 0) -> str:
        self._post_n += 1
        post_id = f"{self._post_n:026d}"
        post = {"id": post_id, "create_at": 1_000 + self._post_n, "update_at": 1_000 + self._post_n,
                "user_id": "k" * 26, "channel_id": CH, "message": message, "props": {}}  # fmt: skip
        data = {"channel_type": "O", "channel_name": "qa", "sender_name": "@kim", "team_id": "t" * 26,
                "post": json.dumps(post)}  # fmt: skip
        await self.emit("posted", data, skip_seq=skip_seq)
        return post_id

    async def raw(self, text: str) -> None:
        assert self.current is not None and self.current.ws is not None
        await self.current.ws.send(text)

    async def drop(self) -> None:
        assert self.current is not None and self.current.ws is not None
        self.current.ws.transport.abort()

    def forget_all(self) -> None:
        """Like a restart that loses the dead queues."""
        self.conns.clear()


@pytest.fixture
async def fake() -> AsyncIterator[FakeMM]:
    mm = FakeMM()
    async with serve(mm.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        mm.url = f"http://127.0.0.1:{port}"
        yield mm


@contextlib.asynccontextmanager
async def running(fake: FakeMM, rec: Recorder, **kw: Any) -> AsyncIterator[Gateway]:
    kw.setdefault("initial_backoff", 0.05)
    kw.setdefault("max_backoff", 0.2)
    async with running_gateway(fake.url, TOKEN, rec.on_event, rec.on_gap, **kw) as gw:
        yield gw


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a stats condition (the gateway exposes counters, not events, for these)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def reconnected(gw: Gateway, connects: int) -> None:
    await wait_until(lambda: gw.stats.connects >= connects and gw.authenticated.is_set())


async def test_connects_with_bearer_and_no_origin_and_delivers_in_order(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec) as gw:
        first = await asyncio.wait_for(rec.events.get(), 5)
        assert isinstance(first, Hello)
        for i in range(5):
            await fake.post(f"m{i}")
        got = [(await rec.next_post()).post.message for _ in range(5)]
        assert got == [f"m{i}" for i in range(5)]
        assert gw.stats.connects == 1 and gw.stats.fresh_hellos == 1 and rec.gaps == []
    assert fake.auth_headers == [f"Bearer {TOKEN}"]
    assert fake.origins == [None]
    assert fake.upgrades == [{}]


async def test_drop_resumes_and_replays_missed_events_without_hello(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec) as gw:
        await fake.post("before")
        assert (await rec.next_post()).post.message == "before"
        await fake.drop()
        await fake.post("missed-1")  # written to the dead queue while the socket is down
        await fake.post("missed-2")
        await reconnected(gw, 2)
        assert [(await rec.next_post()).post.message for _ in range(2)] == ["missed-1", "missed-2"]
        await fake.post("after")
        assert (await rec.next_post()).post.message == "after"
        assert gw.stats.resumes == 1 and gw.stats.fresh_hellos == 1 and rec.gaps == []
    conn_id = next(iter(fake.conns))
    assert fake.upgrades[1] == {"connection_id": [conn_id], "sequence_number": ["2"]}


async def test_lost_dead_queue_gives_fresh_hello_and_on_gap(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec) as gw:
        await fake.post("seen")  # create_at 1001
        await rec.next_post()
        fake.forget_all()
        await fake.drop()
        await asyncio.wait_for(rec.gap_seen.wait(), 5)
        assert rec.gaps == [1000]  # newest delivered post time - 1 ms
        assert gw.stats.fresh_hellos == 2 and gw.stats.gaps == 1
        await fake.post("new")
        assert (await rec.next_post()).post.message == "new"


async def test_seq_gap_calls_on_gap_then_delivers(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec) as gw:
        await fake.post("one")
        await rec.next_post()
        await fake.post("three", skip_seq=1)
        assert (await rec.next_post()).post.message == "three"
        assert rec.gaps == [1000] and gw.stats.gaps == 1


async def test_bad_frames_are_skipped_and_socket_stays(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec) as gw:
        await fake.raw("{not json")
        await fake.raw(json.dumps({"event": "posted", "seq": 1, "data": {"post": "{broken"}}))
        await fake.post("still here")  # seq 1: the broken frame did not consume it
        assert (await rec.next_post()).post.message == "still here"
        assert gw.stats.bad_frames == 2 and gw.stats.connects == 1


async def test_silence_means_dead_socket_and_reconnect(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec, silence_timeout=1.0, ping_interval=0.3) as gw:
        await asyncio.sleep(1.3)  # pongs keep a quiet socket alive past the silence timeout
        assert gw.stats.connects == 1
        fake.frozen = True
        await fake.post("during freeze")  # queued server-side, not sent
        t0 = asyncio.get_running_loop().time()
        await wait_until(lambda: gw.stats.silences > 0)
        assert 0.9 <= asyncio.get_running_loop().time() - t0 < 2.5
        fake.frozen = False
        await reconnected(gw, 2)
        assert (await rec.next_post()).post.message == "during freeze"  # replayed by the resume
        assert rec.gaps == []


async def test_wrong_token_never_authenticates(fake: FakeMM) -> None:
    rec = Recorder()
    gw = Gateway(fake.url, "wrong", rec.on_event, rec.on_gap, initial_backoff=0.05, max_backoff=0.1)
    task = asyncio.create_task(gw.run())
    await asyncio.sleep(1.0)
    assert not gw.authenticated.is_set() and gw.stats.connects >= 2  # keeps retrying
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_run_is_cancellable_while_backing_off() -> None:
    rec = Recorder()
    gw = Gateway("http://127.0.0.1:9", TOKEN, rec.on_event, rec.on_gap, open_timeout=0.5)
    task = asyncio.create_task(gw.run())
    await asyncio.sleep(0.3)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert task.done()


async def test_refused_resume_falls_back_to_fresh_connection_and_gap(fake: FakeMM) -> None:
    rec = Recorder()
    async with running(fake, rec) as gw:
        await fake.post("seen")
        await rec.next_post()
        fake.reject_resume = True
        await fake.drop()
        await asyncio.wait_for(rec.gap_seen.wait(), 5)
        assert rec.gaps == [1000] and gw.stats.fresh_hellos == 2
    resumed = [q for q in fake.upgrades if "connection_id" in q]
    assert len(resumed) == 2 and fake.upgrades[-1] == {}  # two refused resumes, then a fresh start


async def test_token_is_never_logged(fake: FakeMM, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder()
    async with running(fake, rec):
        await fake.raw("{bad")
        await fake.drop()
        await asyncio.sleep(0.5)
    out = capsys.readouterr()
    assert "gateway." in out.out + out.err  # logs were captured at all
    assert TOKEN not in out.out + out.err
