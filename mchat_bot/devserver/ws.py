"""The WebSocket endpoint (section 3): upgrade, auth, actions, keepalive, and the socket-level faults.

Each TCP socket is a `Socket`; once authenticated it drives one hub `Conn` (which survives the socket).
"Close without a close frame" is a transport abort, as Mattermost does on auth/decode/resume errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web

from mchat_bot.devserver.errors import AppError
from mchat_bot.devserver.hub import Conn, Hub, Item
from mchat_bot.devserver.posts import PostService
from mchat_bot.devserver.state import SERVER_VERSION, Store, User, is_valid_id
from mchat_bot.devserver.timing import Timings

log = structlog.get_logger(__name__)

FRAME_LIMIT = 8 * 1024  # SocketMaxMessageSizeKb: bytes, despite the name
WRITE_WAIT = 30.0
CLOSE_WAIT = 2.0
OK_ACTIONS = {
    "get_statuses",
    "get_statuses_by_ids",
    "presence",
    "user_update_active_status",
    "posted_notify_ack",
}


@dataclass
class WsConfig:
    ping_interval: float = 60.0
    pong_wait: float = 100.0
    auth_timeout: float = 5.0


@dataclass
class WsState:
    """Live sockets plus the global freeze switch (half-open simulation)."""

    config: WsConfig
    sockets: set[Socket] = field(default_factory=set)
    frozen: bool = False
    unfrozen: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.unfrozen.set()

    def freeze(self, on: bool) -> None:
        self.frozen = on
        if on:
            self.unfrozen.clear()
        else:
            self.unfrozen.set()

    def hold_existing(self) -> int:
        """Make every socket open now half-open; sockets opened later work normally."""
        socks = list(self.sockets)
        for s in socks:
            s.held = True
        return len(socks)

    def drop_all(self) -> int:
        socks = list(self.sockets)
        for s in socks:
            s.abort()
        return len(socks)


class Socket:
    """One upgraded TCP connection."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, state: WsState, hub: Hub) -> None:
        self.ws, self.state, self.hub = ws, state, hub
        self.transport = request.transport
        self.user: User | None = None
        self.conn: Conn | None = None
        self.opened = time.monotonic()
        self.last_pong = self.opened
        self.last_ping = self.opened
        self.dead = False
        # Half-open: this socket alone goes silent for good (sends nothing, answers no ping or
        # close) while new sockets work, like a connection lost behind a NAT or proxy.
        self.held = False
        self._never = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        self.timings: Timings | None = None  # bench hooks (timing.py)

    @property
    def silent(self) -> bool:
        return self.state.frozen or self.held

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (client sees 1006)."""
        self.dead = True
        if self.transport is not None:
            self.transport.abort()
        if self.writer is not None:
            self.writer.cancel()

    def attach(self, user: User, conn: Conn) -> None:
        self.user, self.conn = user, conn
        conn.active = True
        conn.on_overflow = self.close_no_status
        if self.timings is not None:
            self.timings.on_auth(user.id)
        self.writer = asyncio.create_task(self._write_loop(conn))

    def close_no_status(self) -> None:
        """Hub closed the send channel (queue full): a close frame without status (1005), then TCP close."""
        if self.writer is not None:
            self.writer.cancel()
        self.dead = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"\x88\x00")  # FIN + close opcode, empty payload: no status code
            self.transport.close()

    def reply(
        self, seq: int, status: str = "OK", data: dict[str, Any] | None = None, error: AppError | None = None
    ) -> None:
        """Queue a reply; anonymous sockets get none (the hub drops them)."""
        if self.conn is None:
            return
        r: dict[str, Any] = {"status": status}
        if seq:
            r["seq_reply"] = seq
        if data:
            r["data"] = data
        if error is not None:
            e = error.to_json()
            r["error"] = e
        self.conn.enqueue(Item("reply", r))

    async def _write_loop(self, conn: Conn) -> None:
        try:
            while not self.dead:
                await self.state.unfrozen.wait()
                if self.held:
                    await self._never.wait()
                if not conn.prelude and not conn.queue:
                    conn.wakeup.clear()
                    await conn.wakeup.wait()
                    continue
                # What is queued now goes out under one write deadline: a timer per frame cost more
                # than the frame, thousands of times a second. Only what is queued now, so that a
                # queue refilled as fast as it drains cannot stretch one deadline over a healthy
                # socket's endless stream. A freeze still stops between frames.
                async with asyncio.timeout(WRITE_WAIT):
                    for _ in range(len(conn.prelude) + len(conn.queue)):
                        if self.silent or self.dead:
                            break
                        await self._write_next(conn)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("devserver.ws.write_failed", error=repr(e))
            self.abort()

    async def _write_next(self, conn: Conn) -> None:
        tag = ""
        if conn.prelude:
            text = conn.prelude.pop(0)
        else:
            item = conn.queue.popleft()
            tag = item.tag
            text = conn.render(item)
        await self.ws.send_str(text)
        if tag and self.timings is not None:
            self.timings.on_sent(conn.user_id, tag)

    async def monitor(self) -> None:
        """Auth ticker, server pings, and the pong read deadline."""
        cfg = self.state.config
        tick = max(0.05, min(1.0, cfg.ping_interval / 2, cfg.auth_timeout / 5))
        while not self.dead:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.user is None and now - self.opened >= cfg.auth_timeout:
                self.abort()
                return
            if now - self.last_pong > cfg.pong_wait:
                log.info("devserver.ws.pong_timeout")
                self.abort()
                return
            if not self.silent and now - self.last_ping >= cfg.ping_interval:
                self.last_ping = now
                try:
                    await asyncio.wait_for(self.ws.ping(), WRITE_WAIT)
                except Exception:
                    self.abort()
                    return


def _went_away(conn: Conn) -> None:
    """The server notices the socket is gone: the connection may be resumed from now on."""
    conn.active = False
    conn.last_activity = time.monotonic()


class WsEndpoint:
    """aiohttp handler for /api/v4/websocket."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        posts: PostService,
        state: WsState,
        authenticate: Callable[[web.Request], User | None],
    ) -> None:
        self.store, self.hub, self.posts, self.state = store, hub, posts, state
        self.authenticate = authenticate

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc.lower() != request.host.lower():
            return web.Response(status=403, text="Forbidden\n")
        user = self.authenticate(request)
        cid = request.query.get("connection_id", "")
        bad_params = False
        seq = 0
        if user is not None and cid:
            try:
                seq = int(request.query["sequence_number"])
            except (KeyError, ValueError):
                bad_params = True
            if not is_valid_id(cid):
                bad_params = True
        ws = web.WebSocketResponse(
            autoping=False, autoclose=False, max_msg_size=FRAME_LIMIT + 1, compress=False
        )
        await ws.prepare(request)
        sock = Socket(ws, request, self.state, self.hub)
        sock.timings = self.posts.timings
        if bad_params:
            sock.abort()
            return ws
        self.state.sockets.add(sock)
        if user is not None:
            conn = self.hub.resume(user.id, cid, seq) if cid else self.hub.register_fresh(user.id)
            sock.attach(user, conn)
        monitor = asyncio.create_task(sock.monitor())
        try:
            await self._read_loop(sock)
        finally:
            monitor.cancel()
            sock.dead = True
            if sock.writer is not None:
                sock.writer.cancel()
            self.state.sockets.discard(sock)
            if sock.conn is not None:
                sock.conn.on_overflow = None
                if sock.held:
                    # Half-open: the server never heard the client go, so its connection stays
                    # active until the read deadline passes (last pong + pong_wait). A resume before
                    # then fails and gets a fresh connection id and hello (gotcha 18).
                    deadline = sock.last_pong + self.state.config.pong_wait - time.monotonic()
                    asyncio.get_running_loop().call_later(max(0.0, deadline), _went_away, sock.conn)
                else:
                    _went_away(sock.conn)
            if not ws.closed and sock.transport is not None:
                sock.transport.abort()
        return ws

    async def _read_loop(self, sock: Socket) -> None:
        ws = sock.ws
        while not sock.dead:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                if len(msg.data.encode()) > FRAME_LIMIT:  # aiohttp's own limit check is off by one
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(code=1009), CLOSE_WAIT)
                    sock.abort()
                    return
                try:
                    obj = json.loads(msg.data)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict) or not self._handle(sock, obj):
                    sock.abort()  # decode error: plain TCP close, no reply
                    return
            elif msg.type == WSMsgType.BINARY:
                sock.abort()  # msgpack is not supported here; treat as undecodable
                return
            elif msg.type == WSMsgType.PING:
                if not sock.silent:
                    with contextlib.suppress(Exception):
                        await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                sock.last_pong = time.monotonic()
            elif msg.type == WSMsgType.CLOSE:
                if not sock.silent:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(code=msg.data or 1000), CLOSE_WAIT)
                    return
            else:  # CLOSING, CLOSED, ERROR (e.g. 1009 already sent by aiohttp)
                return

    def _handle(self, sock: Socket, req: dict[str, Any]) -> bool:
        """Route one client action; returns False when the frame does not decode as a request."""
        seq, action, data = req.get("seq", 0), req.get("action", ""), req.get("data")
        if (
            type(seq) is not int
            or not isinstance(action, str)
            or not (data is None or isinstance(data, dict))
        ):
            return False
        data = data or {}
        if action == "":
            sock.reply(
                seq,
                "FAIL",
                error=AppError(400, "api.web_socket_router.no_action.app_error", "No websocket action."),
            )
            return True
        if seq <= 0:
            sock.reply(
                seq,
                "FAIL",
                error=AppError(
                    400, "api.web_socket_router.bad_seq.app_error", "Invalid sequence for WebSocket message."
                ),
            )
            return True
        if action == "authentication_challenge":
            if sock.user is not None:
                return True  # a session exists: silently ignored
            user = self.store.user_by_token(str(data.get("token", "")))
            if user is None:
                sock.abort()
                return True
            sock.attach(user, self.hub.register_fresh(user.id))
            sock.reply(seq)
            return True
        if sock.user is None:
            return True  # anonymous: replies are dropped
        if action == "ping":
            sock.reply(
                seq,
                data={
                    "text": "pong",
                    "version": SERVER_VERSION,
                    "server_time": int(time.time() * 1000),
                    "node_id": "",
                },
            )
        elif action == "user_typing":
            try:
                self.posts.typing(sock.user, data.get("channel_id"), data.get("parent_id", ""))
            except AppError as e:
                sock.reply(seq, "FAIL", error=e)
            else:
                sock.reply(seq)
        elif action in OK_ACTIONS:
            statuses = {sock.user.id: "online"} if action.startswith("get_statuses") else None
            sock.reply(seq, data=statuses)
        elif action.startswith("custom_"):
            pass
        else:
            sock.reply(
                seq,
                "FAIL",
                error=AppError(
                    500, "api.web_socket_router.bad_action.app_error", "Unknown WebSocket action."
                ),
            )
        return True
