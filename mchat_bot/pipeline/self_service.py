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
        return texts.pick(
            lang,
            "📋 내가 만든 메모리나 개인 메모리가 아직 없습니다.",
            "📋 You have no memories yet (none written by you, none personal).",
        )
    lines = [texts.pick(lang, f"#### 📋 내 메모리 ({total})", f"#### 📋 Your memories ({total})")]
    for scope, items in groups.items():
        if not items:
            continue
        lines += ["", f"**{_scope_name(scope, lang)}** ({len(items)})"]
        lines += [texts.memory_line(i, m, tz) for i, m in enumerate(items[:per_scope], 1)]
        rest = len(items) - per_scope
        if rest > 0:
            lines.append(texts.pick(lang, f"…외 {rest}개", f"…and {rest} more"))
    lines += [
        "",
        texts.pick(
            lang,
            "현재 버전만 보입니다. 전부(이전 버전 포함) 받으려면 `내보내기`.",
            "Current versions only. For all of them (earlier versions too): `export`.",
        ),
    ]
    return "\n".join(lines)


def _scope_name(scope: str, lang: str) -> str:
    names = {
        "user": ("개인", "Personal"),
        "channel": ("채널", "Channel"),
        "team": ("팀", "Team"),
    }
    ko, en = names.get(scope, (scope, scope))
    return texts.pick(lang, ko, en)


def to_jsonl(memories: Sequence[Memory]) -> bytes:
    return "".join(json.dumps(to_json(m), ensure_ascii=False) + "\n" for m in memories).encode("utf-8")


def only_in_dm(lang: str, mention: str, command: str) -> str:
    return texts.pick(
        lang,
        f"🔒 `{command}`은(는) 봇과의 1:1 DM에서만 됩니다 (개인 메모리가 보이기 때문입니다). "
        f"DM에서 `{mention} {command}`라고 보내 주세요.",
        f"🔒 `{command}` works only in your direct message with the bot (it shows personal memories). "
        f"Send `{mention} {command}` there.",
    )


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
            return Reply(only_in_dm(lang, mention, name), Outcome.REFUSED)
        mine = await own_memories(self.store, msg.user_id, current_only=True)
        groups = by_scope(mine)
        shown = [m for items in groups.values() for m in items[: self.per_scope]]
        text = format_mine(groups, lang, self.tz, self.per_scope)
        return Reply(text, Outcome.LISTED, unique(*(m.id for m in shown)))

    async def export(self, msg: IncomingMessage, lang: str, mention: str) -> Reply:
        if msg.channel_type != "D":
            return Reply(only_in_dm(lang, mention, texts.pick(lang, "내보내기", "export")), Outcome.REFUSED)
        if self.chat is None:
            return Reply(
                texts.pick(lang, "이 봇은 파일을 올릴 수 없습니다.", "This bot cannot upload files here."),
                Outcome.REFUSED,
            )
        mine = await own_memories(self.store, msg.user_id, current_only=False)
        if not mine:
            return Reply(format_mine({}, lang, self.tz, self.per_scope), Outcome.NOTHING_FOUND)
        day = datetime.fromtimestamp(time.time(), UTC).strftime("%Y%m%d")
        name = f"memories-{day}.jsonl"
        info = await self.chat.upload_file(msg.channel_id, name, to_jsonl(mine), "application/x-ndjson")
        current = sum(1 for m in mine if m.current)
        caption = texts.pick(
            lang,
            f"📦 내 메모리 {len(mine)}개 (현재 {current}개, 이전 버전 {len(mine) - current}개)를 JSONL로"
            " 내보냈습니다. 관리자는 `mchat-bot memory import`로 다시 넣을 수 있습니다.",
            f"📦 Your {len(mine)} memories ({current} current, {len(mine) - current} earlier versions) as"
            " JSONL, the format `mchat-bot memory import` reads.",
        )
        await self.chat.create_post(msg.channel_id, caption, root_id=msg.root_id, file_ids=[str(info["id"])])
        log.info("memory.exported", count=len(mine), file_id=info.get("id"))
        # the post carrying the file is the answer: nothing more to post, the ids go to the audit
        return Reply("", Outcome.LISTED, unique(*(m.id for m in mine)))
