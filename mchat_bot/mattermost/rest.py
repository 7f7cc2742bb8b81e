"""A thin async client for the Mattermost REST API v4 subset the bot uses.

One ``aiohttp.ClientSession`` (made on first use, inside the running loop, as aiohttp requires; a
bounded keep-alive pool) with explicit timeouts, pacing that follows the server
(:class:`mchat_bot.net.pacing.Pacer`: every answer's ``X-RateLimit-*`` is learned, replies go
before courtesy calls, a high safety cap while the server says nothing, an operator's cap if set),
and the one retry policy (:class:`mchat_bot.net.retry.RetryPolicy`) for 429, 5xx and transport
errors; a 429 waits what the server says (``Retry-After``, else ``X-RateLimit-Reset``, both relative
seconds) and holds the other requests as long. Variants (one try, a shorter timeout, a lower
priority) are views of the same client (:meth:`RestClient.variant`), never a second pool or pacer.
What it observes (rate-limit waits, calls dropped for lack of budget) it reports through injected
:class:`RestHooks`: this package imports nothing above the network layer. aiohttp, not httpx:
~0.15 ms instead of ~0.55 ms of event-loop CPU per call, and every mention makes 2-3 calls. Errors
keep the server's AppError ``id`` so callers branch on it, never on the message text.
"""

from __future__ import annotations

import asyncio
import copy
import http
import json as jsonlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from mchat_bot.net.http import LazySession, timeouts
from mchat_bot.net.pacing import Dropped, Pacer, Priority
from mchat_bot.net.retry import HttpStatusError, RetryPolicy, server_wait

__all__ = ["Dropped", "MattermostError", "MattermostUnavailable", "Priority", "RestClient", "RestHooks"]

log = structlog.get_logger(__name__)

MAX_SERVER_WAIT = 60.0  # never sleep longer than this on a server-supplied Retry-After
_JSON_BODY = {"Content-Type": "application/json"}
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _no_wait_hook(source: str, seconds: float) -> None:
    return None


def _no_drop_hook(call: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class RestHooks:
    """Observability injected by the daemon. ``on_wait(source, seconds)``: a rate-limit wait, paced
    to the server's headers (``paced``), by a cap (``cap``) or asked by a 429 (``server``).
    ``on_drop(call)``: a call of a lower priority not sent for lack of budget (``typing``,
    ``reaction``, ``post``, ``edit``, ``other``)."""

    on_wait: Callable[[str, float], None] = _no_wait_hook
    on_drop: Callable[[str], None] = _no_drop_hook


class MattermostError(HttpStatusError):
    """The server answered with an error status; ``error_id`` is the AppError ``id`` ("" if none).
    ``retry_after`` is the wait the server asked for (a 429's Retry-After), else None."""

    def __init__(
        self,
        status: int,
        error_id: str,
        message: str,
        *,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, f"{error_id or 'error'}: {message}", retry_after=retry_after)
        self.error_id = error_id
        self.message = message
        self.request_id = request_id


class MattermostUnavailable(ConnectionError):
    """The server could not be reached (connection refused, timeouts) after the last try."""


def _text(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


class _Answer:
    """A response read to its end (the connection is back in the pool)."""

    __slots__ = ("body", "charset", "headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse, body: bytes) -> None:
        self.status = resp.status
        self.reason = resp.reason or ""
        self.headers: Mapping[str, str] = resp.headers
        self.body = body
        self.charset = resp.charset

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> MattermostError:
        """AppError JSON when present; the rate limiter's plain-text 429 otherwise."""
        error_id, message, request_id = "", "", self.headers.get("x-request-id", "")
        try:
            body = orjson.loads(self.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            error_id = str(body.get("id") or "")
            message = str(body.get("message") or "")
            request_id = str(body.get("request_id") or request_id)
        else:
            message = _text(self.body, self.charset).strip()[:300]
        if not message:
            message = self.reason or _phrase(self.status)
        # a 429 says when the bucket refills (Retry-After, X-RateLimit-Reset); any other status only
        # through Retry-After (X-RateLimit-* ride on every answer while the limiter is on)
        wait = server_wait(self.headers, rate_limited=self.status == 429)
        return MattermostError(self.status, error_id, message, request_id=request_id, retry_after=wait)

    def decoded(self) -> Any:
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)  # the server's JSON is UTF-8: ~4x faster than json
        except ValueError:
            return _text(self.body, self.charset)  # e.g. "ok" from webhooks


def _call_name(method: str, path: str) -> str:
    """A bounded label for a call, for the dropped-calls metric."""
    if path.endswith("/typing"):
        return "typing"
    if path == "/reactions" or "/reactions/" in path:
        return "reaction"
    if path.endswith("/patch"):
        return "edit"
    if method == "POST" and path == "/posts":
        return "post"
    return "other"


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _dumps(value: Any) -> bytes:
    """The JSON body as httpx sent it: compact, UTF-8, no NaN."""
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query pairs: None values dropped, booleans as true/false, sequences as repeated keys."""
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        for item in value if isinstance(value, list | tuple) else (value,):
            pairs.append((key, ("true" if item else "false") if isinstance(item, bool) else str(item)))
    return pairs or None


class RestClient:
    """Mattermost REST v4. Methods return the decoded JSON of the response.

    Safe to build before the event loop runs: the session is made by the first call."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        rate_per_sec: float | None = None,
        safety_rate_per_sec: float = 1000.0,
        max_tries: int = 3,
        backoff_factor: float = 0.5,
        max_backoff: float = 8.0,
        hooks: RestHooks | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.endswith("/api/v4"):
            base += "/api/v4"
        self.base_url = base
        self.hooks = hooks or RestHooks()
        self.policy = RetryPolicy(
            first_delay=backoff_factor,
            max_delay=max_backoff,
            tries=max(1, max_tries),
            max_server_wait=MAX_SERVER_WAIT,
        )
        # rate_per_sec: the operator's cap (None or 0: none); safety_rate_per_sec: while the server
        # sends no rate headers (its limiter off)
        self.limiter = Pacer(
            safety_rate=safety_rate_per_sec, cap_rate=rate_per_sec or None, on_wait=self.hooks.on_wait
        )
        self.priority = Priority.REPLY
        self._root = self  # a variant (see variant()) shares its root's session
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": "mchat-bot",
            "X-Requested-With": "XMLHttpRequest",
        }
        self._timeout = timeouts(timeout)
        self._http_session = LazySession(base, timeout=self._timeout, headers=self._headers)

    @property
    def max_tries(self) -> int:
        return self.policy.tries or 1

    def variant(
        self, *, tries: int | None = None, timeout: float | None = None, priority: Priority | None = None
    ) -> RestClient:
        """This client with other per-call options (e.g. one try, a short timeout and the courtesy
        priority for what may be skipped): the same session, pacer and hooks, never a second pool."""
        other = copy.copy(self)
        if tries is not None:
            other.policy = self.policy.but(tries=max(1, tries))
        if timeout is not None:
            other._timeout = timeouts(timeout)
        if priority is not None:
            other.priority = priority
        return other

    def _http(self) -> aiohttp.ClientSession:
        """The one session (a variant shares its root's), made on first use."""
        return self._http_session.get()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._root is not self:
            return  # a variant: the root owns the session
        await self._http_session.aclose()

    # --- the one request path ------------------------------------------------------------------

    async def _pace(self, method: str, path: str) -> int:
        """This client's turn with the pacer (its ticket); a lower priority may be dropped unsent."""
        try:
            return await self.limiter.acquire(self.priority)
        except Dropped:
            self.hooks.on_drop(_call_name(method, path))
            raise

    def _learn(self, ticket: int, answer: _Answer) -> None:
        """Tell the pacer what the answer said; a 429 holds it for the server's wait (capped as the
        policy caps it), so the other requests do not run into the same wall."""
        self.limiter.observe(ticket, answer.headers, answer.status)
        if answer.status == 429:
            asked = server_wait(answer.headers)
            self.limiter.hold(min(1.0 if asked is None else asked, self.policy.max_server_wait))

    async def _send(
        self, method: str, path: str, body: bytes | None, query: list[tuple[str, str]] | None
    ) -> _Answer:
        """One HTTP exchange, read to the end; transport errors and timeouts propagate."""
        async with self._http().request(
            method,
            self.base_url + path,
            data=body,
            params=query,
            headers=_JSON_BODY if body is not None else None,
            allow_redirects=False,
            proxy=self._http_session.proxy,
            timeout=self._timeout,
        ) as resp:
            return _Answer(resp, await resp.read())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one API call, paced and retried; return decoded JSON (None if empty). A call of a lower
        priority than replies may raise :class:`Dropped` (nothing sent) when the budget is short.

        The body is built once, so a retried ``create_post`` carries the same ``pending_post_id``
        and the server dedupes it (a retry after success returns the same post).
        """
        delays = self.policy.delays()
        body = _dumps(json) if json is not None else None
        query = _query(params)
        attempt = 0
        while True:
            attempt += 1
            ticket = await self._pace(method, path)
            try:
                answer = await self._send(method, path, body, query)
            except aiohttp.InvalidURL:
                raise  # a configuration error, not a flaky network
            except _TRANSPORT_ERRORS as exc:  # connect/read timeouts, refused, reset, disconnected
                if self.policy.gives_up(exc, attempt):
                    raise MattermostUnavailable(
                        f"{method} {path}: {exc.__class__.__name__} after {attempt} tries"
                    ) from exc
                delay = self.policy.wait_after(exc, delays)
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
            self._learn(ticket, answer)
            if answer.ok:
                return answer.decoded()
            error = answer.error()
            if self.policy.gives_up(error, attempt):
                raise error
            delay = self.policy.wait_after(error, delays)
            if error.status == 429:
                self.hooks.on_wait("server", delay)
            log.warning(
                "mattermost.rest.retry",
                method=method,
                path=path,
                status=error.status,
                error_id=error.error_id,
                attempt=attempt,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)

    # --- users, teams, channels ----------------------------------------------------------------

    async def get_me(self) -> dict[str, Any]:
        return await self.request("GET", "/users/me")

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/users/{user_id}")

    async def get_users_by_ids(self, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        return await self.request("POST", "/users/ids", json=list(user_ids))

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/channels/{channel_id}")

    async def get_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        """``user_id``'s membership of the channel: 404 when not a member, 403 when the bot cannot
        read the channel (``GET /channels/{id}/members/{user_id}``)."""
        return await self.request("GET", f"/channels/{channel_id}/members/{user_id}")

    async def get_channel_stats(self, channel_id: str) -> dict[str, Any]:
        """``member_count`` and ``guest_count`` (bots included in the members), read_channel needed."""
        return await self.request("GET", f"/channels/{channel_id}/stats")

    async def create_direct_channel(self, user_a: str, user_b: str) -> dict[str, Any]:
        """The DM channel of two users, created if it does not exist yet (idempotent)."""
        return await self.request("POST", "/channels/direct", json=[user_a, user_b])

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

    async def create_ephemeral_post(
        self, user_id: str, channel_id: str, message: str, *, root_id: str = ""
    ) -> dict[str, Any]:
        """A post only ``user_id`` sees, in their open client, never stored (``POST /posts/ephemeral``).
        Needs create_post_ephemeral, which Mattermost gives only to system admins: a 403 otherwise."""
        post = {"channel_id": channel_id, "message": message, "root_id": root_id}
        return await self.request("POST", "/posts/ephemeral", json={"user_id": user_id, "post": post})

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

    # --- reactions removed, channels by name, joining, files ----------------------

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

    async def upload_file(
        self, channel_id: str, filename: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        """Upload one file to a channel (``POST /files``, multipart); its file info (``id`` to post).
        One try; an unreachable server raises MattermostUnavailable."""
        path = "/files"
        form = aiohttp.FormData()
        form.add_field("channel_id", channel_id)
        form.add_field("files", data, filename=filename, content_type=content_type)
        ticket = await self._pace("POST", path)
        try:
            async with self._http().post(
                self.base_url + path, data=form, allow_redirects=False, proxy=self._http_session.proxy
            ) as resp:
                answer = _Answer(resp, await resp.read())
        except aiohttp.InvalidURL:
            raise
        except _TRANSPORT_ERRORS as exc:
            raise MattermostUnavailable(f"POST {path}: {exc.__class__.__name__}") from exc
        self._learn(ticket, answer)
        if not answer.ok:
            raise answer.error()
        infos = (answer.decoded() or {}).get("file_infos") or []
        if not infos:
            raise MattermostUnavailable(f"POST {path}: no file_infos in the answer")
        return dict(infos[0])

    async def get_file(self, file_id: str, max_bytes: int) -> bytes:
        """A file's content, read as a stream and abandoned past ``max_bytes`` (ValueError).
        One try; an unreachable server raises MattermostUnavailable."""
        path = f"/files/{file_id}"
        ticket = await self._pace("GET", path)
        try:
            async with self._http().get(
                self.base_url + path, allow_redirects=False, proxy=self._http_session.proxy
            ) as resp:
                if not 200 <= resp.status < 300:
                    answer = _Answer(resp, await resp.read())
                    self._learn(ticket, answer)
                    raise answer.error()
                self.limiter.observe(ticket, resp.headers, resp.status)
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > max_bytes:
                        raise ValueError(f"file larger than {max_bytes} bytes")  # closes the connection
                return bytes(data)
        except aiohttp.InvalidURL:
            raise
        except _TRANSPORT_ERRORS as exc:
            raise MattermostUnavailable(f"GET {path}: {exc.__class__.__name__}") from exc
