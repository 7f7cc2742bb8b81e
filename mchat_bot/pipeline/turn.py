"""One message's way through the bot: the :class:`Turn`, and the ordered :class:`Chain` of steps it passes.

A turn carries the message, its route (computed once, here), the reply the handler made and how
its delivery ended. The chain is one list of steps, built in one place (``mchat_bot.app.parts``), each a
middleware around the rest (``await next(turn)``), the handler last. After the worker has
delivered the reply (or given up, or put it back for a retry) each step is told how it ended
(``settle``), in reverse order: that is when the reactions change and a stream is cleaned up.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply
from mchat_bot.pipeline.router import BotIdentity, Routed, route

if TYPE_CHECKING:
    from mchat_bot.pipeline.steps.streaming import StreamSession


class Delivery(enum.Enum):
    """How the turn ended, as the worker saw it."""

    PENDING = "pending"  # not delivered yet
    SENT = "sent"  # the whole reply reached its destination
    NOTHING = "nothing"  # nothing to post (ignored, or an inactive channel)
    RETRY = "retry"  # sending failed for now; the saved reply is sent again later
    FAILED = "failed"  # given up; the asker got a short failure notice


class Completer(Protocol):
    """What handlers need of :class:`mchat_bot.llm.LLM`."""

    async def complete(self, messages: list[dict[str, str]]) -> str: ...


class AnswerSink(Protocol):
    """Asks the model for the answer itself (not the other LLM calls a handler makes), e.g. streaming
    its text into the thread as it comes."""

    async def complete(self, llm: Completer, messages: list[dict[str, str]]) -> str: ...


@dataclass(slots=True, eq=False)
class Turn:
    msg: IncomingMessage
    routed: Routed
    reply: Reply | None = None  # set by the handler (or given: a reply saved by an earlier attempt)
    resent: bool = False  # the reply comes from an earlier attempt: some parts may be posted already
    preface: str = ""  # what the reply starts with, set before the handler (a stream shows it too)
    enqueued_at: float = 0.0  # epoch s the post reached the inbox (0 = not known)
    sink: AnswerSink | None = None  # where the answer prompt goes (set by the streaming step)
    stream: StreamSession | None = None  # the answer being streamed into the thread, if any
    delivery: Delivery = Delivery.PENDING

    @classmethod
    def start(
        cls,
        msg: IncomingMessage,
        bot: BotIdentity,
        saved_reply: str | None = None,
        *,
        enqueued_at: float = 0.0,
    ) -> Turn:
        """A new turn, routed here once; ``saved_reply`` is the text an earlier attempt computed."""
        turn = cls(msg, route(msg, bot), enqueued_at=enqueued_at)
        if saved_reply is not None:
            turn.reply, turn.resent = Reply.from_saved(saved_reply), True
        return turn

    @property
    def outcome(self) -> Outcome | None:
        return self.reply.outcome if self.reply is not None else None

    @property
    def memory_ids(self) -> tuple[str, ...]:
        return self.reply.memory_ids if self.reply is not None else ()

    @property
    def text(self) -> str:
        return self.reply.text if self.reply is not None else ""


Next = Callable[[Turn], Awaitable[None]]
TurnHandler = Callable[[Turn], Awaitable[Reply]]


class Step(Protocol):
    """One link of the chain: work around ``next`` (which runs the later steps and the handler)."""

    async def __call__(self, turn: Turn, next: Next) -> None: ...

    async def settle(self, turn: Turn) -> None:
        """The reply was delivered, put back for a retry, or given up (``turn.delivery`` says)."""
        ...


class Chain:
    """The steps in order, then the handler; ``run`` makes the reply, ``settle`` reports the end."""

    def __init__(self, steps: Sequence[Step], handler: TurnHandler) -> None:
        self.steps = tuple(steps)
        self.handler = handler

    async def run(self, turn: Turn) -> Reply:
        await self._at(0, turn)
        if turn.reply is None:  # a step stopped the turn without a reply of its own
            turn.reply = Reply.nothing()
        return turn.reply

    async def _at(self, index: int, turn: Turn) -> None:
        if index < len(self.steps):
            await self.steps[index](turn, lambda t: self._at(index + 1, t))
        else:
            turn.reply = await self.handler(turn)

    async def settle(self, turn: Turn) -> None:
        for step in reversed(self.steps):
            await step.settle(turn)
