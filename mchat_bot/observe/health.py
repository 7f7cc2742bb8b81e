"""The operator's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``; webhook request metrics.

``/healthz`` answers from the daemon's own event loop, so an answer proves the loop is alive.
``/readyz`` asks each part with a short timeout: the WebSocket is authenticated, storage answers
a query, the memory store answers ``count()``, the embedding model is loaded; 200 when all do,
503 with the reasons otherwise (the checks themselves: ``readiness``).
"""

from __future__ import annotations

import time

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mchat_bot.observe import metrics
from mchat_bot.observe.readiness import Readiness

log = structlog.get_logger(__name__)


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
