"""The operator's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``; webhook request metrics.

``/healthz`` answers from the daemon's own event loop, so an answer proves the loop is alive.
``/readyz`` asks each part with a short timeout: the WebSocket is authenticated, storage answers
a query, the memory store answers ``count()``; 200 when all do, 503 with the reasons otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mchat_bot.observe import metrics

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 2.0
Check = Callable[[], Awaitable[str | None]]  # None = fine, else the reason it is not


@dataclass(slots=True)
class Readiness:
    """The parts /readyz asks; filled in by the daemon as it builds them (absent = not ready)."""

    checks: dict[str, Check] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    timeout: float = CHECK_TIMEOUT

    async def report(self) -> tuple[bool, dict[str, Any]]:
        names = ("socket", "storage", "memory")
        results = await asyncio.gather(*(self._run(n) for n in names))
        checks = {
            n: ({"ok": True} if r is None else {"ok": False, "reason": r})
            for n, r in zip(names, results, strict=True)
        }
        ready = all(r is None for r in results)
        return ready, {"ready": ready, "checks": checks}

    async def _run(self, name: str) -> str | None:
        check = self.checks.get(name)
        if check is None:
            return "starting"
        try:
            async with asyncio.timeout(self.timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc)[:200]}"


def socket_check(authenticated: asyncio.Event) -> Check:
    async def check() -> str | None:
        return None if authenticated.is_set() else "websocket not connected/authenticated"

    return check


def storage_check(storage: Any) -> Check:
    async def check() -> str | None:
        row = await storage.fetchone("SELECT 1")
        return None if row is not None and row[0] == 1 else "storage gave no answer"

    return check


def memory_check(store: Any) -> Check:
    async def check() -> str | None:
        await store.count()
        return None

    return check


def ops_router(readiness: Readiness) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", include_in_schema=False)
    async def get_metrics() -> Response:
        return Response(await metrics.scrape(), media_type=metrics.CONTENT_TYPE)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"alive": True, "uptime_s": round(time.time() - readiness.started_at, 1)})

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, body = await readiness.report()
        return JSONResponse(body, status_code=200 if ready else 503)

    return router


_DOORS = {"/mattermost/outgoing": "outgoing_webhook", "/mattermost/slash": "slash"}
_REASONS = {401: "unauthorized", 403: "forbidden", 413: "too_large", 415: "bad_content_type"}


class WebhookMetrics:
    """ASGI middleware: request count, latency and errors of the Mattermost endpoints only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = _DOORS.get(scope.get("path", "").rstrip("/")) if scope["type"] == "http" else None
        if door is None:
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.monotonic()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.WEBHOOK_LATENCY.labels(door=door).observe(time.monotonic() - started)
            metrics.WEBHOOK_REQUESTS.labels(door=door, status=str(status)).inc()
            if status >= 400:
                reason = _REASONS.get(status) or ("server_error" if status >= 500 else "bad_request")
                metrics.WEBHOOK_ERRORS.labels(door=door, reason=reason).inc()


def install(app: FastAPI, readiness: Readiness) -> None:
    """Add the operator endpoints and the webhook metrics to the daemon's FastAPI app."""
    app.include_router(ops_router(readiness))
    app.add_middleware(WebhookMetrics)
