"""What only the asker may read goes to the asker alone, before the channel's answer is kept.

A handler puts the memories that some reader of the channel may not see in ``Reply.private``
(the reader rule, ``memory/readers.py``), never in the text. This step shows them to the asker
alone (an ephemeral post, else their DM with the bot) and tells the channel which way they went;
when neither can be done the channel is told to ask in a DM. It runs right after the handler, so
the channel's text it settles is the one the worker saves and sends (a retry does not repeat it).
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from mchat_bot.net.http import permalink
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.router import detect_lang
from mchat_bot.pipeline.turn import Next, Turn

log = structlog.get_logger(__name__)


class AskerOnly:
    def __init__(self, writer: ReplyWriter, site_url: str) -> None:
        self.writer = writer
        self.site_url = site_url.rstrip("/")

    async def __call__(self, turn: Turn, next: Next) -> None:
        await next(turn)
        reply = turn.reply
        if reply is None or not reply.private:
            return
        msg = turn.msg
        how = await self.writer.tell_asker(msg, reply.private, dm_note=self._origin(turn))
        log.info("reply.private_part", post_id=msg.post_id, via=how or "none")
        if how == "dm":
            note = texts.withheld_sent_to_dm(detect_lang(msg.message))
        elif how == "ephemeral":
            note = ""
        else:
            note = reply.private_fallback
        text = f"{reply.text}\n\n{note}" if note and reply.text else reply.text or note
        turn.reply = replace(reply, text=text, private="", private_fallback="")

    def _origin(self, turn: Turn) -> str:
        """In the DM, which question it answers: a permalink, when there is a post."""
        msg = turn.msg
        return f"↪ {permalink(self.site_url, msg.post_id)}" if msg.has_post else ""

    async def settle(self, turn: Turn) -> None:
        return None
