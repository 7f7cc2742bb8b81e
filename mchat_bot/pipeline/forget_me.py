"""`forget me` / `나를 잊어줘`: everything the bot keeps of one person, gone on their word.

Asked in the 1:1 DM only (the preview lists their memories). ``forget me`` shows what would go and
deletes nothing; ``forget me confirm`` deletes every personal memory of the asker (every version)
and every line of theirs in the channel knowledge (log and index; the lines around them are
embedded again without their words); ``forget me confirm all`` also deletes the channel and team
memories they wrote, which are others' knowledge too and so are a choice, listed in the preview.
Where one of those replaced someone else's version, that version is current again (as ``forget``
does). Finished inbox items keep nothing of a message once done; rows older than that rule are
blanked, and the asker's audit rows lose their text snippets. The receipt, and the audit row of the
erasure, give counts and ids, never texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

import structlog

from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.memory.store import Memory, MemoryStore, restore_previous
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.audit import Audit
from mchat_bot.pipeline.buttons import Button
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply, unique
from mchat_bot.pipeline.router import parse_choice
from mchat_bot.pipeline.self_service import own_memories

log = structlog.get_logger(__name__)

PREVIEW_AUTHORED = 10  # channel and team memories listed in the preview
FORGET_CHUNK = 500  # message lines removed per index call


@dataclass(frozen=True, slots=True)
class Found:
    """What the bot keeps of one user."""

    personal: list[Memory] = field(default_factory=list)  # scope user, every version
    authored: list[Memory] = field(default_factory=list)  # channel and team memories they wrote
    lines: list[tuple[str, str]] = field(default_factory=list)  # (post id, channel id) of their lines

    @property
    def channels(self) -> int:
        return len({channel for _, channel in self.lines})

    @property
    def empty(self) -> bool:
        return not (self.personal or self.authored or self.lines)


class ForgetMe:
    def __init__(
        self,
        store: MemoryStore,
        *,
        index: MessageIndex | None = None,
        inbox: Inbox | None = None,
        audit: Audit | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.inbox = inbox
        self.audit = audit
        self.tz = tz

    async def find(self, user_id: str) -> Found:
        mine = await own_memories(self.store, user_id, current_only=False)
        lines = await self.index.log.of_user(user_id) if self.index is not None and user_id else []
        return Found(
            personal=[m for m in mine if m.scope == "user"],
            authored=[m for m in mine if m.scope != "user"],
            lines=lines,
        )

    async def handle(self, msg: IncomingMessage, arg: str, lang: str, mention: str) -> Reply:
        if msg.channel_type != "D":
            return Reply(texts.only_in_dm(lang, mention, texts.forget_me_command(lang)), Outcome.REFUSED)
        choice = parse_choice(arg)
        if choice is None:
            return Reply(texts.format_usage("forget", lang), Outcome.REFUSED)
        confirmed, everything = choice
        found = await self.find(msg.user_id)
        if found.empty:
            return Reply(texts.forget_me_nothing(lang), Outcome.NOTHING_FOUND)
        if not confirmed:
            return self.preview(found, lang, mention, msg.user_id)
        return await self.erase(msg.user_id, found, lang, everything=everything)

    def preview(self, found: Found, lang: str, mention: str, user_id: str = "") -> Reply:
        current = [m for m in found.authored if m.current]
        current.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        listed = [texts.memory_line(i, m, self.tz) for i, m in enumerate(current[:PREVIEW_AUTHORED], 1)]
        text = texts.forget_me_preview(
            lang,
            mention,
            personal=len(found.personal),
            messages_n=len(found.lines),
            channels=found.channels,
            authored=listed,
            authored_total=len(current),
        )
        buttons = [Button("forget_me", texts.button_forget_me(lang), user_id=user_id, style="danger")]
        if current:
            everything = texts.button_forget_me(lang, everything=True)
            buttons.append(Button("forget_me", everything, user_id=user_id, extra=(("all", "1"),)))
        return Reply(text, Outcome.LISTED, buttons=tuple(buttons) if user_id else ())

    async def erase(self, user_id: str, found: Found, lang: str, *, everything: bool) -> Reply:
        doomed = [*found.personal, *(found.authored if everything else [])]
        ids = {m.id for m in doomed}
        for memory in doomed:  # someone else's version that one of these replaced is current again
            if memory.current and memory.replaces and memory.replaces not in ids:
                await restore_previous(self.store, memory)
        await self.store.delete_many(sorted(ids))
        removed = 0
        if self.index is not None:
            post_ids = [post_id for post_id, _ in found.lines]
            for start in range(0, len(post_ids), FORGET_CHUNK):
                removed += await self.index.forget(post_ids[start : start + FORGET_CHUNK])
        scrubbed = await self.inbox.scrub_finished() if self.inbox is not None else 0
        blanked = await self.audit.forget_details(user_id) if self.audit is not None else 0
        kept = 0 if everything else sum(1 for m in found.authored if m.current)
        authored = sum(1 for m in found.authored if m.current) if everything else 0
        log.info(
            "memory.forget_me",
            personal=len(found.personal),
            authored=len(found.authored) if everything else 0,
            messages=removed,
            inbox_rows=scrubbed,
            audit_rows=blanked,
        )
        text = texts.forget_me_receipt(
            lang,
            personal=len(found.personal),
            messages_n=removed,
            channels=found.channels,
            authored=authored,
            kept=kept,
        )
        return Reply(text, Outcome.FORGOTTEN, unique(*sorted(ids)))
