"""The one writer of replies: parts, their markers, the sent-log, and where each answer goes.

A reply is split into parts; each thread part is posted with ``props`` markers
(``mchat_reply_to``, ``mchat_part``) and a deterministic ``pending_post_id`` (``mchat-<post>-<n>``)
so the server drops a duplicate sent within its 30 s window, and is written to the inbox's
sent-log at once, so a retry or a restart posts only the parts still missing. After a crash the
thread itself is read for our markers (:meth:`ReplyWriter.reconcile`, called only from here).
Streaming creates its parts through :meth:`ReplyWriter.create_part` and the final send edits them.

The destinations, chosen by the message's door: a web request still waiting for this answer
(``pipeline/waiters.py``), a slash command's ``response_url``, an incoming webhook (when REST is
refused for an outgoing webhook's channel, or the channel has its own hook URL), else the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from mchat_bot.mattermost.hooks import HookError, IncomingWebhookSender, post_hook
from mchat_bot.mattermost.rest import MattermostError, MattermostUnavailable
from mchat_bot.observe import metrics
from mchat_bot.pipeline.buttons import Button, ButtonMaker
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.turn import Turn
from mchat_bot.pipeline.waiters import DOOR_OUTGOING, DOOR_SLASH, RESPONSE_URL_USES, DoorContexts, Waiters

log = structlog.get_logger(__name__)

MAX_POST_CHARS = 16383  # Mattermost's limit in code points (runes)
EPHEMERAL_RECHECK_S = (
    600.0  # after a 403 on an ephemeral post, try again this much later (a role may be granted)
)
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")


class PermanentSendError(Exception):
    """Sending can never succeed (e.g. 403: the bot left the channel); do not retry."""


def pending_id(post_id: str, part: int | str) -> str:
    """The server-side dedupe key of one reply part (crash-safety and tests rely on this form)."""
    return f"mchat-{post_id}-{part}"


def markers(post_id: str, part: int) -> dict[str, Any]:
    return {"mchat_reply_to": post_id, "mchat_part": part}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an error carries (REST or hook), None when it has none."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


@dataclass(slots=True)
class Hooks:
    """What the web doors' late answers need: the channel hook URLs, slash contexts, the hook client."""

    mappings: Mappings
    contexts: DoorContexts
    incoming: IncomingWebhookSender
    client: Any  # the hook HTTP client that ``senders.post_hook`` takes
    username: str = ""
    icon_url: str = ""


class ReplyWriter:
    def __init__(
        self,
        server: ChatServer,
        inbox: Inbox,
        *,
        limit: int = MAX_POST_CHARS,
        waiters: Waiters | None = None,
        hooks: Hooks | None = None,
        edit_sent_parts: bool = False,
        bot_user_id: str = "",
        buttons: ButtonMaker | None = None,
    ) -> None:
        self.server = server
        self.buttons = buttons  # None: no action door is reachable, replies go without buttons
        self.bot_user_id = bot_user_id
        self._ephemeral_refused_at = -EPHEMERAL_RECHECK_S  # monotonic time of the last 403
        self.inbox = inbox
        self.limit = limit
        self.waiters = waiters if waiters is not None else Waiters()
        self.hooks = hooks
        # streaming on: parts posted earlier (streamed, or by a crashed attempt) get the final text
        self.edit_sent_parts = edit_sent_parts

    # --- the worker's calls -------------------------------------------------------------------

    async def deliver(self, turn: Turn) -> list[str]:
        """Send the turn's reply where it belongs; returns the thread post ids (none elsewhere)."""
        msg, text = turn.msg, turn.text
        if turn.resent or (turn.stream is not None and turn.stream.ambiguous):
            await self._reconcile_for(msg)  # a send was tried before: it may have landed
        ids = await self._route(turn, text)
        seconds = metrics.observe_reply(msg.door, msg.create_at)
        log.info(
            "replied",
            post_id=msg.post_id,
            door=msg.door,
            mchat_channel_id=msg.channel_id,
            mchat_user_id=msg.user_id,
            latency_ms=round(seconds * 1000, 1),
        )
        return ids

    def nothing(self, turn: Turn) -> None:
        """No reply: a request waiting for one answers "nothing" at once."""
        self.waiters.deliver(turn.msg.post_id, "")

    async def deliver_failure(self, turn: Turn, notice: str) -> None:
        """The short "could not answer" notice, by the same door as an answer."""
        msg = turn.msg
        if self.waiters.deliver(msg.post_id, notice):
            return
        if msg.door == DOOR_SLASH:
            await self._to_response_url(msg, notice, ephemeral=True)
        elif msg.door == DOOR_OUTGOING:
            await self._outgoing_late(msg, notice, failure=True)
        else:
            await self.post_failure(msg, notice)

    async def _route(self, turn: Turn, text: str) -> list[str]:
        msg = turn.msg
        if self.waiters.deliver(msg.post_id, text):
            log.info("doors.answered_inline", post_id=msg.post_id, door=msg.door)
            return []
        if msg.door == DOOR_SLASH:
            await self._to_response_url(msg, text)
            return []
        if msg.door == DOOR_OUTGOING:
            return await self._outgoing_late(msg, text)
        if self.edit_sent_parts:
            await self._finalize(turn, text)
        reply = turn.reply
        if reply is None:
            return await self.post_parts(msg, text)
        return await self.post_parts(msg, text, reply.file_ids, reply.buttons)

    # --- the asker alone ----------------------------------------------------------------------

    async def tell_asker(self, msg: IncomingMessage, text: str, *, dm_note: str = "") -> str:
        """Show ``text`` to the asker alone: an ephemeral post where they asked, else a post in their
        DM with the bot (``dm_note`` added: where they asked). Returns how ("ephemeral", "dm"), or ""
        when neither could be done.

        Mattermost lets only system admins create ephemeral posts over REST; after a 403 this writer
        goes straight to the DM for a while.
        """
        root = msg.thread_root
        if time.monotonic() - self._ephemeral_refused_at >= EPHEMERAL_RECHECK_S:
            try:
                await self.server.create_ephemeral_post(msg.user_id, msg.channel_id, text, root_id=root)
                return "ephemeral"
            except MattermostError as exc:
                if exc.status != 403:
                    log.warning("reply.ephemeral_failed", post_id=msg.post_id, status=exc.status)
                else:
                    self._ephemeral_refused_at = time.monotonic()
                    log.info("reply.ephemeral_not_allowed", hint="give the bot the system admin role")
            except MattermostUnavailable:
                log.warning("reply.ephemeral_failed", post_id=msg.post_id, status=0)
        try:
            dm = await self.server.create_direct_channel(self.bot_user_id, msg.user_id)
            await self.server.create_post(
                str(dm["id"]),
                f"{text}\n\n{dm_note}" if dm_note else text,
                props={"mchat_reply_to": msg.post_id, "mchat_private": True},
                pending_post_id=pending_id(msg.post_id, "private"),
            )
            return "dm"
        except (MattermostError, MattermostUnavailable, KeyError) as exc:
            log.warning("reply.private_failed", post_id=msg.post_id, error=type(exc).__name__)
            return ""

    # --- the thread ---------------------------------------------------------------------------

    async def post_parts(
        self,
        msg: IncomingMessage,
        text: str,
        file_ids: Sequence[str] = (),
        buttons: Sequence[Button] = (),
    ) -> list[str]:
        """Post the missing parts in the asker's thread (the first one carries ``file_ids`` and the
        buttons, when this writer can render them); the reply post ids of all parts, in order."""
        parts = split_message(text, self.limit)
        sent = await self.inbox.sent_parts(msg.post_id)
        ids: list[str] = []
        for i, part in enumerate(parts):
            if i in sent:
                ids.append(sent[i])
                continue
            first = i == 0
            ids.append(
                await self.create_part(
                    msg, i, part, file_ids=file_ids if first else (), buttons=buttons if first else ()
                )
            )
        return ids

    async def create_part(
        self,
        msg: IncomingMessage,
        part: int,
        text: str,
        *,
        via: Any = None,
        file_ids: Sequence[str] = (),
        buttons: Sequence[Button] = (),
    ) -> str:
        """Post one part with its markers and write it to the sent-log; ``via``: another client."""
        server = via if via is not None else self.server
        props = markers(msg.post_id, part)
        if buttons and self.buttons is not None:
            props["attachments"] = self.buttons.attachments(buttons, msg.channel_id)
        post = await server.create_post(
            msg.channel_id,
            text,
            root_id=msg.thread_root,
            props=props,
            pending_post_id=pending_id(msg.post_id, part),
            file_ids=file_ids or None,
        )
        reply_id = str(post.get("id", "")) if isinstance(post, dict) else ""
        await self.inbox.record_sent(msg.post_id, part, reply_id)
        return reply_id

    async def known_parts(self, msg: IncomingMessage) -> dict[int, str]:
        """The parts already posted, the thread checked first (a crashed attempt's part is found)."""
        await self.reconcile(msg)
        return await self.inbox.sent_parts(msg.post_id)

    async def reconcile(self, msg: IncomingMessage) -> int:
        """Record in the sent-log any part already in the thread; returns how many were found.

        The server's ``pending_post_id`` dedupe lasts 30 s and lives in its memory; a crash between
        posting and writing the sent-log, or a timeout on a post that did land, is only found by
        looking at the thread for our marker in ``props``.
        """
        thread = await self.server.get_thread(msg.thread_root)
        known = await self.inbox.sent_parts(msg.post_id)
        found = 0
        for post in thread.get("posts", {}).values():
            props = post.get("props") or {}
            if props.get("mchat_reply_to") != msg.post_id or "mchat_part" not in props:
                continue
            part = int(props["mchat_part"])
            if part not in known and not post.get("delete_at"):
                await self.inbox.record_sent(msg.post_id, part, str(post.get("id", "")))
                found += 1
        if found:
            log.info("replies.found_in_thread", post_id=msg.post_id, parts=found)
        return found

    async def _reconcile_for(self, msg: IncomingMessage) -> None:
        """Slash answers (and any message with no post) have no thread to look in; an outgoing hook's
        channel may be unreadable."""
        if msg.door == DOOR_SLASH or not msg.has_post:
            return
        try:
            await self.reconcile(msg)
        except MattermostError:
            if msg.door != DOOR_OUTGOING:
                raise  # a channel the bot cannot read: the late answer goes through a hook

    async def post_failure(self, msg: IncomingMessage, text: str) -> None:
        """One post, never split, outside the sent-log parts."""
        await self.server.create_post(
            msg.channel_id,
            text[: self.limit],
            root_id=msg.thread_root,
            props={"mchat_reply_to": msg.post_id, "mchat_failure": True},
            pending_post_id=pending_id(msg.post_id, "fail"),
        )

    async def _finalize(self, turn: Turn, text: str) -> None:
        """Parts already posted (streamed, or by an earlier attempt) get their final text."""
        msg, session = turn.msg, turn.stream
        sent = await self.inbox.sent_parts(msg.post_id)
        if not sent:
            return
        parts = split_message(text, self.limit)
        last = session.last_write if session is not None else 0.0
        interval = session.interval if session is not None else 0.0
        for part, reply_id in sorted(sent.items()):
            if part >= len(parts):  # the final answer is shorter than what was streamed
                with contextlib.suppress(Exception):
                    await self.server.delete_post(reply_id)
                continue
            shown = session.shown.get(part) if session is not None else None
            if shown == parts[part]:
                continue
            try:
                if shown is None:
                    current = await self.server.get_post(reply_id)
                    if current.get("message") == parts[part]:
                        continue
                wait = last + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.server.patch_post(reply_id, message=parts[part])
                last = time.monotonic()
            except Exception as exc:
                status = status_of(exc)
                if status is not None and 400 <= status < 500 and status != 429:
                    # gone (deleted by someone) or not ours to edit: nothing to fix there
                    log.warning("stream.final_edit_refused", post_id=msg.post_id, part=part, status=status)
                    continue
                raise
        if session is not None:
            log.info(
                "stream.finished",
                post_id=msg.post_id,
                parts=len(parts),
                writes=session.writes,
                backoffs=session.backoffs,
            )

    # --- the web doors' late answers ----------------------------------------------------------

    async def _outgoing_late(self, msg: IncomingMessage, text: str, *, failure: bool = False) -> list[str]:
        """REST into the asker's thread; a channel's own hook URL, or the global one if REST is refused."""
        hooks = self.hooks
        mapping = await hooks.mappings.channel(msg.channel_id) if hooks is not None else None
        hook_url = mapping.incoming_webhook_url if mapping is not None else ""
        if not hook_url:
            try:
                if failure:
                    await self.post_failure(msg, text)
                    return []
                return await self.post_parts(msg, text)
            except (MattermostError, MattermostUnavailable) as exc:
                status = getattr(exc, "status", 0)
                if hooks is None or not hooks.incoming.configured or status not in (0, 401, 403):
                    raise
                log.info("doors.rest_refused_using_hook", post_id=msg.post_id, status=status)
        assert hooks is not None
        # Incoming webhooks cannot reply in a thread: name the asker so they are notified.
        body = f"@{msg.user_name} {text}" if msg.user_name else text
        try:
            await hooks.incoming.send(
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
        hooks = self.hooks
        ctx = await hooks.contexts.get(msg.post_id) if hooks is not None else None
        if hooks is None or ctx is None or not ctx.response_url:
            log.warning("doors.slash_answer_dropped", post_id=msg.post_id, reason="no response_url")
            return
        parts = split_message(text)
        left = RESPONSE_URL_USES - ctx.uses
        if left < 1:
            raise PermanentSendError("response_url used up")
        response_type = "ephemeral" if ephemeral else ctx.response_type
        for i, part in enumerate(parts):
            payload: dict[str, Any] = {"response_type": response_type, "text": part}
            if hooks.username:
                payload["username"] = hooks.username
            if hooks.icon_url:
                payload["icon_url"] = hooks.icon_url
            # the tries still allowed, keeping one use for each part still to send
            budget = max(1, left - (len(parts) - i - 1))
            try:
                used = await post_hook(hooks.client, ctx.response_url, payload, max_tries=budget)
            except HookError as exc:
                await hooks.contexts.add_uses(msg.post_id, budget)
                if exc.status in (0, 429) or exc.status >= 500:
                    raise PermanentSendError(f"response_url kept failing: {exc}") from exc
                raise PermanentSendError(f"response_url refused: {exc}") from exc
            await hooks.contexts.add_uses(msg.post_id, used)
            left -= used
        log.info("doors.answered_response_url", post_id=msg.post_id, parts=len(parts))


# --- splitting --------------------------------------------------------------------------------


def split_message(text: str, limit: int = MAX_POST_CHARS) -> list[str]:
    """Split into posts of at most ``limit`` code points.

    Breaks at a paragraph (blank line) when one is in the second half of a part, else at a line
    end, else inside a long line (at a space if possible). A code fence cut in two is closed at
    the end of one part and reopened, with its info string, at the start of the next.
    """
    if limit < 32:
        raise ValueError("limit too small")
    if len(text) <= limit:
        return [text]
    lines = text.splitlines(keepends=True)
    parts: list[str] = []
    fence: str | None = None  # the opener line of the fence open at the current position
    i = 0
    while i < len(lines):
        if fence is not None and len(_reopen(fence)) + _close_len(fence) > limit // 4:
            fence = None  # an absurd fence line: give up keeping it balanced rather than loop
        prefix = _reopen(fence)
        body: list[str] = []
        length = len(prefix)
        f = fence
        states: list[str | None] = []
        last_para: int | None = None  # number of body lines up to a blank line outside code
        j = i
        while j < len(lines):
            line = lines[j]
            nf = _fence_after(f, line)
            if nf is not None and len(_reopen(nf)) + _close_len(nf) > limit // 4:
                nf = None
            if length + len(line) + _close_len(nf) > limit:
                break
            body.append(line)
            states.append(nf)
            length += len(line)
            f = nf
            j += 1
            if nf is None and not line.strip():
                last_para = len(body)
        if j == i:
            # one line longer than the room left: cut it
            room = limit - length - _close_len(fence)
            line = lines[i]
            cut = _cut_point(line, room)
            body, states = [line[:cut]], [fence]
            lines[i] = line[cut:]
            f = fence
        elif j < len(lines) and last_para is not None and sum(map(len, body[:last_para])) >= limit // 2:
            body, states = body[:last_para], states[:last_para]
            j = i + last_para
            f = states[-1]
            i = j
        else:
            i = j
        part = prefix + "".join(body)
        if f is not None:
            part = part.rstrip("\n") + "\n" + _marker(f)
        if part.strip():
            parts.append(part.rstrip())
        fence = f
    return parts


def _cut_point(line: str, room: int) -> int:
    room = max(1, room)
    space = line.rfind(" ", room // 2, room)
    return space + 1 if space > 0 else room


def _fence_after(fence: str | None, line: str) -> str | None:
    m = _FENCE.match(line)
    if fence is None:
        return line if m else None
    if m:
        marker = _marker(fence)
        run = m.group(1)
        if run[0] == marker[0] and len(run) >= len(marker) and not line.strip()[len(run) :].strip():
            return None
    return fence


def _marker(opener: str) -> str:
    m = _FENCE.match(opener)
    return m.group(1) if m else "```"


def _reopen(fence: str | None) -> str:
    if fence is None:
        return ""
    marker = _marker(fence)
    info = fence.strip()[len(marker) :].strip()[:40]
    return marker + info + "\n"


def _close_len(fence: str | None) -> int:
    return 0 if fence is None else len(_marker(fence)) + 1
