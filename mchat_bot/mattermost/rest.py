"""A thin async client for the Mattermost REST API v4 subset the bot uses.

One ``httpx.AsyncClient`` with explicit timeouts, a client-side token bucket below the server's
rate limit, and one retry policy (full-jitter exponential backoff from the ``backoff`` package) for
429, 5xx and transport errors. A 429 waits what the server says (``Retry-After``, else
``X-RateLimit-Reset``, both relative seconds). Errors keep the server's AppError ``id`` so callers
branch on it, never on the message text.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import backoff
import httpx
import structlog

from mchat_bot import metrics

__all__ = ["MattermostError", "MattermostUnavailable", "RateLimiter", "RestClient"]

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_SERVER_WAIT = 60.0  # never sleep longer than this on a server-supplied Retry-After


class MattermostError(Exception):
    """The server answered with an error status; ``error_id`` is the AppError ``id`` ("" if none)."""

    def __init__(self, status: int, error_id: str, message: str, *, request_id: str = "") -> None:
        super().__init__(f"{status} {error_id or 'error'}: {message}")
        self.status = status
        self.error_id = error_id
        self.message = message
        self.request_id = request_id


class MattermostUnavailable(Exception):
    """The server could not be reached (connection refused, timeouts) after the last try."""


class RateLimiter:
    """Async token bucket: ``rate_per_sec`` sustained, ``burst`` at once. Waiters queue in order."""

    def __init__(self, rate_per_sec: float, burst: int) -> None:
        if rate_per_sec <= 0 or burst < 1:
            raise ValueError("rate_per_sec must be > 0 and burst >= 1")
        self.rate = rate_per_sec
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: one waiter sleeps for its token at a time
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate
                metrics.observe_wait("client", wait)
                await asyncio.sleep(wait)

    def spare(self) -> float:
        """Tokens free right now, 0 while someone waits: best-effort callers skip rather than queue."""
        if self._lock.locked():
            return 0.0
        return min(self.burst, self._tokens + (time.monotonic() - self._stamp) * self.rate)


def _retry_delays(factor: float, cap: float) -> Generator[float, None, None]:
    gen = backoff.expo(base=2, factor=factor, max_value=cap)
    next(gen)  # backoff's generators yield None first (priming for .send())
    for value in gen:
        yield backoff.full_jitter(value)


def _server_wait(headers: httpx.Headers) -> float | None:
    """Seconds a 429 asks us to wait. httpx.Headers lookups are case-insensitive."""
    for name in ("retry-after", "x-ratelimit-reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value.strip())
        except ValueError:
            continue
        if seconds >= 0:
            return min(seconds, MAX_SERVER_WAIT)
    return None


def _error_from(resp: httpx.Response) -> MattermostError:
    """AppError JSON when present; the rate limiter's plain-text 429 otherwise."""
    error_id, message, request_id = "", "", resp.headers.get("x-request-id", "")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_id = str(body.get("id") or "")
        message = str(body.get("message") or "")
        request_id = str(body.get("request_id") or request_id)
    else:
        message = resp.text.strip()[:300]
    return MattermostError(resp.status_code, error_id, message or resp.reason_phrase, request_id=request_id)


class RestClient:
    """Mattermost REST v4. Methods return the decoded JSON of the response."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        rate_per_sec: float = 10.0,
        burst: int = 10,
        max_tries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_factor: float = 0.5,
        max_backoff: float = 8.0,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.endswith("/api/v4"):
            base += "/api/v4"
        self.base_url = base
        self.max_tries = max(1, max_tries)
        self.backoff_factor = backoff_factor
        self.max_backoff = max_backoff
        self.limiter = RateLimiter(rate_per_sec, burst)
        self._client = httpx.AsyncClient(
            base_url=base,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": "mchat-bot",
                "X-Requested-With": "XMLHttpRequest",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- the one request path ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one API call with rate limiting and retries; return decoded JSON (None if empty).

        The body is built once, so a retried ``create_post`` carries the same ``pending_post_id``
        and the server dedupes it (a retry after success returns the same post).
        """
        delays = _retry_delays(self.backoff_factor, self.max_backoff)
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(1, self.max_tries + 1):
            await self.limiter.acquire()
            last = attempt == self.max_tries
            try:
                resp = await self._client.request(method, path, json=json, params=clean_params or None)
            except httpx.TransportError as exc:  # connect/read/write timeouts, refused, reset
                if last:
                    raise MattermostUnavailable(
                        f"{method} {path}: {exc.__class__.__name__} after {attempt} tries"
                    ) from exc
                delay = next(delays)
                log.warning(
                    "mattermost.rest.retry",
                    method=method,
                    path=path,
                    error=exc.__class__.__name__,
                    attempt=attempt,
                    delay=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            if resp.is_success:
                return self._decode(resp)
            if resp.status_code not in RETRY_STATUSES or last:
                raise _error_from(resp)
            waited = _server_wait(resp.headers) if resp.status_code == 429 else None
            delay = waited if waited is not None else next(delays)
            if resp.status_code == 429:
                metrics.observe_wait("server", delay)
            log.warning(
                "mattermost.rest.retry",
                method=method,
                path=path,
                status=resp.status_code,
                error_id=_error_from(resp).error_id,
                attempt=attempt,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _decode(resp: httpx.Response) -> Any:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text  # e.g. "ok" from webhooks

    # --- users, teams, channels ----------------------------------------------------------------

    async def get_me(self) -> dict[str, Any]:
        return await self.request("GET", "/users/me")

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/users/{user_id}")

    async def get_users_by_ids(self, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        return await self.request("POST", "/users/ids", json=list(user_ids))

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/channels/{channel_id}")

    async def get_my_channels(self, user_id: str) -> list[dict[str, Any]]:
        """All channels of ``user_id`` across teams (``GET /users/{id}/channels``)."""
        return await self.request("GET", f"/users/{user_id}/channels")

    async def get_team(self, team_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/teams/{team_id}")

    # --- posts ---------------------------------------------------------------------------------

    async def create_post(
        self,
        channel_id: str,
        message: str,
        *,
        root_id: str = "",
        props: Mapping[str, Any] | None = None,
        pending_post_id: str | None = None,
        file_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Create a post. A ``pending_post_id`` is always sent (generated if not given) so retries
        are deduplicated by the server for 30 s; pass a deterministic one for crash-safety."""
        body: dict[str, Any] = {
            "channel_id": channel_id,
            "message": message,
            "root_id": root_id,
            "pending_post_id": pending_post_id or uuid.uuid4().hex,
        }
        if props is not None:
            body["props"] = dict(props)
        if file_ids:
            body["file_ids"] = list(file_ids)
        return await self.request("POST", "/posts", json=body)

    async def patch_post(
        self,
        post_id: str,
        *,
        message: str | None = None,
        props: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Edit a post. Note: ``props``, when given, replaces the whole props map (protocol 5.3)."""
        body: dict[str, Any] = {}
        if message is not None:
            body["message"] = message
        if props is not None:
            body["props"] = dict(props)
        return await self.request("PUT", f"/posts/{post_id}/patch", json=body)

    async def delete_post(self, post_id: str) -> Any:
        return await self.request("DELETE", f"/posts/{post_id}")

    async def get_post(self, post_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/posts/{post_id}")

    async def get_thread(self, post_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/posts/{post_id}/thread")

    async def get_channel_posts(
        self,
        channel_id: str,
        *,
        since: int | None = None,
        before: str | None = None,
        after: str | None = None,
        page: int | None = None,
        per_page: int | None = None,
    ) -> dict[str, Any]:
        """A PostList. With ``since`` (ms) it includes edited/deleted rows and hidden edit versions:
        callers skip ``delete_at > 0`` and non-empty ``original_id`` (protocol 5.4)."""
        params = {"since": since, "before": before, "after": after, "page": page, "per_page": per_page}
        return await self.request("GET", f"/channels/{channel_id}/posts", params=params)

    # --- reactions, typing, health -------------------------------------------------------------

    async def add_reaction(self, user_id: str, post_id: str, emoji_name: str) -> dict[str, Any]:
        body = {"user_id": user_id, "post_id": post_id, "emoji_name": emoji_name}
        return await self.request("POST", "/reactions", json=body)

    async def typing(self, user_id: str, channel_id: str, parent_id: str = "") -> Any:
        body = {"channel_id": channel_id, "parent_id": parent_id}
        return await self.request("POST", f"/users/{user_id}/typing", json=body)

    async def ping(self) -> Any:
        return await self.request("GET", "/system/ping")

    # --- issue 7 (user extras): reactions, channels by name, joining, files ----------------------

    async def remove_reaction(self, user_id: str, post_id: str, emoji_name: str) -> Any:
        return await self.request("DELETE", f"/users/{user_id}/posts/{post_id}/reactions/{emoji_name}")

    async def get_team_by_name(self, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/teams/name/{name}")

    async def get_channel_by_name(self, team_id: str, name: str) -> dict[str, Any]:
        return await self.request("GET", f"/teams/{team_id}/channels/name/{name}")

    async def add_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/channels/{channel_id}/members", json={"user_id": user_id})

    async def get_file_info(self, file_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/files/{file_id}/info")

    async def get_file(self, file_id: str, max_bytes: int) -> bytes:
        """A file's content, read as a stream and abandoned past ``max_bytes`` (ValueError)."""
        await self.limiter.acquire()
        async with self._client.stream("GET", f"/files/{file_id}") as resp:
            if not resp.is_success:
                await resp.aread()
                raise _error_from(resp)
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise ValueError(f"file larger than {max_bytes} bytes")
            return bytes(data)
