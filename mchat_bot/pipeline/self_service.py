"""`my memories` / `내 메모리` and `export` / `내보내기`: what the asker has put into the bot, shown to them.

"Theirs" is every memory whose ``user_id`` is the asker: the ones they authored in any scope
(personal, channel, team) and their personal ones (a personal memory's ``user_id`` is its owner).
Nobody else's memory is ever included, whichever channel it lives in. A channel memory the asker
wrote in a channel they have since left is still theirs: it is included (its text is their own words).

Both answer only in the asker's 1:1 DM with the bot: in a channel the list would show personal
memories to everyone there. A channel gets a short pointer to the DM instead of an unasked DM, so the
bot never writes to someone's DM on a command they did not give there.

The list shows current memories, by scope, at most :data:`PER_SCOPE` each (with the count of the
rest). The export is every version (superseded ones too) as JSONL rows of
:func:`mchat_bot.memory.jsonl.to_json`, the format ``mchat-bot memory import`` reads, uploaded to the
DM and posted there; the reply names the exported ids for the audit step, never their text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

import structlog

from mchat_bot.memory.jsonl import to_json
from mchat_bot.memory.store import Memory, MemoryStore, Selection
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply, unique
from mchat_bot.pipeline.ports import ChatServer

log = structlog.get_logger(__name__)

PER_SCOPE = 50
SCOPE_ORDER = ("user", "channel", "team")
EXPORT_MAX = 100_000  # memories in one export file (far above what one person writes)


async def own_memories(store: MemoryStore, user_id: str, *, current_only: bool) -> list[Memory]:
    """Every memory whose ``user_id`` is ``user_id`` (authored or personal), oldest first."""
    if not user_id:
        return []
    found: list[Memory] = []
    async for m in store.scan(Selection(user_id=user_id, include_superseded=not current_only)):
        if m.user_id != user_id or m.is_message:  # the selection is the rule; this is a guard
            continue
        if current_only and not m.current:
            continue
        found.append(m)
        if len(found) >= EXPORT_MAX:
            break
    found.sort(key=lambda m: (m.created_at, m.id))
    return found


def by_scope(memories: Sequence[Memory]) -> dict[str, list[Memory]]:
    """Personal, channel, team (in that order), newest first within each."""
    out: dict[str, list[Memory]] = {s: [] for s in SCOPE_ORDER}
    for m in memories:
        out.setdefault(m.scope, []).append(m)
    for items in out.values():
        items.sort(key=lambda m: (m.created_at, m.id), reverse=True)
    return out


def format_mine(groups: dict[str, list[Memory]], lang: str, tz: tzinfo | None, per_scope: int) -> str:
    total = sum(len(v) for v in groups.values())
    if not total:
        return texts.mine_empty(lang)
    lines = [texts.mine_head(lang, total)]
    for scope, items in groups.items():
        if not items:
            continue
        lines += ["", f"**{texts.scope_name(scope, lang)}** ({len(items)})"]
        lines += [texts.memory_line(i, m, tz) for i, m in enumerate(items[:per_scope], 1)]
        rest = len(items) - per_scope
        if rest > 0:
            lines.append(texts.more_items(lang, rest))
    return "\n".join([*lines, "", texts.mine_footer(lang)])


def to_jsonl(memories: Sequence[Memory]) -> bytes:
    return "".join(json.dumps(to_json(m), ensure_ascii=False) + "\n" for m in memories).encode("utf-8")


class SelfService:
    def __init__(
        self,
        store: MemoryStore,
        chat: ChatServer | None,
        *,
        tz: tzinfo | None = None,
        per_scope: int = PER_SCOPE,
    ) -> None:
        self.store = store
        self.chat = chat
        self.tz = tz
        self.per_scope = per_scope

    async def my_memories(self, msg: IncomingMessage, lang: str, mention: str) -> Reply:
        if msg.channel_type != "D":
            name = texts.pick(lang, "내 메모리", "my memories")
            return Reply(texts.only_in_dm(lang, mention, name), Outcome.REFUSED)
        mine = await own_memories(self.store, msg.user_id, current_only=True)
        groups = by_scope(mine)
        shown = [m for items in groups.values() for m in items[: self.per_scope]]
        text = format_mine(groups, lang, self.tz, self.per_scope)
        return Reply(text, Outcome.LISTED, unique(*(m.id for m in shown)))

    async def export(self, msg: IncomingMessage, lang: str, mention: str) -> Reply:
        if msg.channel_type != "D":
            return Reply(
                texts.only_in_dm(lang, mention, texts.pick(lang, "내보내기", "export")), Outcome.REFUSED
            )
        if self.chat is None:
            return Reply(texts.cannot_upload(lang), Outcome.REFUSED)
        mine = await own_memories(self.store, msg.user_id, current_only=False)
        if not mine:
            return Reply(format_mine({}, lang, self.tz, self.per_scope), Outcome.NOTHING_FOUND)
        day = datetime.fromtimestamp(time.time(), UTC).strftime("%Y%m%d")
        name = f"memories-{day}.jsonl"
        info = await self.chat.upload_file(msg.channel_id, name, to_jsonl(mine), "application/x-ndjson")
        current = sum(1 for m in mine if m.current)
        log.info("memory.exported", count=len(mine), file_id=info.get("id"))
        # the reply carries the file (the writer posts it in the thread, once, like any part)
        text = texts.export_caption(lang, len(mine), current)
        return Reply(text, Outcome.LISTED, unique(*(m.id for m in mine)), file_ids=(str(info["id"]),))
