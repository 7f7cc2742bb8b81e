"""An answer given long after its question starts by saying why: the bot was offline, catching up,
or (the post came in on time and waited its turn) many questions came at once.

Mentions read by the catch-up after an outage are answered minutes late; without a word the asker
cannot tell a late answer from a slow one. Lateness is judged when the turn starts (the time the
bot was away), not after the handler (a slow model is not an outage). The note is the turn's
preface: set before the handler, so a streamed answer shows it from its first edit, and put in
front of the reply's text once, which the worker saves, so a re-send posts the same first part and
continuation parts never repeat it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from mchat_bot.pipeline import texts
from mchat_bot.pipeline.router import detect_lang
from mchat_bot.pipeline.turn import Next, Turn

log = structlog.get_logger(__name__)


# a post that reached the inbox this long after it was written (or half of ux.late_after, if less) was
# read by a catch-up: the socket, live, brings a post within milliseconds
RECEIVED_LATE_S = 30.0


class LateNote:
    def __init__(
        self, after: float, *, clock: Callable[[], float] = time.time, started: float | None = None
    ) -> None:
        self.after = after  # seconds; 0 = never
        self.clock = clock
        self.started = clock() if started is None else started  # this daemon's start (made at start-up)

    def was_away(self, turn: Turn) -> bool:
        """Whether the wait was the bot's absence (the post read late by a catch-up, or waiting in
        the inbox through a restart), not a queue of questions before it."""
        created, enqueued = turn.msg.create_at / 1000, turn.enqueued_at
        received_late = enqueued - created > min(RECEIVED_LATE_S, self.after / 2)
        return enqueued <= 0 or received_late or enqueued < self.started

    async def __call__(self, turn: Turn, next: Next) -> None:
        msg = turn.msg
        waited = self.clock() - msg.create_at / 1000 if msg.create_at > 0 else 0.0
        late = self.after > 0 and waited > self.after
        if late:
            note = texts.late_note(detect_lang(msg.message), waited, away=self.was_away(turn))
            turn.preface = note + "\n\n"
        await next(turn)
        reply = turn.reply
        if late and reply is not None and reply.text.strip():
            turn.reply = replace(reply, text=turn.preface + reply.text)
            log.info("reply.late", post_id=msg.post_id, waited_s=round(waited, 1))

    async def settle(self, turn: Turn) -> None:
        return None
