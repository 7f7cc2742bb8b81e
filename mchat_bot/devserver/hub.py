"""WebSocket connection registry: per-connection seq, send queue, dead queue and the resume rules (3.7).

A `Conn` outlives its socket: when the socket drops it stays here, inactive, so a client can resume it
with `connection_id` + `sequence_number`. The socket side (aiohttp) lives in `ws.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mchat_bot.devserver import wire
from mchat_bot.devserver.state import VERSION_ID, new_id

log = structlog.get_logger(__name__)

DEAD_QUEUE_SIZE = 128
SEND_QUEUE_SIZE = 256
BUSY_QUEUE_SIZE = 128
DROPPABLE_WHEN_BUSY = {"typing", "status_change", "channel_viewed", "multiple_channels_viewed"}


def broadcast(
    *,
    channel_id: str = "",
    user_id: str = "",
    team_id: str = "",
    omit_users: dict[str, bool] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The `broadcast` object of an event (section 3.4); `omit_users` is an object or null."""
    b: dict[str, Any] = {
        "omit_users": omit_users,
        "user_id": user_id,
        "channel_id": channel_id,
        "team_id": team_id,
        "connection_id": "",
        "omit_connection_id": "",
    }
    b.update(extra)
    return b


class EventText:
    """One event as JSON, encoded once for every socket it goes to: each socket only appends its
    own ``seq``, the last field, as the server writes it (``{"event", "data", "broadcast", "seq"}``)."""

    __slots__ = ("_head", "event")

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event
        self._head = ""

    @property
    def name(self) -> str:
        return str(self.event.get("event", ""))

    def with_seq(self, seq: int) -> str:
        if not self._head:
            self._head = wire.dumps({k: v for k, v in self.event.items() if k != "seq"})[:-1]
        return f'{self._head},"seq":{seq}}}'


@dataclass
class Item:
    """One queued outbound frame: an event (seq assigned when written), a reply, or raw text."""

    kind: str  # "event" (payload: EventText) | "reply" (a dict) | "raw" (text)
    payload: Any
    tag: str = ""  # bench timing: the post id of a `posted` event (see timing.py)

    @classmethod
    def event(cls, event: dict[str, Any]) -> Item:
        return cls("event", EventText(event))


@dataclass
class Conn:
    """Server-side state of one logical WebSocket connection (survives socket drops)."""

    id: str
    user_id: str
    next_seq: int = 0
    queue: deque[Item] = field(default_factory=deque)
    dead: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=DEAD_QUEUE_SIZE))
    active: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    prelude: list[str] = field(default_factory=list)  # frames to write first (replay or hello)
    on_overflow: Callable[[], None] | None = None

    def enqueue(self, item: Item) -> bool:
        if item.kind == "event" and item.payload.name in DROPPABLE_WHEN_BUSY:
            if len(self.queue) >= BUSY_QUEUE_SIZE:
                return True
        if len(self.queue) >= SEND_QUEUE_SIZE:
            return False
        self.queue.append(item)
        self.wakeup.set()
        return True

    def render(self, item: Item) -> str:
        """Serialise the next item; events get the next seq and go to the dead queue."""
        if item.kind == "raw":
            return str(item.payload)
        if item.kind == "reply":
            return wire.dumps(item.payload)
        seq = self.next_seq
        self.next_seq += 1
        text: str = item.payload.with_seq(seq)
        self.dead.append((seq, text))
        return text

    def hello(self) -> dict[str, Any]:
        return {
            "event": "hello",
            "data": {"connection_id": self.id, "server_hostname": "devserver", "server_version": VERSION_ID},
            "broadcast": broadcast(user_id=self.user_id),
        }


class Hub:
    """All connections by id; publishes events to the right ones (section 3.10)."""

    def __init__(self, resume_window: float = 300.0) -> None:
        self.conns: dict[str, Conn] = {}
        self.resume_window = resume_window

    def register_fresh(self, user_id: str) -> Conn:
        conn = Conn(id=new_id(), user_id=user_id, active=True)
        self.conns[conn.id] = conn
        conn.enqueue(Item.event(conn.hello()))
        return conn

    def reap(self) -> None:
        """Drop inactive connections idle longer than the resume window (the 5-minute reaper)."""
        cutoff = time.monotonic() - self.resume_window
        for cid in [c.id for c in self.conns.values() if not c.active and c.last_activity < cutoff]:
            del self.conns[cid]

    def resume(self, user_id: str, connection_id: str, seq: int) -> Conn:
        """Attach to an existing inactive connection per the table in section 3.7, or start a fresh one."""
        self.reap()
        conn = self.conns.get(connection_id)
        if conn is None or conn.user_id != user_id or conn.active:
            return self.register_fresh(user_id)
        conn.active = True
        conn.last_activity = time.monotonic()
        conn.prelude = []
        if seq == 0:
            conn.next_seq = 0  # "no resume": no hello, no replay, numbering restarts
            return conn
        dead_seqs = [s for s, _ in conn.dead]
        if dead_seqs and dead_seqs[0] <= seq <= dead_seqs[-1]:
            conn.prelude = [text for s, text in conn.dead if s >= seq]
        elif dead_seqs and seq == dead_seqs[-1] + 1:
            pass
        else:
            conn.dead.clear()
            del self.conns[conn.id]
            conn.id = new_id()
            self.conns[conn.id] = conn
            conn.next_seq = 0
            conn.queue.appendleft(Item.event(conn.hello()))
        conn.wakeup.set()
        return conn

    def clear(self) -> None:
        self.conns.clear()

    def touch_user(self, user_id: str) -> None:
        """A REST write counts as activity for the reaper."""
        now = time.monotonic()
        for c in self.conns.values():
            if c.user_id == user_id:
                c.last_activity = now

    def publish(
        self,
        event: str,
        data: dict[str, Any],
        bc: dict[str, Any],
        audience: set[str] | None,
        per_user: Callable[[str], tuple[dict[str, Any], dict[str, Any]] | None] | None = None,
        tag: str = "",
    ) -> None:
        """Queue an event for every connection whose user is in `audience` (None = everyone).

        `per_user(user_id)` may return a (data, broadcast) pair to tailor the event per recipient,
        or None to skip that recipient. Recipients given the same pair share one encoding.
        """
        omit = bc.get("omit_users") or {}
        texts: dict[tuple[int, int], EventText] = {}
        for conn in list(self.conns.values()):
            uid = conn.user_id
            if audience is not None and uid not in audience:
                continue
            if uid in omit:
                continue
            if bc.get("user_id") and bc["user_id"] != uid:
                continue
            d, b = data, bc
            if per_user is not None:
                tailored = per_user(uid)
                if tailored is None:
                    continue
                d, b = tailored
            text = texts.get((id(d), id(b)))
            if text is None:
                text = texts[id(d), id(b)] = EventText({"event": event, "data": d, "broadcast": b})
            if not conn.enqueue(Item("event", text, tag)):
                log.info("devserver.ws.queue_full", connection_id=conn.id)
                self.conns.pop(conn.id, None)
                if conn.on_overflow is not None:
                    conn.on_overflow()
