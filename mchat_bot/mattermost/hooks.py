"""Posting through Mattermost's hook URLs: incoming webhooks and slash commands' ``response_url``.

Both take a JSON body and answer ``ok``; both are retried on 429, 5xx and transport errors by the one
retry policy (a 429 waits what the server says). A ``response_url`` allows five uses in 30 minutes,
so the caller passes how many tries it may spend. The URL carries the hook's secret, so it is never
logged: logs name only the host. Both go over the one session for the Mattermost server's hooks.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import structlog

from mchat_bot.net.http import LazySession, is_server_hook_url, timeouts
from mchat_bot.net.retry import TRANSPORT_ERRORS, HttpStatusError, RetryPolicy, server_wait

log = structlog.get_logger(__name__)

HOOK_TIMEOUT = 10.0
HOOK_POLICY = RetryPolicy(first_delay=0.5, max_delay=8.0, tries=4, max_server_wait=30.0)


class HookError(HttpStatusError):
    """The hook refused the post (a 4xx other than 429) or kept failing; ``status`` 0 = no answer."""


def _host(url: str) -> str:
    return urlsplit(url).netloc


def hook_session(server_url: str) -> LazySession:
    """The session for the server's hook URLs (incoming webhooks, response_url)."""
    return LazySession(server_url, timeout=timeouts(HOOK_TIMEOUT), pool=20)


async def post_hook(
    session: LazySession,
    url: str,
    payload: dict[str, Any],
    *,
    max_tries: int = 4,
    policy: RetryPolicy = HOOK_POLICY,
) -> int:
    """POST ``payload`` as JSON to a hook URL; returns how many requests were sent (each one a "use").

    Only a ``/hooks/`` URL on the session's server (its scheme, host and port) is ever called: a
    URL that a request or a table row handed us and that points anywhere else is refused unsent."""
    if not is_server_hook_url(url, session.base_url):
        log.warning("hook.refused_target", host=_host(url)[:100])
        raise HookError(400, "not a hook URL of the Mattermost server")
    policy = policy.but(tries=max(1, max_tries))
    delays = policy.delays()
    body = json.dumps(payload, ensure_ascii=False).encode()
    sent = 0
    while True:
        sent += 1
        try:
            async with session.get().post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,  # a redirect could lead anywhere: the target is the server's own
                proxy=session.proxy,
            ) as resp:
                text = (await resp.read()).decode("utf-8", errors="replace")
                if 200 <= resp.status < 300:
                    return sent
                wait = server_wait(resp.headers, rate_limited=resp.status == 429)
                error = HookError(resp.status, text[:200], retry_after=wait)
        except TRANSPORT_ERRORS as exc:
            error = HookError(0, type(exc).__name__)
            error.__cause__ = exc
            if policy.gives_up(exc, sent):
                raise error from exc
            delay = policy.wait_after(exc, delays)
            log.warning("hook.retry", host=_host(url), error=type(exc).__name__, delay=round(delay, 2))
            await asyncio.sleep(delay)
            continue
        if policy.gives_up(error, sent):
            raise error
        delay = policy.wait_after(error, delays)
        log.warning("hook.retry", host=_host(url), status=error.status, delay=round(delay, 2))
        await asyncio.sleep(delay)


class IncomingWebhookSender:
    """Posts through an incoming webhook: ``webhooks.incoming_url`` or a channel's own URL."""

    def __init__(
        self,
        session: LazySession,
        default_url: str = "",
        *,
        username: str = "",
        icon_url: str = "",
        max_tries: int = 4,
    ) -> None:
        self.session = session
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
        await post_hook(self.session, target, payload, max_tries=self.max_tries)
        log.info("incoming_webhook.posted", host=_host(target), chars=len(text))
