"""The daemon's HTTP server: a FastAPI app run by uvicorn inside the daemon's own event loop.

uvicorn's ``Server.serve`` would replace the daemon's SIGTERM/SIGINT handlers, so a subclass turns
that off; the socket is bound by us first, so a busy port is an error at start-up (not a
``sys.exit`` inside a task). Stopping sets ``should_exit`` and lets requests in flight finish
(a webhook may still be waiting for its answer) within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Sequence

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mchat_bot import __version__
from mchat_bot.config import Settings
from mchat_bot.doors.web.claims import ClaimChecker
from mchat_bot.doors.web.guard import PathAllowlist, guarded_protocol, networks
from mchat_bot.doors.web.webhooks import WebhookEndpoints
from mchat_bot.mattermost.hooks import IncomingWebhookSender, hook_session
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.replying import Hooks
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.pipeline.waiters import DoorContexts, Waiters
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)


def create_app(
    endpoints: WebhookEndpoints,
    routers: Sequence[object] = (),
    *,
    allow_from: Sequence[str] = (),
    allow_from_metrics: Sequence[str] = (),
) -> FastAPI:
    """The ASGI app: the Mattermost endpoints (+ any extra routers, e.g. metrics) and /openapi.json,
    behind the per-path allowlists (``allow_from`` for the webhook paths, ``allow_from_metrics``,
    else ``allow_from``, for the others)."""
    app = FastAPI(
        title="mchat-bot",
        version=__version__,
        description="Mattermost outgoing webhooks and custom slash commands for the memory bot.",
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(endpoints.router())
    for router in routers:
        app.include_router(router)  # type: ignore[arg-type]

    app.add_middleware(
        PathAllowlist,
        webhooks=networks(allow_from),
        operators=networks(allow_from_metrics or allow_from),
    )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # a bug, never bad input
        log.error("http.unexpected", path=request.url.path, error=type(exc).__name__, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


class _QuietServer(uvicorn.Server):
    """Leaves signal handling to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HttpServer:
    """uvicorn on ``listen`` (host:port; port 0 picks a free one, see :attr:`port`)."""

    def __init__(
        self,
        app: FastAPI,
        listen: str,
        *,
        grace: float = 10.0,
        accept_from: Sequence[str] = (),
        header_timeout: float = 10.0,
        max_connections: int = 512,
    ) -> None:
        self.app = app
        self.host, self.port = split_listen(listen)
        self.grace = grace
        self.protocol = guarded_protocol(accept_from=networks(accept_from), header_timeout=header_timeout)
        self.max_connections = max_connections
        self._sock: socket.socket | None = None
        self.server: uvicorn.Server | None = None

    def bind(self) -> None:
        """Bind now (at start-up) so a busy or wrong address fails the daemon with a clear error."""
        if self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)  # a request made before the server runs waits for it, not refused
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._sock = sock

    async def run(self) -> None:
        """Serve until cancelled; cancelling stops gracefully (in-flight requests get ``grace`` s)."""
        self.bind()
        sock, self._sock = self._sock, None
        assert sock is not None
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,  # the slash GET variant would carry the token in the query string
            lifespan="off",
            proxy_headers=False,  # http.allow_from must see the real peer, not X-Forwarded-For
            server_header=False,
            timeout_graceful_shutdown=int(self.grace) or 1,
            http=self.protocol,  # accept-time allowlist and the request-head deadline
            limit_concurrency=self.max_connections,  # past it: 503 at once, never a queue of sockets
            timeout_keep_alive=5,
        )
        server = _QuietServer(config)
        self.server = server
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        log.info("http.listening", host=self.host, port=self.port)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, self.grace + 2.0)
            raise
        finally:
            with contextlib.suppress(OSError):
                sock.close()


class WebDoors:
    """The HTTP doors, built in one place for ``mchat_bot.app.parts``.

    ``waiters`` and ``hooks`` go to the reply writer (the waiting requests, and what late answers
    need); ``enabled`` says whether an HTTP door is configured, and ``run`` serves it.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        inbox: Inbox,
        rest: RestClient,
        bot: BotIdentity,
    ) -> None:
        w = settings.webhooks
        self.client = hook_session(settings.mattermost.url)
        self.mappings = Mappings(storage)
        self.contexts = DoorContexts(storage)
        self.incoming = IncomingWebhookSender(
            self.client, w.incoming_url.get(), username=w.username, icon_url=w.icon_url
        )
        self.waiters = Waiters()
        self.hooks = Hooks(
            self.mappings,
            self.contexts,
            self.incoming,
            self.client,
            username=w.username,
            icon_url=w.icon_url,
        )
        self.endpoints = WebhookEndpoints(
            bot=bot,
            inbox=inbox,
            claims=ClaimChecker(rest),
            storage=storage,
            server_url=settings.mattermost.url,
            mappings=self.mappings,
            contexts=self.contexts,
            waiters=self.waiters,
            outgoing_tokens=[t.get() for t in w.outgoing_tokens],
            slash_tokens=[t.get() for t in w.slash_tokens],
            budget=w.response_budget,
            max_body_bytes=settings.http.max_body_bytes,
            username=w.username,
            icon_url=w.icon_url,
        )
        self.enabled = bool(w.outgoing_tokens or w.slash_tokens)
        h = settings.http
        operators = h.allow_from_metrics or h.allow_from
        app = create_app(self.endpoints, allow_from=h.allow_from, allow_from_metrics=h.allow_from_metrics)
        self.server = HttpServer(
            app,
            h.listen,
            grace=w.response_budget + 1,
            # a connection must be wanted by one of the lists; an empty list lets everyone in
            accept_from=[*h.allow_from, *operators] if h.allow_from and operators else (),
            header_timeout=h.header_timeout,
            max_connections=h.max_connections,
        )

    def install(self, router: object) -> None:
        """Routes made after the doors (the buttons' door needs the handlers)."""
        self.server.app.include_router(router)  # type: ignore[arg-type]

    def bind(self) -> None:
        self.server.bind()

    async def run(self) -> None:
        await self.contexts.prune()
        await self.server.run()

    async def aclose(self) -> None:
        await self.client.aclose()
