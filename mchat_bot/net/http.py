"""One HTTP session per remote service, made the same way for each.

aiohttp binds a ``ClientSession`` to the running loop, so it is made on first use, not when the
part that owns it is built. Every session has explicit timeouts and a bounded keep-alive pool,
follows no redirect unless told, reads ``HTTP(S)_PROXY``/``NO_PROXY`` once (aiohttp's
``trust_env`` would look them up on every call, in a thread, and apply ``~/.netrc``, whose Basic
auth would replace a bearer token), and is closed by its owner.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Mapping

import aiohttp
import structlog

__all__ = ["LazySession", "env_proxy", "is_server_hook_url", "timeouts"]

log = structlog.get_logger(__name__)

POOL_SIZE = 100
KEEPALIVE_S = 15.0  # idle connections are closed before any proxy's idle timeout


def timeouts(timeout: float, *, total: bool = True) -> aiohttp.ClientTimeout:
    """connect: waiting for a pooled connection and opening one; sock_connect: the TCP/TLS
    connect; sock_read: the gap between reads; total (unless the caller bounds each try itself)."""
    return aiohttp.ClientTimeout(
        total=2 * timeout if total else None,
        connect=timeout,
        sock_connect=min(timeout, 5.0),
        sock_read=timeout,
    )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def permalink(server_url: str, post_id: str) -> str:
    """The server's link to a post, for any of its teams (Mattermost redirects to the right one)."""
    return f"{server_url.rstrip('/')}/_redirect/pl/{post_id}"


def is_server_hook_url(url: str, server_url: str) -> bool:
    """``url`` has the scheme, host and port of ``server_url`` and a ``/hooks/`` path under it:
    the only URLs the bot posts to that it did not build itself (no SSRF through a request)."""
    try:
        got, own = urllib.parse.urlsplit(url), urllib.parse.urlsplit(server_url)
        same_origin = got.scheme in _DEFAULT_PORTS and (got.scheme, got.hostname, _port(got)) == (
            own.scheme,
            own.hostname,
            _port(own),
        )
    except ValueError:  # a port that is not a number
        return False
    base = own.path.rstrip("/")
    return same_origin and got.path.startswith(base + "/hooks/") and not got.username and ".." not in got.path


def _port(parts: urllib.parse.SplitResult) -> int | None:
    return parts.port or _DEFAULT_PORTS.get(parts.scheme)


def env_proxy(url: str) -> str | None:
    """The HTTP(S)_PROXY/ALL_PROXY for ``url`` unless NO_PROXY exempts it."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not proxy.startswith(("http://", "https://")):
        log.warning("net.proxy_ignored", scheme=proxy.partition(":")[0])
        return None
    return proxy or None


class LazySession:
    """The session of one remote service (``base_url``): made by the first call, closed by
    :meth:`aclose`, after which a call is a ``RuntimeError``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: aiohttp.ClientTimeout,
        headers: Mapping[str, str] | None = None,
        pool: int = POOL_SIZE,
        keepalive: float = KEEPALIVE_S,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._pool = pool
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.proxy: str | None = None

    def get(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            if self._closed:
                host = urllib.parse.urlsplit(self.base_url).netloc
                raise RuntimeError(f"the HTTP session for {host} is closed")
            self.proxy = env_proxy(self.base_url)
            session = self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=self._pool, keepalive_timeout=self._keepalive),
                trust_env=False,  # the proxy is resolved once above; ~/.netrc is never applied
            )
        return session

    @property
    def open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
