"""The worker pool that drains the inbox: each item becomes a turn through the chain, then a delivery.

An item is acknowledged only after its whole reply is delivered. The reply text is saved in the
inbox before sending, and the reply writer keeps every posted part in the sent-log, so a retry or
a restart after a crash posts only the parts still missing, with the same text (the LLM is not
asked again).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from mchat_bot.net.retry import RetryPolicy
from mchat_bot.net.retry import is_transient as net_is_transient
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.inbox import Inbox, InboxItem
from mchat_bot.pipeline.replying import PermanentSendError, ReplyWriter
from mchat_bot.pipeline.router import BotIdentity, detect_lang
from mchat_bot.pipeline.turn import Chain, Delivery, Turn
from mchat_bot.storage import StorageUnavailable

log = structlog.get_logger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Worth another send: the shared predicate (timeouts, connection errors, 408, 429, 5xx), never
    a send that can never succeed."""
    return not isinstance(exc, PermanentSendError) and net_is_transient(exc)


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
    worker per event; a single claimer claims once per wake-up, and in batches under load.
    """

    def __init__(
        self,
        inbox: Inbox,
        chain: Chain,
        writer: ReplyWriter,
        bot: BotIdentity,
        *,
        workers: int = 16,
        poll_interval: float = 0.2,
        max_attempts: int = 5,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        handle_timeout: float = 300.0,
    ) -> None:
        self.inbox = inbox
        self.chain = chain
        self.writer = writer
        self.bot = bot
        self.workers = max(1, workers)
        self.poll_interval = poll_interval
        self.max_attempts = max(1, max_attempts)
        self.retry_base = retry_base
        self.retry_max = retry_max
        # the attempts of an item live in the inbox, so the policy gives the delay for a count
        self.policy = RetryPolicy(first_delay=retry_base, max_delay=retry_max, tries=max_attempts)
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
        failures = RetryPolicy(first_delay=self.poll_interval, max_delay=30.0, tries=None).backoff()
        while not self._stopping:
            changed.clear()  # before claim: a put() or a finished item after this wakes us
            free = self.workers - len(self._jobs)
            items: list[InboxItem] = []
            if free > 0:
                try:
                    items = await self.inbox.claim(free)
                except Exception:
                    delay = failures.next()
                    log.exception("workers.claim_failed", retry_in_s=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
                failures.reset()
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
        except StorageUnavailable as exc:
            # the database went away mid-turn (a PostgreSQL restart): the item is still claimed
            # and its thread blocked, so it goes back to pending once the database answers; the
            # sent-log and the saved reply make the next attempt post only what is missing
            log.warning("workers.storage_unavailable", post_id=item.post_id, error=str(exc))
            await self._release_when_back(item.post_id)
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

    async def _release_when_back(self, post_id: str) -> None:
        """Release the item, retrying until the storage answers (stop() cancels the wait)."""
        back = RetryPolicy(first_delay=self.poll_interval, max_delay=5.0, tries=None)
        await back.call(lambda: self.inbox.release(post_id))

    async def _process(self, item: InboxItem) -> None:
        msg = item.message
        turn = Turn.start(msg, self.bot, item.reply, enqueued_at=item.enqueued_at)
        if item.attempts >= self.max_attempts:  # its daemons died with it, again and again
            lang = detect_lang(msg.message)
            await self._give_up(
                turn, item, "abandoned: every attempt ended with its daemon", texts.internal_error(lang)
            )
            return
        if not turn.resent:
            try:
                async with asyncio.timeout(self.handle_timeout):
                    await self.chain.run(turn)
            except Exception as exc:
                log.exception("workers.handle_failed", post_id=msg.post_id)
                lang = detect_lang(msg.message)
                await self._give_up(
                    turn, item, f"handler: {type(exc).__name__}: {exc}", texts.internal_error(lang)
                )
                return
            self.stats.handled += 1
            if turn.reply is not None and turn.text.strip():  # nothing to send: acked at once
                await self.inbox.save_reply(msg.post_id, turn.reply.saved_form())
        if not turn.text.strip():
            self.writer.nothing(turn)
            await self.inbox.ack(msg.post_id)
            await self._settle(turn, Delivery.NOTHING)
            return
        try:
            await self.writer.deliver(turn)
        except Exception as exc:
            error = f"send: {type(exc).__name__}: {exc}"[:500]
            attempts = item.attempts + 1
            if is_transient(exc) and attempts < self.max_attempts:
                delay = self.policy.delay(attempts)
                await self.inbox.retry_later(msg.post_id, error, delay)
                self.stats.retried += 1
                log.warning(
                    "workers.send_retry", post_id=msg.post_id, attempts=attempts, delay=delay, error=error
                )
                await self._settle(turn, Delivery.RETRY)
                return
            await self._give_up(turn, item, error, texts.delivery_failed(detect_lang(msg.message)))
            return
        await self.inbox.ack(msg.post_id)
        self.stats.sent += 1
        log.debug("workers.replied", post_id=msg.post_id, chars=len(turn.text))
        await self._settle(turn, Delivery.SENT)

    async def _settle(self, turn: Turn, delivery: Delivery) -> None:
        """Tell the steps how the turn ended; their clean-up never fails the item."""
        turn.delivery = delivery
        try:
            await self.chain.settle(turn)
        except Exception:
            log.exception("workers.settle_failed", post_id=turn.msg.post_id)

    async def _give_up(self, turn: Turn, item: InboxItem, error: str, notice: str) -> None:
        msg = item.message
        await self.inbox.fail(msg.post_id, error)
        self.stats.failed += 1
        log.error("workers.failed", post_id=msg.post_id, attempts=item.attempts + 1, error=error[:300])
        await self._settle(turn, Delivery.FAILED)
        try:
            async with asyncio.timeout(30.0):
                await self.writer.deliver_failure(turn, notice)
        except Exception as exc:  # best effort: the item is already failed
            log.warning("workers.failure_notice_failed", post_id=msg.post_id, error=type(exc).__name__)
