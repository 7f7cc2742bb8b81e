"""Long LLM answers appear progressively, by editing the bot's reply post while the model writes.

The streaming step offers the turn a sink; the handler sends only its answer prompt through it
(never the extraction or supersession calls). Exactly-once stays with the reply writer
(:mod:`mchat_bot.pipeline.replying`): a streamed part is created by the writer, with the same
``pending_post_id`` and ``props`` markers as a normal part, and written to the sent-log at once, so
the final send, a retry or a restart only edits those parts and posts the missing ones. Edits send
``message`` only (a PATCH with ``props`` would replace the markers). At most one write every
``interval`` seconds per reply, measured from the end of the previous one, stretched as the rate
budget shrinks (``interval / budget``, up to ``MAX_INTERVAL``); a 429 doubles the interval. Edits go
at the pacer's edit priority: never while a reply waits for its turn (then the edit is skipped and
tried again an interval later). The writer's final edit carries the complete answer with its sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import structlog

from mchat_bot.net.pacing import Dropped
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.replying import MAX_POST_CHARS, ReplyWriter, split_message, status_of
from mchat_bot.pipeline.turn import Completer, Delivery, Next, Turn

log = structlog.get_logger(__name__)

MARKER = " ▍"  # shown at the end while the answer is still being written
MAX_INTERVAL = 8.0
MIN_BUDGET = 1 / 16  # at or below this share of the budget, edits are MAX_INTERVAL apart


@runtime_checkable
class StreamingCompleter(Protocol):
    async def complete(self, messages: list[dict[str, str]]) -> str: ...
    async def complete_streaming(
        self, messages: list[dict[str, str]], on_text: Callable[[str], None]
    ) -> str: ...


class StreamSession:
    """One reply being streamed: the text so far, the parts posted, what each shows."""

    def __init__(self, msg: IncomingMessage, streams: Streams, preface: str = "") -> None:
        self.msg = msg
        self.streams = streams
        self.preface = preface  # the turn's preface: the stream begins as the final reply will
        self.text = ""
        self.interval = streams.interval
        self.ids: dict[int, str] = {}  # part -> reply post id
        self.shown: dict[int, str | None] = {}  # part -> text it shows (None = unknown)
        self.last_write = 0.0  # monotonic end of the last write
        self.ambiguous = False  # a create may have landed unseen: reconcile before the final send
        self.writes = 0
        self.backoffs = 0
        self.skipped = 0  # edits not sent: a reply waited for its turn
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        # Most answers are done before the first post would be due: a timer, not a task, waits for
        # that moment, so a quick answer costs no task at all.
        self._task: asyncio.Task[None] | None = None
        self._due = asyncio.get_running_loop().call_later(streams.first_post_after, self._begin)

    def _begin(self) -> None:
        if not self._stopped.is_set():
            self._task = asyncio.create_task(self._run(), name=f"stream-{self.msg.post_id}")

    def feed(self, text: str) -> None:
        """The model's text so far (called for every chunk; cheap)."""
        self.text = self.preface + text
        self._changed.set()

    async def stop(self) -> None:
        """No more text: stop editing after the write in flight (the final edit is the sender's)."""
        self._stopped.set()
        self._changed.set()
        self._due.cancel()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    def cancel(self) -> None:
        self._stopped.set()
        self._due.cancel()
        if self._task is not None:
            self._task.cancel()

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()
        return not self._stopped.is_set()

    async def _run(self) -> None:
        s = self.streams  # started once first_post_after has passed without the answer being done
        while not self.text and not self._stopped.is_set():
            self._changed.clear()
            await self._changed.wait()
        if self._stopped.is_set():
            return
        try:
            # a part left by a crashed attempt is edited, not doubled
            for part, reply_id in (await s.writer.known_parts(self.msg)).items():
                self.ids[part] = reply_id
                self.shown[part] = None
        except Exception as exc:
            log.info("stream.reconcile_failed", post_id=self.msg.post_id, error=type(exc).__name__)
            return
        while not self._stopped.is_set():
            desired = split_message(self.text + MARKER, s.limit)
            todo = next(
                (i for i, part in enumerate(desired) if i not in self.ids or self.shown.get(i) != part), None
            )
            if todo is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            wait = self.last_write + self.pace() - time.monotonic()
            if wait > 0:
                if not await self._pause(wait):
                    return
                continue  # take the newest text
            if not await self._write(todo, desired[todo]):
                return

    def pace(self) -> float:
        """Seconds between writes now: the interval, stretched as the rate budget shrinks."""
        budget = float(self.streams.poster.limiter.budget())
        return min(MAX_INTERVAL, max(self.interval, self.interval / max(budget, MIN_BUDGET)))

    async def _write(self, part: int, text: str) -> bool:
        """One create or edit; False stops streaming (the final send takes over)."""
        s = self.streams
        creating = part not in self.ids
        try:
            if creating:
                self.ids[part] = await s.writer.create_part(self.msg, part, text, via=s.poster)
            else:
                await s.poster.patch_post(self.ids[part], message=text)
        except asyncio.CancelledError:
            raise
        except Dropped:  # not sent: replies go first; the newest text is tried an interval later
            self.last_write = time.monotonic()
            self.skipped += 1
            return True
        except Exception as exc:
            self.last_write = time.monotonic()
            status = status_of(exc)
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
    """The streaming step: offers the turn a sink for its answer, and tidies a dead stream."""

    def __init__(
        self,
        poster: ChatServer,
        writer: ReplyWriter,
        *,
        interval: float = 0.5,
        first_post_after: float = 1.0,
        limit: int = MAX_POST_CHARS,
    ) -> None:
        # one try at the edit priority: a 429 must reach the session, not be waited out in the client
        self.poster = poster
        self.writer = writer
        self.interval = interval
        self.first_post_after = first_post_after
        self.limit = limit
        self.sessions: dict[str, StreamSession] = {}

    async def __call__(self, turn: Turn, next: Next) -> None:
        if turn.msg.door == "websocket":  # the other doors answer in one piece
            turn.sink = _TurnSink(self, turn)
        try:
            await next(turn)
        finally:
            if turn.stream is not None:
                await turn.stream.stop()

    async def settle(self, turn: Turn) -> None:
        session = self.sessions.pop(turn.msg.post_id, None)
        if session is None or turn.delivery is not Delivery.FAILED:
            return
        for part, shown in session.shown.items():  # no "still writing" mark on a dead answer
            if shown and shown.endswith(MARKER):
                with contextlib.suppress(Exception):
                    await self.writer.server.patch_post(session.ids[part], message=shown[: -len(MARKER)])

    def open(self, msg: IncomingMessage, preface: str = "") -> StreamSession:
        old = self.sessions.pop(msg.post_id, None)
        if old is not None:
            old.cancel()
        session = StreamSession(msg, self, preface)
        self.sessions[msg.post_id] = session
        return session

    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            session.cancel()
        self.sessions.clear()


class _TurnSink:
    """The handler's way to the model for the answer: streamed into this turn's thread."""

    def __init__(self, streams: Streams, turn: Turn) -> None:
        self._streams = streams
        self._turn = turn

    async def complete(self, llm: Completer, messages: list[dict[str, str]]) -> str:
        if not isinstance(llm, StreamingCompleter):
            return await llm.complete(messages)
        session = self._turn.stream = self._streams.open(self._turn.msg, self._turn.preface)
        try:
            return await llm.complete_streaming(messages, session.feed)
        finally:
            await session.stop()
