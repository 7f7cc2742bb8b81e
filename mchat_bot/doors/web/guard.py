"""The HTTP server's first line: who may connect, how long a request head may take, which paths
each caller may reach.

uvicorn reads a request head for as long as the client cares to send it, and checks nothing about
the peer before the app runs. A few hundred half-sent requests then hold the daemon's sockets for
minutes. Here, a connection from outside every allowlist is closed as it is accepted, a request head
that is not complete within ``header_timeout`` seconds (also the next one on a kept-alive
connection) closes the connection, and the webhook paths and the operator paths (``/metrics``,
``/openapi.json``, health) each have their own allowlist.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Any

import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mchat_bot.observe.logging import QuietCounter

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

WEBHOOK_PREFIXES = ("/mattermost/", "/mchat/")


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """Settings are validated at load time, so every entry parses here."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def allowed(host: str | None, nets: Sequence[Network]) -> bool:
    """No list means everyone; otherwise the peer's address must be in one of the networks."""
    if not nets:
        return True
    try:
        addr = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in nets)


def guarded_protocol(*, accept_from: Sequence[Network], header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the accept-time allowlist and the request-head deadline."""
    refused = QuietCounter()
    slow = QuietCounter()

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            host = peer[0] if isinstance(peer, tuple) and peer else None
            if not allowed(host, accept_from):
                transport.abort()  # before a byte is read: nothing to parse, nothing to answer
                n = refused.due()
                if n:
                    log.warning("http.connection_refused", client=host, count=n)
                return
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request head on a kept-alive connection has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if getattr(self, "transport", None) is None:  # refused at accept: uvicorn never saw it
                return
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            self._armed_for = self.cycle
            self._deadline = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_for and not self.transport.is_closing():  # no new request head
                n = slow.due()
                if n:
                    log.warning("http.request_head_timeout", timeout_s=header_timeout, count=n)
                self.transport.abort()

    return GuardedH11Protocol


class PathAllowlist:
    """ASGI middleware: webhook paths need ``webhooks``; every other path needs ``operators``."""

    def __init__(self, app: ASGIApp, *, webhooks: Sequence[Network], operators: Sequence[Network]) -> None:
        self.app = app
        self.webhooks = tuple(webhooks)
        self.operators = tuple(operators)
        self._refused = QuietCounter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = str(scope.get("path", ""))
            nets = self.webhooks if path.startswith(WEBHOOK_PREFIXES) else self.operators
            client = scope.get("client")
            host = client[0] if client else None
            if not allowed(host, nets):
                n = self._refused.due()
                if n:
                    log.warning("http.forbidden", client=host, path=path[:100], count=n)
                what = "http.allow_from" if nets is self.webhooks else "http.allow_from_metrics"
                await JSONResponse({"detail": f"caller not allowed ({what})"}, status_code=403)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)
