"""DevServer: wires store, hub, REST, WebSocket, rate limiter and faults into one aiohttp app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from mchat_bot.devserver.actions import ActionsApi
from mchat_bot.devserver.control import control_routes
from mchat_bot.devserver.errors import AppError, error_response, request_id
from mchat_bot.devserver.extras import ExtrasApi
from mchat_bot.devserver.faults import Faults, RateLimitState, limit_exceeded
from mchat_bot.devserver.hub import Hub
from mchat_bot.devserver.integrations import Integrations
from mchat_bot.devserver.posts import PostService
from mchat_bot.devserver.rest import RestApi, parse_token
from mchat_bot.devserver.seed import Seed, build_seed
from mchat_bot.devserver.state import VERSION_ID, Store
from mchat_bot.devserver.ws import WsConfig, WsEndpoint, WsState

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


RATELIMIT_HEADERS = web.RequestKey("ratelimit_headers", dict)


class DevServer:
    """A small faithful Mattermost on 127.0.0.1 for tests and the demo.

    `async with DevServer() as dev:` starts it; see `dev.seed`, `dev.faults`, `dev.user_post`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_token: str | None = None,
        ws_ping_interval: float = 60.0,
        *,
        user_tokens: dict[str, str] | None = None,
        pong_wait: float | None = None,
        auth_timeout: float = 5.0,
        resume_window: float = 300.0,
        fault_seed: int = 0,
    ) -> None:
        self.host, self.port = host, port
        self.store = Store()
        self.seed: Seed = build_seed(self.store, bot_token, user_tokens)
        self.hub = Hub(resume_window=resume_window)
        self.posts = PostService(self.store, self.hub)
        wait = pong_wait if pong_wait is not None else max(ws_ping_interval * 100 / 60, ws_ping_interval + 1)
        self.ws_state = WsState(
            WsConfig(ping_interval=ws_ping_interval, pong_wait=wait, auth_timeout=auth_timeout)
        )
        self.ratelimit = RateLimitState()
        self.faults = Faults(
            self.ws_state, self.hub, self.posts, self.ratelimit, lambda: self.seed.bot.id, fault_seed
        )
        self.rest = RestApi(self.store, self.hub, self.posts)
        self.rest.post_fault = self.faults.post_fault()
        self.integrations = Integrations(self.store, self.hub, self.posts, self.rest, lambda: self.url)
        self.extras = ExtrasApi(self.store, self.hub, self.rest)  # files, leaving channels
        self.actions = ActionsApi(self.store, self.rest.posts, self.rest)  # interactive buttons
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None

    # ---- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def post_timestamps(self) -> dict[str, float]:
        return self.posts.post_timestamps

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._ratelimit_mw, self._errors_mw], client_max_size=64 * 2**20)
        app.on_response_prepare.append(self._add_headers)
        ws = WsEndpoint(self.store, self.hub, self.posts, self.ws_state, self.rest.optional_user)
        app.add_routes(
            [
                web.get("/api/v4/websocket", ws.handle),
                web.get("/api/v4/websocket/", ws.handle),
                *self.rest.routes(),
                *self.integrations.routes(),
                *self.extras.routes(),
                *self.actions.routes(),
            ]
        )
        app.add_routes(control_routes(self))
        return app

    async def start(self) -> DevServer:
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._reaper = asyncio.create_task(self._reap_loop())
        log.info("devserver.started", url=self.url)
        return self

    async def stop(self) -> None:
        self.faults.close()
        await self.integrations.close()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        self.ws_state.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DevServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _reap_loop(self) -> None:
        period = max(0.5, min(60.0, self.hub.resume_window / 2))
        while True:
            await asyncio.sleep(period)
            self.hub.reap()

    async def restart(self, lose_replay: bool = True) -> None:
        """Like a server restart: every socket dropped; with lose_replay no connection can be resumed."""
        self.ws_state.drop_all()
        if lose_replay:
            self.hub.clear()
        self.posts.pending.clear()
        await asyncio.sleep(0.05)

    # ---- Python API
    async def user_post(
        self,
        username: str,
        channel_id: str,
        message: str,
        root_id: str = "",
        props: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Post as a seeded user through the same path as POST /posts (emits `posted`)."""
        user = self.store.user_by_name(username)
        if user is None:
            raise KeyError(username)
        body: dict[str, Any] = {"channel_id": channel_id, "message": message, "root_id": root_id}
        if props:
            body["props"] = props
        return await self.posts.create(user, body)

    async def wait_for_posts(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait until `count` visible posts match (current versions, so edits count), else TimeoutError."""
        end = time.monotonic() + timeout
        while True:
            found = self.posts.find(predicate)
            if len(found) >= count:
                return found[:count]
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"wait_for_posts: {len(found)} of {count} matching posts after {timeout:g} s"
                )
            await self.posts.changed(left)

    def posts_by(self, user_id: str) -> list[dict[str, Any]]:
        return self.posts.find(lambda p: p["user_id"] == user_id)

    def thread(self, root_id: str) -> list[dict[str, Any]]:
        return self.posts.find(lambda p: p["id"] == root_id or p["root_id"] == root_id)

    # ---- middleware
    @web.middleware
    async def _errors_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id(request)
        try:
            return await handler(request)
        except AppError as e:
            return error_response(e, rid)
        except web.HTTPNotFound:
            if request.path.startswith("/api/v4/"):
                return error_response(
                    AppError(404, "api.context.404.app_error", "Sorry, we could not find the page."), rid
                )
            raise
        except web.HTTPMethodNotAllowed:
            if request.path.startswith("/api/v4/"):
                return error_response(AppError(405, "api.context.405.app_error", "Method not allowed."), rid)
            raise

    @web.middleware
    async def _ratelimit_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id(request)
        down = self.faults.outage_response(request)
        if down is not None:
            return down
        rl = self.ratelimit
        if rl.enabled and rl.gcra is not None and request.path.startswith(("/api/v4/", "/hooks/")):
            key = request.remote or ""
            if rl.vary_by_user:
                key = parse_token(request)[0] or key
            verdict = rl.gcra.check(key)
            if verdict.limited:
                return limit_exceeded(verdict.headers())
            request[RATELIMIT_HEADERS] = verdict.headers()
        return await handler(request)

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Request-Id"] = request_id(request)
        response.headers["X-Version-Id"] = VERSION_ID
        for k, v in (request.get(RATELIMIT_HEADERS) or {}).items():
            response.headers.add(k, v)
