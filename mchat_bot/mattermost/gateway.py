"""The Mattermost WebSocket gateway: a sans-I/O session plus the task that owns the socket.

:class:`GatewaySession` holds the reliable-WebSocket state (``connection_id``, last ``seq``) and makes
every decision (resume query, deliver / duplicate / gap, lost-on-hello) as plain, testable code.
:class:`Gateway` only moves frames: connect with the Bearer header, resume, read, parse, hand events to
``on_event`` in order, ping, detect silence, reconnect with jittered backoff. It never runs handlers;
``on_event`` and ``on_gap`` are expected to enqueue and return quickly.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from mchat_bot.mattermost.events import (
    ActionReply,
    Event,
    FrameError,
    Hello,
    PassedPost,
    Posted,
    PostFilter,
    parse_frame,
)
from mchat_bot.net.retry import RetryPolicy

__all__ = ["Decision", "Gateway", "GatewaySession", "GatewayStats", "websocket_url"]

log = structlog.get_logger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024  # server->client frames are unbounded and double-escaped (3.9)


class Decision(enum.Enum):
    """What to do with an event, given the seq we have seen so far on this connection."""

    DELIVER = "deliver"  # the next expected seq
    DUPLICATE = "duplicate"  # seq <= last seen: a replay we already delivered
    GAP = "gap"  # seq > last + 1: events in between are lost; deliver this one, then catch up


@dataclass
class GatewaySession:
    """Reliable-WebSocket bookkeeping (protocol 3.7), free of I/O.

    ``last_seq`` is -1 before any event. A stored ``connection_id`` plus ``last_seq`` lets the next
    connection resume; a ``hello`` with another id means the server could not resume.
    """

    connection_id: str = ""
    last_seq: int = -1
    ever_connected: bool = False

    def connect_query(self) -> dict[str, str]:
        """Query parameters for the next upgrade: a resume if we can, else {} for a fresh start."""
        if self.connection_id and self.last_seq >= 0:
            # sequence_number is the *next* seq we expect; last-seen would replay one duplicate.
            return {"connection_id": self.connection_id, "sequence_number": str(self.last_seq + 1)}
        return {}

    def on_hello(self, hello: Hello) -> bool:
        """Record a hello; True when events may have been lost (we had a connection before)."""
        lost = self.ever_connected and hello.connection_id != self.connection_id
        self.connection_id = hello.connection_id
        self.last_seq = hello.seq
        self.ever_connected = True
        return lost

    def on_event(self, event: Event) -> Decision:
        """Classify a non-hello event by its seq and advance ``last_seq`` when it is new."""
        if event.seq <= self.last_seq:
            return Decision.DUPLICATE
        decision = Decision.GAP if event.seq > self.last_seq + 1 else Decision.DELIVER
        self.last_seq = event.seq
        return decision

    def forget_resume(self) -> None:
        """Give up resuming (the server keeps refusing it); the next hello will count as loss."""
        self.connection_id = ""
        self.last_seq = -1


@dataclass
class GatewayStats:
    connects: int = 0
    resumes: int = 0
    fresh_hellos: int = 0
    gaps: int = 0
    bad_frames: int = 0
    duplicates: int = 0
    silences: int = 0
    events: int = 0
    last_frame_at: float = 0.0  # wall-clock seconds of the last frame received, 0 = never


def websocket_url(ws_url_or_base_url: str) -> str:
    """``http(s)://host[/prefix]`` or ``ws(s)://...`` -> the ``ws(s)://.../api/v4/websocket`` URL."""
    parts = urlsplit(ws_url_or_base_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError("Mattermost URL must be http(s):// or ws(s):// with a host")
    path = parts.path.rstrip("/")
    if not path.endswith("/api/v4/websocket"):
        if not path.endswith("/api/v4"):
            path += "/api/v4"
        path += "/websocket"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


OnEvent = Callable[[Event], Awaitable[None]]
OnGap = Callable[[int], Awaitable[None]]


class _Silence(Exception):
    """No frame (not even a pong) for silence_timeout: the socket is dead though TCP may not know."""


class Gateway:
    """Keeps one authenticated, resumed WebSocket to Mattermost alive until cancelled.

    ``on_event(ev)`` gets every new event (Hello, Posted, OtherEvent; with ``wants``, the posts it
    refuses as PassedPost) in seq order, never a duplicate. ``on_gap(since_ms)`` is awaited when
    events may be lost (fresh hello after we had a connection, or a seq gap); ``since_ms`` is for
    ``GET /channels/{id}/posts?since=``. Both run on the reader task, so they must only enqueue; an
    exception from them ends ``run()`` (a bug, for the supervisor to see), while every
    socket/protocol failure just means "reconnect".
    """

    def __init__(
        self,
        ws_url_or_base_url: str,
        token: str,
        on_event: OnEvent,
        on_gap: OnGap,
        *,
        silence_timeout: float = 30.0,
        ping_interval: float = 10.0,
        max_backoff: float = 30.0,
        open_timeout: float = 10.0,
        initial_backoff: float = 0.5,
        wants: PostFilter | None = None,
    ) -> None:
        self.url = websocket_url(ws_url_or_base_url)
        self._wants = wants  # posts it refuses come as PassedPost: no Post is built for them
        self._token = token
        self._on_event = on_event
        self._on_gap = on_gap
        self.silence_timeout = silence_timeout
        self.ping_interval = ping_interval
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.initial_backoff = initial_backoff
        self.policy = RetryPolicy(first_delay=initial_backoff, max_delay=max_backoff, tries=None)
        self.session = GatewaySession()
        self.stats = GatewayStats()
        self.authenticated = asyncio.Event()
        self._action_seq = itertools.count(1)
        self._since_ms = 0  # newest post time delivered; the catch-up point after a loss
        self._first_auth_ms = 0
        self._ws: ClientConnection | None = None
        self._waiting_since: float | None = None  # monotonic time the reader began waiting for a frame
        self._silenced = False  # the watchdog closed this connection for silence

    # --- public -------------------------------------------------------------------------------

    @property
    def since_ms(self) -> int:
        """Where a REST catch-up must start: newest delivered post time - 1 ms (ties included)."""
        if self._since_ms:
            return self._since_ms - 1
        # Nothing delivered yet: every post after our first connection would have reached us.
        return max(self._first_auth_ms - 1, 0)

    async def run(self) -> None:
        """Connect, read and reconnect forever; only cancellation ends it."""
        delays = self.policy.backoff()
        failed_resumes = 0
        while True:
            query = self.session.connect_query()
            healthy = False
            opened_before = self.stats.connects
            try:
                healthy = await self._connect_and_read(query)
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                log.warning("gateway.handshake_rejected", status=exc.response.status_code)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                log.warning("gateway.connect_failed", error=exc.__class__.__name__, detail=str(exc)[:200])
            finally:
                self.authenticated.clear()
                self._ws = None
            if healthy:
                failed_resumes = 0
                delays.reset()
            elif query and self.stats.connects > opened_before:
                # Upgraded but never authenticated: bad id/seq closes the socket at once (3.7).
                # (A refused or rate-limited upgrade says nothing about the resume, so it doesn't count.)
                failed_resumes += 1
                if failed_resumes >= 2:
                    log.warning("gateway.resume_abandoned", connection_id=query["connection_id"])
                    self.session.forget_resume()
                    failed_resumes = 0
            delay = delays.next()
            log.info("gateway.reconnecting", delay=round(delay, 3))
            await asyncio.sleep(delay)

    async def send_action(self, action: str, data: Mapping[str, Any] | None = None) -> int:
        """Send a client action (e.g. ``user_typing``); returns its seq. Raises if not connected."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("gateway is not connected")
        seq = next(self._action_seq)
        async with asyncio.timeout(self.open_timeout):
            await ws.send(json.dumps({"seq": seq, "action": action, "data": dict(data or {})}))
        return seq

    # --- one connection ------------------------------------------------------------------------

    async def _connect_and_read(self, query: dict[str, str]) -> bool:
        """One socket's life. Returns True if it got authenticated (so the backoff resets)."""
        url = self.url + ("?" + urlencode(query) if query else "")
        log.info("gateway.connecting", url=self.url, resume=bool(query))
        async with connect(
            url,
            additional_headers={"Authorization": f"Bearer {self._token}"},
            origin=None,
            user_agent_header="mchat-bot",
            open_timeout=self.open_timeout,
            max_size=MAX_FRAME_BYTES,
            # Library keepalive stays on for the TCP path; liveness of the server is judged by our
            # own application pings and the silence watchdog below.
            ping_interval=max(self.ping_interval * 2, 1.0),
            ping_timeout=self.silence_timeout,
            close_timeout=2.0,
            proxy=None,
        ) as ws:
            self._ws = ws
            self.stats.connects += 1
            pinger = asyncio.create_task(self._ping_loop(ws), name="mm-gateway-ping")
            self._silenced = False
            self._waiting_since = None
            watchdog = asyncio.create_task(self._silence_watch(ws), name="mm-gateway-silence")
            got_hello = False
            try:
                await self._read_loop(ws, resumed=bool(query))
            except _Silence:
                self.stats.silences += 1
                log.warning("gateway.silent_socket", timeout=self.silence_timeout)
                ws.transport.abort()  # a frozen peer would make a polite close hang
            except ConnectionClosed as exc:
                log.info("gateway.closed", code=exc.rcvd.code if exc.rcvd else None)
            finally:
                pinger.cancel()
                watchdog.cancel()
                await asyncio.gather(pinger, watchdog, return_exceptions=True)
                got_hello = self.authenticated.is_set()
            return got_hello

    async def _silence_watch(self, ws: ClientConnection) -> None:
        """Close the connection once the reader has waited `silence_timeout` for a frame."""
        period = max(0.01, min(1.0, self.silence_timeout / 10))
        while True:
            await asyncio.sleep(period)
            since = self._waiting_since
            if since is not None and time.monotonic() - since >= self.silence_timeout:
                self._silenced = True
                ws.transport.abort()  # recv() raises ConnectionClosed; the reader turns it into _Silence
                return

    async def _ping_loop(self, ws: ClientConnection) -> None:
        """Application pings: the pong reply proves the server end is alive and authenticated."""
        while True:
            try:
                await self.send_action("ping")
            except (ConnectionClosed, ConnectionError, TimeoutError):
                return
            await asyncio.sleep(self.ping_interval)

    async def _read_loop(self, ws: ClientConnection, *, resumed: bool) -> None:
        while True:
            # Silence is measured only while we wait here, so a slow on_event never counts as a dead
            # socket. The watchdog task reads `_waiting_since`: no timer per frame (at thousands of
            # frames a second, arming and cancelling one cost more than parsing the frame).
            self._waiting_since = time.monotonic()
            try:
                raw = await ws.recv()
            except ConnectionClosed:
                if self._silenced:
                    raise _Silence from None
                raise
            self._waiting_since = None
            self.stats.last_frame_at = time.time()
            try:
                frame = parse_frame(raw, max_bytes=MAX_FRAME_BYTES, wants=self._wants)
            except FrameError as exc:
                self.stats.bad_frames += 1
                log.warning("gateway.bad_frame", error=str(exc)[:200], size=len(raw))
                continue
            if isinstance(frame, ActionReply):
                if frame.ok:
                    self._mark_authenticated(resumed)
                elif frame.status == "FAIL":
                    log.warning(
                        "gateway.action_failed", seq_reply=frame.seq_reply, error_id=frame.error.get("id")
                    )
                continue
            await self._handle_event(frame, resumed)

    def _mark_authenticated(self, resumed: bool) -> None:
        if self.authenticated.is_set():
            return
        if resumed:
            self.stats.resumes += 1
            log.info("gateway.resumed", connection_id=self.session.connection_id, seq=self.session.last_seq)
        if not self._first_auth_ms:
            self._first_auth_ms = int(time.time() * 1000)
        self.authenticated.set()

    async def _handle_event(self, event: Event, resumed: bool) -> None:
        if isinstance(event, Hello):
            self.stats.fresh_hellos += 1
            lost = self.session.on_hello(event)
            # A hello is never a resume, even on a connection we opened with resume parameters.
            if not self.authenticated.is_set():
                if not self._first_auth_ms:
                    self._first_auth_ms = int(time.time() * 1000)
                self.authenticated.set()
            log.info("gateway.hello", connection_id=event.connection_id, lost=lost)
            if lost:
                await self._gap("fresh_hello")
            await self._deliver(event)
            return
        self._mark_authenticated(resumed)
        decision = self.session.on_event(event)
        if decision is Decision.DUPLICATE:
            self.stats.duplicates += 1
            return
        if decision is Decision.GAP:
            await self._gap("seq_gap")
        await self._deliver(event)

    async def _gap(self, reason: str) -> None:
        self.stats.gaps += 1
        since = self.since_ms
        log.warning("gateway.gap", reason=reason, since_ms=since)
        await self._on_gap(since)

    async def _deliver(self, event: Event) -> None:
        self.stats.events += 1
        if isinstance(event, Posted):
            self._since_ms = max(self._since_ms, event.post.create_at, event.post.update_at)
        elif isinstance(event, PassedPost):
            self._since_ms = max(self._since_ms, event.create_at, event.update_at)
        await self._on_event(event)
