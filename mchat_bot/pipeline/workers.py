"""The worker pool that drains the inbox, and the reply sender that posts answers exactly once.

An item is acknowledged only after its whole reply is posted. The reply text is saved in the
inbox before sending, and every posted part goes into the sent-log, so a retry or a restart after
a crash posts only the parts still missing, with the same text (the LLM is not asked again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from mchat_bot.pipeline import replies
from mchat_bot.pipeline.inbox import Inbox, InboxItem
from mchat_bot.pipeline.message import IncomingMessage

log = structlog.get_logger(__name__)

HandleFn = Callable[[IncomingMessage], Awaitable[str]]
SendFn = Callable[[IncomingMessage, str], Awaitable[Any]]


class PostCreator(Protocol):
    """What the sender needs of ``mattermost.rest.RestClient``."""

    async def create_post(
        self,
        channel_id: str,
        message: str,
        *,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        pending_post_id: str | None = None,
    ) -> dict[str, Any]: ...


@runtime_checkable
class ThreadFetcher(Protocol):
    """Reads a thread (``RestClient.get_thread``), to find replies posted before a crash."""

    async def get_thread(self, post_id: str) -> dict[str, Any]: ...


class PermanentSendError(Exception):
    """Sending can never succeed (e.g. 403: the bot left the channel); do not retry."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, connection errors, 429 and 5xx. A 4xx answer is final."""
    if isinstance(exc, PermanentSendError):
        return False
    status = getattr(exc, "status", None)
    if status is None:
        status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return False
    return True


class ReplySender:
    """Posts a reply in the asker's thread, split into parts, each part once.

    ``pending_post_id`` is deterministic per (source post, part) so the server also drops a
    duplicate sent within its 30 s window; the sent-log covers the rest.
    """

    def __init__(self, poster: PostCreator, inbox: Inbox, *, limit: int = replies.MAX_POST_CHARS) -> None:
        self.poster = poster
        self.inbox = inbox
        self.limit = limit

    async def send(self, msg: IncomingMessage, text: str) -> list[str]:
        """Post the missing parts; returns the reply post ids of all parts, in order."""
        parts = replies.split_message(text, self.limit)
        sent = await self.inbox.sent_parts(msg.post_id)
        ids: list[str] = []
        for i, part in enumerate(parts):
            if i in sent:
                ids.append(sent[i])
                continue
            post = await self.poster.create_post(
                msg.channel_id,
                part,
                root_id=msg.thread_root,
                props={"mchat_reply_to": msg.post_id, "mchat_part": i},
                pending_post_id=f"mchat-{msg.post_id}-{i}",
            )
            reply_id = str(post.get("id", "")) if isinstance(post, dict) else ""
            await self.inbox.record_sent(msg.post_id, i, reply_id)
            ids.append(reply_id)
        return ids

    __call__ = send

    async def reconcile(self, msg: IncomingMessage) -> int:
        """Before re-sending: record in the sent-log any part already in the thread.

        The server's ``pending_post_id`` dedupe lasts 30 s and lives in its memory; a crash between
        posting and writing the sent-log, or a timeout on a post that did land, is only found by
        looking at the thread for our marker in ``props``. Returns how many parts were found.
        """
        if not isinstance(self.poster, ThreadFetcher):
            return 0
        thread = await self.poster.get_thread(msg.thread_root)
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

    async def send_failure(self, msg: IncomingMessage, text: str) -> None:
        """The short "could not answer" notice (one post, never split, outside the sent-log parts)."""
        await self.poster.create_post(
            msg.channel_id,
            text[: self.limit],
            root_id=msg.thread_root,
            props={"mchat_reply_to": msg.post_id, "mchat_failure": True},
            pending_post_id=f"mchat-{msg.post_id}-fail",
        )


@dataclass(slots=True)
class PoolStats:
    handled: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0


class WorkerPool:
    """Up to ``workers`` items at a time; the inbox keeps each thread in order.

    One claimer task claims as many items as there are free slots, in one statement, and starts a
    task per item. Idle workers each claiming on every wake-up cost a thread hop and a commit per
    worker per event (issue 8); a single claimer claims once per wake-up, and in batches under load.
    """

    def __init__(
        self,
        inbox: Inbox,
        handle_fn: HandleFn,
        send_fn: SendFn,
        *,
        workers: int = 4,
        poll_interval: float = 0.2,
        max_attempts: int = 5,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        failure_fn: SendFn | None = None,
        handle_timeout: float = 300.0,
        reconcile_fn: Callable[[IncomingMessage], Awaitable[Any]] | None = None,
    ) -> None:
        self.inbox = inbox
        self.handle_fn = handle_fn
        self.send_fn = send_fn
        self.failure_fn = failure_fn
        self.reconcile_fn = reconcile_fn
        self.workers = max(1, workers)
        self.poll_interval = poll_interval
        self.max_attempts = max(1, max_attempts)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.handle_timeout = handle_timeout
        self.stats = PoolStats()
        self._tasks: list[asyncio.Task[None]] = []  # the claimer
        self._jobs: set[asyncio.Task[None]] = set()  # one per item being processed
        self._in_flight: set[str] = set()
        self._stopping = False

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stopping

    def start(self) -> None:
        if any(not t.done() for t in self._tasks):
            return
        self._stopping = False
        self._tasks = [asyncio.create_task(self._claimer(), name="mchat-inbox-claimer")]
        log.info("workers.started", workers=self.workers)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let in-flight items finish within ``grace`` s; cancel the rest (left pending)."""
        if not self._tasks:
            return
        self._stopping = True
        self.inbox.changed.set()  # wake the idle claimer so it notices
        deadline = asyncio.get_running_loop().time() + grace
        await asyncio.wait(self._tasks, timeout=grace)  # a claim in progress still starts its items
        jobs = list(self._jobs)
        pending: set[asyncio.Task[None]] = set()
        if jobs:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            _, pending = await asyncio.wait(jobs, timeout=left)
        for task in [*self._tasks, *pending]:
            task.cancel()
        await asyncio.gather(*self._tasks, *jobs, return_exceptions=True)
        released = list(self._in_flight)
        for post_id in released:
            await self.inbox.release(post_id)
        self._in_flight.clear()
        self._tasks = []
        log.info("workers.stopped", cancelled=len(pending), released=len(released))

    async def run(self) -> None:
        """Start the workers and wait for them, for a supervisor; cancelling it stops them."""
        self.start()
        try:
            await asyncio.gather(*self._tasks)
            while self._jobs:  # the claimer ended because stop() was called: its grace covers these
                await asyncio.wait(list(self._jobs))
        finally:
            for task in [*self._tasks, *self._jobs]:
                task.cancel()

    def wake(self) -> None:
        """Tell idle workers that something was put into the inbox."""
        self.inbox.changed.set()

    async def __aenter__(self) -> WorkerPool:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _claimer(self) -> None:
        changed = self.inbox.changed
        while not self._stopping:
            changed.clear()  # before claim: a put() or a finished item after this wakes us
            free = self.workers - len(self._jobs)
            items: list[InboxItem] = []
            if free > 0:
                try:
                    items = await self.inbox.claim(free)
                except Exception:
                    log.exception("workers.claim_failed")
                    await asyncio.sleep(self.poll_interval)
                    continue
            for item in items:  # even when stopping meanwhile: stop() waits for them or releases them
                self._in_flight.add(item.post_id)
                job = asyncio.create_task(self._work(item), name=f"mchat-worker-{item.post_id}")
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
            if free > 0 and len(items) == free:
                continue  # every slot got one: there may be more (it waits for a slot above)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await changed.wait()

    async def _work(self, item: InboxItem) -> None:
        try:
            await self._process(item)
        except Exception:  # a bug in our own code: keep the pool alive, fail the item
            log.exception("workers.process_crashed", post_id=item.post_id)
            with contextlib.suppress(Exception):
                await self.inbox.fail(item.post_id, "internal error in worker")
        # not reached when cancelled: stop() releases what is still in flight
        self._in_flight.discard(item.post_id)
        # The slot is free now, not when the done callback runs (after the claimer has woken up).
        if (task := asyncio.current_task()) is not None:
            self._jobs.discard(task)
        self.inbox.changed.set()  # the claimer may take the next item

    async def _process(self, item: InboxItem) -> None:
        msg = item.message
        text = item.reply
        if text is None:
            try:
                async with asyncio.timeout(self.handle_timeout):
                    text = await self.handle_fn(msg)
            except Exception as exc:
                log.exception("workers.handle_failed", post_id=msg.post_id)
                lang = replies.detect_lang(msg.message)
                await self._give_up(
                    item, f"handler: {type(exc).__name__}: {exc}", replies.internal_error(lang)
                )
                return
            self.stats.handled += 1
            if text.strip():  # nothing to send is acked at once: no reply to keep for a retry
                await self.inbox.save_reply(msg.post_id, text)
        if not text.strip():
            await self.inbox.ack(msg.post_id)
            return
        try:
            if item.reply is not None and self.reconcile_fn is not None:
                await self.reconcile_fn(msg)  # a send was tried before: it may have landed
            await self.send_fn(msg, text)
        except Exception as exc:
            error = f"send: {type(exc).__name__}: {exc}"[:500]
            attempts = item.attempts + 1
            if is_transient(exc) and attempts < self.max_attempts:
                delay = min(self.retry_max, self.retry_base * 2 ** (attempts - 1))
                await self.inbox.retry_later(msg.post_id, error, delay)
                self.stats.retried += 1
                log.warning(
                    "workers.send_retry", post_id=msg.post_id, attempts=attempts, delay=delay, error=error
                )
                return
            await self._give_up(item, error, replies.delivery_failed(replies.detect_lang(msg.message)))
            return
        await self.inbox.ack(msg.post_id)
        self.stats.sent += 1
        log.debug("workers.replied", post_id=msg.post_id, chars=len(text))

    async def _give_up(self, item: InboxItem, error: str, notice: str) -> None:
        msg = item.message
        await self.inbox.fail(msg.post_id, error)
        self.stats.failed += 1
        log.error("workers.failed", post_id=msg.post_id, attempts=item.attempts + 1, error=error[:300])
        if self.failure_fn is None:
            return
        try:
            async with asyncio.timeout(30.0):
                await self.failure_fn(msg, notice)
        except Exception as exc:  # best effort: the item is already failed
            log.warning("workers.failure_notice_failed", post_id=msg.post_id, error=type(exc).__name__)
