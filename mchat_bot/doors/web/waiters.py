"""Where a web-door answer goes: back into a waiting HTTP response, a response_url, a hook, or REST.

The pipeline stays door-independent: the worker pool calls ``send_fn(msg, text)`` as always, and
:class:`DoorDelivery` wraps ``ReplySender.send``. When an HTTP request is still waiting for this
post's answer (an outgoing webhook or slash command inside its budget), the text is handed to it
and the item is acknowledged without a REST post; when the waiter has already given up, the answer
takes the door's late path (``response_url`` for slash commands; REST in the thread, or an incoming
webhook, for outgoing webhooks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from mchat_bot.doors.web.senders import HookError, IncomingWebhookSender, post_hook
from mchat_bot.mattermost.rest import MattermostError, MattermostUnavailable
from mchat_bot.net.http import LazySession
from mchat_bot.pipeline import replies
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.workers import PermanentSendError, ReplySender
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

DOOR_OUTGOING = "outgoing_webhook"
DOOR_SLASH = "slash"
RESPONSE_URL_USES = 5  # Mattermost accepts at most five posts per response_url (section 8)


class Waiters:
    """post id -> the future an HTTP request awaits. Single event loop: no locks needed."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[str]] = {}

    def register(self, post_id: str) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._futures[post_id] = fut
        return fut

    def discard(self, post_id: str) -> None:
        fut = self._futures.pop(post_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def deliver(self, post_id: str, text: str) -> bool:
        """Hand ``text`` to a request still waiting; False when none is (it gave up, or never was)."""
        fut = self._futures.pop(post_id, None)
        if fut is None or fut.done():
            return False
        fut.set_result(text)
        return True

    def __len__(self) -> int:
        return len(self._futures)


async def wait_answer(waiters: Waiters, post_id: str, fut: asyncio.Future[str], budget: float) -> str | None:
    """The answer within ``budget`` seconds, or None (the waiter is withdrawn atomically on timeout)."""
    try:
        async with asyncio.timeout(max(0.0, budget)):
            return await asyncio.shield(fut)
    except TimeoutError:
        if fut.done() and not fut.cancelled():  # delivered in the same loop turn as the timeout
            return fut.result()
        return None
    finally:
        waiters.discard(post_id)


@dataclass(frozen=True, slots=True)
class DoorContext:
    post_id: str
    door: str
    response_url: str
    response_type: str
    uses: int


class DoorContexts:
    """What a late slash answer needs (``response_url``, ``response_type``), kept in SQLite.

    Durable, so an item recovered after a restart still knows where its answer goes.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def save(self, post_id: str, door: str, response_url: str, response_type: str) -> None:
        async with self.storage.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO door_context"
                " (post_id, door, response_url, response_type, uses, created_at) VALUES (?, ?, ?, ?, 0, ?)",
                (post_id, door, response_url, response_type, time.time()),
            )

    async def get(self, post_id: str) -> DoorContext | None:
        row = await self.storage.fetchone(
            "SELECT post_id, door, response_url, response_type, uses FROM door_context WHERE post_id = ?",
            (post_id,),
        )
        if row is None:
            return None
        return DoorContext(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]))

    async def add_uses(self, post_id: str, n: int) -> None:
        async with self.storage.transaction() as db:
            await db.execute("UPDATE door_context SET uses = uses + ? WHERE post_id = ?", (n, post_id))

    async def prune(self, older_than: float = 86400.0) -> None:
        async with self.storage.transaction() as db:
            await db.execute("DELETE FROM door_context WHERE created_at < ?", (time.time() - older_than,))


def working_on_it(lang: str) -> str:
    return "⏳ 답변을 준비하고 있습니다…" if lang == "ko" else "⏳ Working on it…"


class DoorDelivery:
    """The ``handle_fn`` / ``send_fn`` / ``failure_fn`` / ``reconcile_fn`` wrappers for the worker pool."""

    def __init__(
        self,
        sender: ReplySender,
        mappings: Mappings,
        contexts: DoorContexts,
        incoming: IncomingWebhookSender,
        client: LazySession,
        *,
        username: str = "",
        icon_url: str = "",
    ) -> None:
        self.sender = sender
        self.mappings = mappings
        self.contexts = contexts
        self.incoming = incoming
        self.client = client
        self.waiters = Waiters()
        self.username = username
        self.icon_url = icon_url

    def wrap_handle(
        self, handle_fn: Callable[[IncomingMessage], Awaitable[str]]
    ) -> Callable[[IncomingMessage], Awaitable[str]]:
        """Record the channel and user; an inactive channel gets no answer (from any door)."""

        async def handle(msg: IncomingMessage) -> str:
            row = await self.mappings.see(msg)
            if not row.is_active:
                log.info("mappings.inactive_channel", post_id=msg.post_id, mchat_channel_id=msg.channel_id)
                text = ""
            else:
                text = await handle_fn(msg)
            if not text.strip():
                self.waiters.deliver(msg.post_id, "")  # a waiting request answers "nothing" at once
            return text

        return handle

    async def send(self, msg: IncomingMessage, text: str) -> list[str]:
        if self.waiters.deliver(msg.post_id, text):
            log.info("doors.answered_inline", post_id=msg.post_id, door=msg.door)
            return []
        if msg.door == DOOR_SLASH:
            await self._to_response_url(msg, text)
            return []
        if msg.door == DOOR_OUTGOING:
            return await self._outgoing_late(msg, text)
        return await self.sender.send(msg, text)

    async def send_failure(self, msg: IncomingMessage, text: str) -> None:
        if self.waiters.deliver(msg.post_id, text):
            return
        if msg.door == DOOR_SLASH:
            await self._to_response_url(msg, text, ephemeral=True)
        elif msg.door == DOOR_OUTGOING:
            await self._outgoing_late(msg, text, failure=True)
        else:
            await self.sender.send_failure(msg, text)

    async def reconcile(self, msg: IncomingMessage) -> int:
        """Find parts posted before a crash; slash answers have no thread to look in."""
        if msg.door == DOOR_SLASH:
            return 0
        try:
            return await self.sender.reconcile(msg)
        except MattermostError:
            if msg.door == DOOR_OUTGOING:
                return 0  # a channel the bot cannot read: the late answer goes through a hook
            raise

    async def _outgoing_late(self, msg: IncomingMessage, text: str, *, failure: bool = False) -> list[str]:
        """REST into the asker's thread; a channel's own hook URL, or the global one if REST is refused."""
        mapping = await self.mappings.channel(msg.channel_id)
        hook_url = mapping.incoming_webhook_url if mapping is not None else ""
        if not hook_url:
            try:
                if failure:
                    await self.sender.send_failure(msg, text)
                    return []
                return await self.sender.send(msg, text)
            except (MattermostError, MattermostUnavailable) as exc:
                status = getattr(exc, "status", 0)
                if not self.incoming.configured or status not in (0, 401, 403):
                    raise
                log.info("doors.rest_refused_using_hook", post_id=msg.post_id, status=status)
        # Incoming webhooks cannot reply in a thread: name the asker so they are notified.
        body = f"@{msg.user_name} {text}" if msg.user_name else text
        try:
            await self.incoming.send(
                body,
                url=hook_url,
                channel="" if hook_url else msg.channel_name,
                props={"mchat_reply_to": msg.post_id},
            )
        except HookError as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                raise PermanentSendError(str(exc)) from exc
            raise
        return []

    async def _to_response_url(self, msg: IncomingMessage, text: str, *, ephemeral: bool = False) -> None:
        ctx = await self.contexts.get(msg.post_id)
        if ctx is None or not ctx.response_url:
            log.warning("doors.slash_answer_dropped", post_id=msg.post_id, reason="no response_url")
            return
        parts = replies.split_message(text)
        left = RESPONSE_URL_USES - ctx.uses
        if left < 1:
            raise PermanentSendError("response_url used up")
        response_type = "ephemeral" if ephemeral else ctx.response_type
        for i, part in enumerate(parts):
            payload: dict[str, Any] = {"response_type": response_type, "text": part}
            if self.username:
                payload["username"] = self.username
            if self.icon_url:
                payload["icon_url"] = self.icon_url
            # the tries still allowed, keeping one use for each part still to send
            budget = max(1, left - (len(parts) - i - 1))
            try:
                used = await post_hook(self.client, ctx.response_url, payload, max_tries=budget)
            except HookError as exc:
                await self.contexts.add_uses(msg.post_id, budget)
                if exc.status in (0, 429) or exc.status >= 500:
                    raise PermanentSendError(f"response_url kept failing: {exc}") from exc
                raise PermanentSendError(f"response_url refused: {exc}") from exc
            await self.contexts.add_uses(msg.post_id, used)
            left -= used
        log.info("doors.answered_response_url", post_id=msg.post_id, parts=len(parts))
