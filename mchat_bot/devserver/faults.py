"""Fault switches for tests and the demo: drop/freeze sockets, fail or slow posts, rate limiting."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from mchat_bot.devserver.errors import AppError, error_response, request_id
from mchat_bot.devserver.hub import Hub, Item
from mchat_bot.devserver.posts import PostService
from mchat_bot.devserver.ratelimit import Gcra
from mchat_bot.devserver.ws import WsState


@dataclass
class RateLimitState:
    enabled: bool = False
    gcra: Gcra | None = None
    vary_by_user: bool = False


def limit_exceeded(headers: dict[str, str]) -> web.Response:
    """The throttled library's denial: plain text, not the JSON error shape."""
    return web.Response(
        status=429, body=b"limit exceeded\n", headers={"Content-Type": "text/plain; charset=utf-8", **headers}
    )


class Faults:
    """Switches; every method takes effect at once and `reset()` turns everything off."""

    def __init__(
        self,
        ws: WsState,
        hub: Hub,
        posts: PostService,
        ratelimit: RateLimitState,
        bot_id: Callable[[], str],
        seed: int = 0,
    ) -> None:
        self._ws, self._hub, self._posts, self._rl, self._bot_id = ws, hub, posts, ratelimit, bot_id
        self._fail_n = 0
        self._fail_status = 500
        self._ratio = 0.0
        self._ratio_statuses: tuple[int, ...] = (429, 500, 502, 503)
        self._rng = random.Random(seed)
        self._drop_task: asyncio.Task[None] | None = None
        self._outage_until = 0.0

    # ---- sockets
    def drop_sockets(self) -> int:
        """Abort every WebSocket TCP connection now (no close frame); their connections stay resumable."""
        return self._ws.drop_all()

    def drop_every(self, seconds: float | None) -> None:
        if self._drop_task is not None:
            self._drop_task.cancel()
            self._drop_task = None
        if seconds:
            self._drop_task = asyncio.get_running_loop().create_task(self._drop_loop(seconds))

    async def _drop_loop(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.drop_sockets()

    def freeze_sockets(self, frozen: bool = True) -> None:
        """Half-open simulation: send nothing (events, replies, pings, pongs) but keep TCP open."""
        self._ws.freeze(frozen)

    def half_open_sockets(self) -> int:
        """The sockets open now go silent for good (TCP kept); new connections work normally."""
        return self._ws.hold_existing()

    async def send_raw_to_bot(self, frame: str | bytes) -> int:
        """Write a raw text frame (maybe malformed) to every live socket of the bot, in queue order."""
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        n = 0
        for s in list(self._ws.sockets):
            if s.conn is not None and s.user is not None and s.user.id == self._bot_id() and not s.dead:
                s.conn.enqueue(Item("raw", text))
                n += 1
        await asyncio.sleep(0)
        return n

    # ---- posts
    def fail_posts(self, n: int, status: int = 500) -> None:
        self._fail_n, self._fail_status = n, status

    def fail_post_ratio(
        self, ratio: float, statuses: tuple[int, ...] = (429, 500, 502, 503), seed: int | None = None
    ) -> None:
        self._ratio, self._ratio_statuses = ratio, tuple(statuses)
        if seed is not None:
            self._rng = random.Random(seed)

    def delay_posts(self, seconds: float) -> None:
        self._posts.post_delay = max(0.0, seconds)

    def rate_limit(
        self, enabled: bool = True, per_sec: float = 10, burst: int = 100, vary_by_user: bool = False
    ) -> None:
        self._rl.enabled = enabled
        self._rl.gcra = Gcra(per_sec, burst) if enabled else None
        self._rl.vary_by_user = vary_by_user

    def rest_outage(self, seconds: float) -> None:
        """For ``seconds``, every REST call (not the WebSocket) answers 503 as a booting server's proxy
        does: a plain-text body, no AppError."""
        self._outage_until = time.monotonic() + max(0.0, seconds)

    def outage_response(self, request: web.Request) -> web.Response | None:
        if time.monotonic() >= self._outage_until or not request.path.startswith("/api/v4/"):
            return None
        if request.path.rstrip("/").endswith("/websocket"):
            return None
        return web.Response(status=503, text="503 Service Unavailable\n", content_type="text/plain")

    def reset(self) -> None:
        self.rest_outage(0)
        self.drop_every(None)
        self.freeze_sockets(False)
        self.fail_posts(0)
        self.fail_post_ratio(0.0)
        self.delay_posts(0)
        self.rate_limit(False)

    def close(self) -> None:
        if self._drop_task is not None:
            self._drop_task.cancel()
            with contextlib.suppress(Exception):
                self._drop_task = None

    def post_fault(self) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
        async def fault(request: web.Request) -> web.StreamResponse | None:
            status = 0
            if self._fail_n > 0:
                self._fail_n -= 1
                status = self._fail_status
            elif self._ratio > 0 and self._rng.random() < self._ratio:
                status = self._rng.choice(self._ratio_statuses)
            if not status:
                return None
            if status == 429:
                return limit_exceeded(
                    {
                        "X-Ratelimit-Limit": "101",
                        "X-Ratelimit-Remaining": "0",
                        "X-Ratelimit-Reset": "1",
                        "Retry-After": "1",
                    }
                )
            err = AppError(status, "devserver.fault.injected", f"Injected failure ({status}).")
            return error_response(err, request_id(request))

        return fault
