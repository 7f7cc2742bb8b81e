"""Long LLM answers appear progressively, by editing the bot's reply post while the model writes.

Exactly-once stays with the existing design (``workers.ReplySender``): a streamed part is created
with the same ``pending_post_id`` and ``props`` markers as a normal part (``mchat_reply_to``,
``mchat_part``) and written to the sent-log at once, so the final send, a retry or a restart only
edits those parts and posts the missing ones. Edits send ``message`` only (a PATCH with ``props``
would replace the markers). At most one write every ``interval`` seconds per reply, measured from
the end of the previous one; a 429 doubles the interval. The last edit, made when the handler
returns, carries the complete answer with its sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol

import structlog

from mchat_bot.pipeline import replies
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.workers import PostCreator

log = structlog.get_logger(__name__)

MARKER = " ▍"  # shown at the end while the answer is still being written
MAX_INTERVAL = 8.0
# Only the answer prompt is streamed (handlers.build_prompt); any other LLM call a handler makes
# (extraction, supersession decisions) is not meant for the thread.
ANSWER_PROMPT_MARK = "Answer the user's question using the memories below"

CURRENT: ContextVar[IncomingMessage | None] = ContextVar("mchat_current_message", default=None)


class StreamingPoster(PostCreator, Protocol):
    """``RestClient`` with one try (a 429 must reach us, not be waited out inside the client)."""

    async def patch_post(self, post_id: str, *, message: str | None = None) -> dict[str, Any]: ...


class FinalPoster(Protocol):
    """``RestClient`` with its retries, for the final edits."""

    async def patch_post(self, post_id: str, *, message: str | None = None) -> dict[str, Any]: ...
    async def get_post(self, post_id: str) -> dict[str, Any]: ...
    async def delete_post(self, post_id: str) -> Any: ...


class Reconciler(Protocol):
    async def reconcile(self, msg: IncomingMessage) -> int: ...


class StreamingCompleter(Protocol):
    async def complete(self, messages: list[dict[str, str]]) -> str: ...
    async def complete_streaming(
        self, messages: list[dict[str, str]], on_text: Callable[[str], None]
    ) -> str: ...


def is_answer_prompt(messages: list[dict[str, str]]) -> bool:
    return any(
        m.get("role") == "system" and ANSWER_PROMPT_MARK in str(m.get("content", "")) for m in messages
    )


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


class StreamSession:
    """One reply being streamed: the text so far, the parts posted, what each shows."""

    def __init__(self, msg: IncomingMessage, streams: Streams) -> None:
        self.msg = msg
        self.streams = streams
        self.text = ""
        self.interval = streams.interval
        self.ids: dict[int, str] = {}  # part -> reply post id
        self.shown: dict[int, str | None] = {}  # part -> text it shows (None = unknown)
        self.last_write = 0.0  # monotonic end of the last write
        self.ambiguous = False  # a create may have landed unseen: reconcile before the final send
        self.writes = 0
        self.backoffs = 0
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"stream-{msg.post_id}")

    def feed(self, text: str) -> None:
        """The model's text so far (called for every chunk; cheap)."""
        self.text = text
        self._changed.set()

    async def stop(self) -> None:
        """No more text: stop editing after the write in flight (the final edit is the sender's)."""
        self._stopped.set()
        self._changed.set()
        with contextlib.suppress(Exception):
            await self._task

    def cancel(self) -> None:
        self._stopped.set()
        self._task.cancel()

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()
        return not self._stopped.is_set()

    async def _run(self) -> None:
        s = self.streams
        if not await self._pause(s.first_post_after):
            return  # a quick answer: posted once by the normal send
        while not self.text and not self._stopped.is_set():
            self._changed.clear()
            await self._changed.wait()
        if self._stopped.is_set():
            return
        try:
            await s.reconciler.reconcile(self.msg)  # a part left by a crashed attempt is edited, not doubled
            for part, reply_id in (await s.inbox.sent_parts(self.msg.post_id)).items():
                self.ids[part] = reply_id
                self.shown[part] = None
        except Exception as exc:
            log.info("stream.reconcile_failed", post_id=self.msg.post_id, error=type(exc).__name__)
            return
        while not self._stopped.is_set():
            desired = replies.split_message(self.text + MARKER, s.limit)
            todo = next(
                (i for i, part in enumerate(desired) if i not in self.ids or self.shown.get(i) != part), None
            )
            if todo is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            wait = self.last_write + self.interval - time.monotonic()
            if wait > 0:
                if not await self._pause(wait):
                    return
                continue  # take the newest text
            if not await self._write(todo, desired[todo]):
                return

    async def _write(self, part: int, text: str) -> bool:
        """One create or edit; False stops streaming (the final send takes over)."""
        s = self.streams
        creating = part not in self.ids
        try:
            if creating:
                post = await s.poster.create_post(
                    self.msg.channel_id,
                    text,
                    root_id=self.msg.thread_root,
                    props={"mchat_reply_to": self.msg.post_id, "mchat_part": part},
                    pending_post_id=f"mchat-{self.msg.post_id}-{part}",
                )
                self.ids[part] = str(post.get("id", ""))
                await s.inbox.record_sent(self.msg.post_id, part, self.ids[part])
            else:
                await s.poster.patch_post(self.ids[part], message=text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_write = time.monotonic()
            status = _status(exc)
            if status == 429:
                self.interval = min(MAX_INTERVAL, self.interval * 2)
                self.backoffs += 1
                log.info("stream.backoff", post_id=self.msg.post_id, interval=self.interval)
                return True
            if creating and (status is None or status >= 500):
                self.ambiguous = True  # it may have landed: the final send looks at the thread first
            log.info("stream.stopped", post_id=self.msg.post_id, error=f"{type(exc).__name__}", status=status)
            return False
        self.shown[part] = text
        self.writes += 1
        self.last_write = time.monotonic()
        return True


class Streams:
    """Streaming replies for the worker pool: the LLM wrapper, and the send/failure wrappers."""

    def __init__(
        self,
        poster: StreamingPoster,
        final: FinalPoster,
        inbox: Inbox,
        reconciler: Reconciler,
        *,
        interval: float = 0.5,
        first_post_after: float = 1.0,
        limit: int = replies.MAX_POST_CHARS,
    ) -> None:
        self.poster = poster
        self.final = final
        self.inbox = inbox
        self.reconciler = reconciler
        self.interval = interval
        self.first_post_after = first_post_after
        self.limit = limit
        self.sessions: dict[str, StreamSession] = {}

    def completer(self, llm: StreamingCompleter) -> StreamingLLM:
        return StreamingLLM(llm, self)

    def wrap_handle(
        self, handle_fn: Callable[[IncomingMessage], Awaitable[str]]
    ) -> Callable[[IncomingMessage], Awaitable[str]]:
        """Make the message known to the LLM wrapper (a context variable: per worker task)."""

        async def handle(msg: IncomingMessage) -> str:
            token = CURRENT.set(msg)
            try:
                return await handle_fn(msg)
            finally:
                CURRENT.reset(token)

        return handle

    def wrap_send(
        self, send_fn: Callable[[IncomingMessage, str], Awaitable[Any]]
    ) -> Callable[[IncomingMessage, str], Awaitable[Any]]:
        async def send(msg: IncomingMessage, text: str) -> Any:
            session = self.sessions.pop(msg.post_id, None)
            if session is not None:
                await session.stop()
                if session.ambiguous:
                    await self.reconciler.reconcile(msg)
            if msg.door == "websocket":
                await self._finalize(msg, text, session)
            return await send_fn(msg, text)

        return send

    def wrap_failure(
        self, failure_fn: Callable[[IncomingMessage, str], Awaitable[Any]]
    ) -> Callable[[IncomingMessage, str], Awaitable[Any]]:
        async def failure(msg: IncomingMessage, text: str) -> Any:
            session = self.sessions.pop(msg.post_id, None)
            if session is not None:
                await session.stop()
                for part, shown in session.shown.items():  # no "still writing" mark on a dead answer
                    if shown and shown.endswith(MARKER):
                        with contextlib.suppress(Exception):
                            await self.final.patch_post(session.ids[part], message=shown[: -len(MARKER)])
            return await failure_fn(msg, text)

        return failure

    def open(self, msg: IncomingMessage) -> StreamSession:
        old = self.sessions.pop(msg.post_id, None)
        if old is not None:
            old.cancel()
        session = StreamSession(msg, self)
        self.sessions[msg.post_id] = session
        return session

    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            session.cancel()
        self.sessions.clear()

    async def _finalize(self, msg: IncomingMessage, text: str, session: StreamSession | None) -> None:
        """Parts already posted (streamed, or by an earlier attempt) get their final text."""
        sent = await self.inbox.sent_parts(msg.post_id)
        if not sent:
            return
        parts = replies.split_message(text, self.limit)
        last = session.last_write if session is not None else 0.0
        interval = session.interval if session is not None else self.interval
        for part, reply_id in sorted(sent.items()):
            if part >= len(parts):  # the final answer is shorter than what was streamed
                with contextlib.suppress(Exception):
                    await self.final.delete_post(reply_id)
                continue
            shown = session.shown.get(part) if session is not None else None
            if shown == parts[part]:
                continue
            try:
                if shown is None:
                    current = await self.final.get_post(reply_id)
                    if current.get("message") == parts[part]:
                        continue
                wait = last + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.final.patch_post(reply_id, message=parts[part])
                last = time.monotonic()
            except Exception as exc:
                status = _status(exc)
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


class StreamingLLM:
    """The handlers' completer: streams the answer into the asker's thread when it is worth it."""

    def __init__(self, llm: StreamingCompleter, streams: Streams) -> None:
        self._llm = llm
        self._streams = streams

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    async def complete(self, messages: list[dict[str, str]]) -> str:
        msg = CURRENT.get()
        if msg is None or msg.door != "websocket" or not is_answer_prompt(messages):
            return await self._llm.complete(messages)
        session = self._streams.open(msg)
        try:
            return await self._llm.complete_streaming(messages, session.feed)
        finally:
            await session.stop()
