"""What the asker sees while the bot works: the typing indicator and a reaction on the asking post.

👀 while working, ✅ when the answer is posted, ⚠️ when it failed (👀 removed at the end). Typing
and 👀 start only once the work has run for ``delay`` seconds: a fast answer gets no reaction at all
(its reply, there within a second, is the signal; ``done_on_fast`` gives it a ✅), since a flash of
👀 and "typing" before it is noise, and every reaction is a REST call out of the budget replies
share: at the server's rate a ✅ per answer halves the answers per second. A failure always gets
⚠️. All of it is best effort and off the critical path: calls run in background tasks on a client
with one try, short timeouts and the courtesy priority, sharing the reply client's pacer. They are
skipped (never queued) while a reply waits for its turn or less than a third of the rate budget is
spare (the pacer drops them unsent, and counts it), so they can neither delay nor fail a reply. A
429 pauses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mchat_bot.net.pacing import Dropped, Priority
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.turn import Delivery, Next, Turn

log = structlog.get_logger(__name__)

WORKING, DONE, FAILED = "eyes", "white_check_mark", "warning"
PAUSE_ON_429_S = 5.0
FINAL_WAIT_S = 5.0  # how long the end-of-work reactions wait for a spare budget before giving up
MAX_LEFT = 1024  # posts awaiting a retry whose 👀 is remembered (older ones are forgotten)


@dataclass
class _Session:
    msg: IncomingMessage
    timer: asyncio.TimerHandle | None = None  # the delayed start of typing and 👀 (no task until then)
    begun: bool = False  # typing and 👀 were started
    typing_task: asyncio.Task[None] | None = None
    chain: asyncio.Task[None] | None = None  # reaction calls, strictly one after another
    eyes: bool = False  # 👀 was put, or may be (so it must be taken off)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Feedback:
    def __init__(
        self,
        rest: ChatServer,
        bot_user_id: str,
        *,
        typing: bool = True,
        reactions: bool = True,
        typing_interval: float = 4.0,
        delay: float = 1.0,
        done_on_fast: bool = False,
    ) -> None:
        self.rest = rest
        self.bot_user_id = bot_user_id
        self.typing = typing
        self.reactions = reactions
        self.typing_interval = typing_interval
        self.delay = max(0.0, delay)  # typing and 👀 only for work still running after this (0: at once)
        self.done_on_fast = done_on_fast  # ✅ on an answer that showed no 👀, too
        self._sessions: dict[str, _Session] = {}
        # sessions that ended with a retry to follow after 👀 was put: the retry's session takes over
        # their chain (ordering) and their 👀 (taken off at its end, even when the retry is fast)
        self._left: dict[str, _Session] = {}
        self._paused_until = 0.0
        self.skipped = 0

    @property
    def enabled(self) -> bool:
        return self.typing or self.reactions

    @staticmethod
    def wanted(msg: IncomingMessage) -> bool:
        """Only posts read from Mattermost itself have a post to react to and a channel to type in."""
        return msg.door == "websocket" and not msg.from_webhook

    # --- start and end of the work -------------------------------------------------------------------------

    def start(self, msg: IncomingMessage) -> None:
        """Work on ``msg`` begins: after ``delay`` s, typing every few seconds and 👀 on the post."""
        if not self.enabled or not self.wanted(msg) or msg.post_id in self._sessions:
            return
        session = self._session(msg)
        if self.delay <= 0:
            self._begin(session)
        else:
            session.timer = asyncio.get_running_loop().call_later(self.delay, self._begin, session)

    def _session(self, msg: IncomingMessage, *, eyes: bool = False) -> _Session:
        before = self._left.pop(msg.post_id, None)
        session = _Session(msg, eyes=eyes or before is not None)
        if before is not None:
            session.chain, session.tasks = before.chain, before.tasks
        self._sessions[msg.post_id] = session
        return session

    def _begin(self, session: _Session) -> None:
        """The work is still running after ``delay`` s: show it. Synchronous, so ``finish`` either
        cancels it before it ran or finds its 👀 call already on the chain, ahead of its own."""
        session.timer = None
        session.begun = True
        if self.typing:
            msg = session.msg
            session.typing_task = asyncio.create_task(self._typing_loop(msg), name=f"typing-{msg.post_id}")
        if self.reactions and not session.eyes:
            self._then(session, self._put_eyes(session))

    def finish(self, msg: IncomingMessage, outcome: str | None) -> None:
        """Work ended: ``"done"`` (✅), ``"failed"`` (⚠️), ``""`` (nothing to post: only 👀 off) or
        None (a retry follows: only stop typing)."""
        session = self._sessions.get(msg.post_id)
        if session is None:
            if outcome is None or not self.reactions or not self.wanted(msg):
                return
            # a retry (after a restart, or a failed send): a 👀 may still be on the post
            session = self._session(msg, eyes=True)
        if session.timer is not None:  # done before the delay: no typing, no 👀 at all
            session.timer.cancel()
            session.timer = None
        if session.typing_task is not None:
            session.typing_task.cancel()
            session.typing_task = None
        if outcome is None:
            self._sessions.pop(msg.post_id, None)
            if self.reactions and (session.eyes or session.begun):
                self._left[msg.post_id] = session
                while len(self._left) > MAX_LEFT:
                    self._left.pop(next(iter(self._left)))
            return
        if self.reactions:
            emoji = {"done": DONE, "failed": FAILED}.get(outcome, "")
            if emoji == DONE and not (session.begun or session.eyes or self.done_on_fast):
                emoji = ""  # fast: the reply itself says it is done
            self._then(session, self._finish(session, emoji))
        self._then(session, self._forget(msg.post_id))

    async def aclose(self, grace: float = 2.0) -> None:
        """Stop typing at once; give the last reactions ``grace`` seconds, then cancel."""
        tasks: set[asyncio.Task[None]] = set()
        for session in [*self._sessions.values(), *self._left.values()]:
            if session.timer is not None:
                session.timer.cancel()
                session.timer = None
            if session.typing_task is not None:
                session.typing_task.cancel()
                tasks.add(session.typing_task)
            tasks |= session.tasks
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._sessions.clear()
        self._left.clear()

    # --- the chain's step ----------------------------------------------------------------------

    async def __call__(self, turn: Turn, next: Next) -> None:
        self.start(turn.msg)
        try:
            await next(turn)
        except BaseException:
            self.finish(turn.msg, None)  # failed: the give-up (settle) says so
            raise

    async def settle(self, turn: Turn) -> None:
        """✅ for a delivered answer, ⚠️ for an apology or a failure, 👀 off when nothing is posted."""
        if turn.delivery is Delivery.RETRY:
            self.finish(turn.msg, None)
        elif turn.delivery is Delivery.NOTHING:
            self.finish(turn.msg, "")
        elif turn.delivery is Delivery.FAILED or (turn.outcome is not None and turn.outcome.is_failure):
            self.finish(turn.msg, "failed")
        elif turn.delivery is Delivery.SENT:
            self.finish(turn.msg, "done")

    # --- the calls --------------------------------------------------------------------------------

    def _then(self, session: _Session, coro: Awaitable[None]) -> None:
        """Run ``coro`` after the session's previous reaction call (so 👀 is off only after it was on)."""
        before = session.chain

        async def step() -> None:
            if before is not None:
                with contextlib.suppress(BaseException):
                    await before
            await coro

        task = asyncio.create_task(step())
        session.chain = task
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    def _budget(self) -> bool:
        if time.monotonic() < self._paused_until:
            return False
        return float(self.rest.limiter.spare()) >= 1.0

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]], *, wait: float = 0.0) -> bool:
        """One best-effort call; False when skipped (no spare budget within ``wait`` s) or failed."""
        deadline = time.monotonic() + wait
        while not self._budget():
            if time.monotonic() >= deadline:
                break  # try anyway: the pacer decides, and counts it if it drops the call
            await asyncio.sleep(0.2)
        try:
            if time.monotonic() < self._paused_until:
                raise Dropped(Priority.COURTESY)  # still pausing after a 429 (not sent, not counted)
            await fn()  # the pacer drops it unsent (and counts it) when the budget is short
            return True
        except asyncio.CancelledError:
            raise
        except Dropped:
            self.skipped += 1
            log.debug("feedback.skipped", what=what)
            return False
        except Exception as exc:
            if getattr(exc, "status", None) == 429:
                self._paused_until = time.monotonic() + PAUSE_ON_429_S
            log.info("feedback.failed", what=what, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            return False

    async def _typing_loop(self, msg: IncomingMessage) -> None:
        parent = msg.root_id  # typing "in the thread" when the question is a reply
        while True:
            await self._call("typing", lambda: self.rest.typing(self.bot_user_id, msg.channel_id, parent))
            await asyncio.sleep(self.typing_interval)

    async def _put_eyes(self, session: _Session) -> None:
        post_id = session.msg.post_id
        put = await self._call("reaction", lambda: self.rest.add_reaction(self.bot_user_id, post_id, WORKING))
        session.eyes = session.eyes or put

    async def _finish(self, session: _Session, emoji: str) -> None:
        post_id = session.msg.post_id
        if session.eyes:
            await self._call(
                "reaction",
                lambda: self.rest.remove_reaction(self.bot_user_id, post_id, WORKING),
                wait=FINAL_WAIT_S,
            )
            session.eyes = False
        if not emoji:
            return
        await self._call(
            "reaction", lambda: self.rest.add_reaction(self.bot_user_id, post_id, emoji), wait=FINAL_WAIT_S
        )

    async def _forget(self, post_id: str) -> None:
        self._sessions.pop(post_id, None)
