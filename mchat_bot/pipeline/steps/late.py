"""An answer given long after its question starts by saying why: the bot was offline, catching up.

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


class LateNote:
    def __init__(self, after: float, *, clock: Callable[[], float] = time.time) -> None:
        self.after = after  # seconds; 0 = never
        self.clock = clock

    async def __call__(self, turn: Turn, next: Next) -> None:
        msg = turn.msg
        waited = self.clock() - msg.create_at / 1000 if msg.create_at > 0 else 0.0
        late = self.after > 0 and waited > self.after
        if late:
            turn.preface = texts.late_note(detect_lang(msg.message), waited) + "\n\n"
        await next(turn)
        reply = turn.reply
        if late and reply is not None and reply.text.strip():
            turn.reply = replace(reply, text=turn.preface + reply.text)
            log.info("reply.late", post_id=msg.post_id, waited_s=round(waited, 1))

    async def settle(self, turn: Turn) -> None:
        return None
