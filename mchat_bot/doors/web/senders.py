"""Posting through Mattermost's hook URLs: incoming webhooks and slash commands' ``response_url``.

Both take a JSON body and answer ``ok``; both are retried on 429, 5xx and transport errors with
full-jitter backoff (a 429 waits what the server says). A ``response_url`` allows five uses in
30 minutes, so the caller passes how many tries it may spend. The URL carries the hook's secret,
so it is never logged: logs name only the host.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import backoff
import httpx
import structlog

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_SERVER_WAIT = 30.0


class HookError(Exception):
    """The hook refused the post (a 4xx other than 429) or kept failing; ``status`` 0 = no answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _host(url: str) -> str:
    return urlsplit(url).netloc


def _wait_of(resp: httpx.Response) -> float | None:
    for name in ("retry-after", "x-ratelimit-reset"):
        try:
            return min(max(0.0, float(resp.headers[name])), MAX_SERVER_WAIT)
        except (KeyError, ValueError):
            continue
    return None


async def post_hook(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    max_tries: int = 4,
    backoff_factor: float = 0.5,
    max_backoff: float = 8.0,
) -> int:
    """POST ``payload`` as JSON to a hook URL; returns how many requests were sent (each one a "use")."""
    delays = backoff.expo(base=2, factor=backoff_factor, max_value=max_backoff)
    next(delays)
    sent = 0
    for attempt in range(1, max(1, max_tries) + 1):
        last = attempt >= max_tries
        try:
            sent += 1
            resp = await client.post(url, json=payload)
        except httpx.TransportError as exc:
            if last:
                raise HookError(0, type(exc).__name__) from exc
            delay = backoff.full_jitter(next(delays))
            log.warning("hook.retry", host=_host(url), error=type(exc).__name__, delay=round(delay, 2))
            await asyncio.sleep(delay)
            continue
        if resp.is_success:
            return sent
        if resp.status_code not in RETRY_STATUSES or last:
            raise HookError(resp.status_code, resp.text[:200])
        waited = _wait_of(resp) if resp.status_code == 429 else None
        delay = waited if waited is not None else backoff.full_jitter(next(delays))
        log.warning("hook.retry", host=_host(url), status=resp.status_code, delay=round(delay, 2))
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class IncomingWebhookSender:
    """Posts through an incoming webhook: ``webhooks.incoming_url`` or a channel's own URL."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        default_url: str = "",
        *,
        username: str = "",
        icon_url: str = "",
        max_tries: int = 4,
    ) -> None:
        self.client = client
        self.default_url = default_url
        self.username = username
        self.icon_url = icon_url
        self.max_tries = max_tries

    @property
    def configured(self) -> bool:
        return bool(self.default_url)

    async def send(
        self,
        text: str,
        *,
        url: str = "",
        channel: str = "",
        props: dict[str, Any] | None = None,
    ) -> None:
        """Post ``text``; ``channel`` (a name, or ``@username``) overrides the hook's channel if allowed."""
        target = url or self.default_url
        if not target:
            raise HookError(0, "no incoming webhook URL configured")
        payload: dict[str, Any] = {"text": text}
        if channel:
            payload["channel"] = channel
        if self.username:
            payload["username"] = self.username
        if self.icon_url:
            payload["icon_url"] = self.icon_url
        if props:
            payload["props"] = props
        await post_hook(self.client, target, payload, max_tries=self.max_tries)
        log.info("incoming_webhook.posted", host=_host(target), chars=len(text))
