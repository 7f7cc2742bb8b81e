"""Every text the bot shows users, in Korean and English, in one module.

The handlers' replies, the door answers, the channel greeting, the notes about edited and deleted
sources. One formatter for all doors. Memories are read by attribute (``memory.store.Memory`` /
``Hit``), so this module needs nothing from the store at run time. Splitting a long reply into
posts belongs to the reply writer (``replying.py``), detecting the asker's language to the router.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mchat_bot.knowledge.lines import Line
    from mchat_bot.memory.store import Hit, Memory
    from mchat_bot.pipeline.summaries import Extract


def pick(lang: str, ko: str, en: str) -> str:
    """The text in the asker's language (``ko`` or anything else = English)."""
    return ko if lang == "ko" else en


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace folded to single spaces, cut at ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def plural(n: int) -> str:
    return "memory" if n == 1 else "memories"


def messages(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


# --- the web doors ---------------------------------------------------------------------------------


def working_on_it(lang: str) -> str:
    return pick(lang, "⏳ 답변을 준비하고 있습니다…", "⏳ Working on it…")


def unknown_slash_command(lang: str, name: str) -> str:
    return pick(lang, f"알 수 없는 명령입니다: /{name}", f"Unknown command: /{name}")


def switched_off_here(lang: str) -> str:
    return pick(lang, "이 채널에서는 봇이 꺼져 있습니다.", "The bot is switched off in this channel.")


def add_the_bot(lang: str) -> str:
    """A slash command in a channel the bot cannot see (it cannot check who may read there)."""
    return pick(
        lang,
        "봇이 이 채널을 볼 수 없습니다. 채널에 봇을 초대한 뒤 다시 시도해 주세요 (`/invite @봇이름`).",
        "The bot cannot see this channel. Invite it to the channel and try again (`/invite @botname`).",
    )


# --- channels --------------------------------------------------------------------------------------


def greeting(mention: str) -> str:
    """Short, in both languages (a channel has no single language)."""
    return (
        "👋 안녕하세요! 저는 AI 메모리 봇입니다. / Hi, I'm the AI Memory Bot.\n"
        f"- `{mention} remember 내용`: 이 채널에 기억합니다 / remember something for this channel\n"
        f"- `{mention} 질문`: 기억한 내용을 근거로 답합니다 / ask, and I answer from what I remember\n"
        f"- `{mention} help`: 자세한 사용법 / all commands"
    )


# --- memories following their source post ----------------------------------------------------------


def source_edited_note(lang: str) -> str:
    return pick(
        lang,
        "_✏️ 원본 메시지가 수정되어 메모리도 새 내용으로 바꿨습니다 (이전 내용은 이력에 남습니다)._",
        "_✏️ The source message was edited, so the memory now says this (the old text stays in its history)._",
    )


def source_deleted_head(lang: str, n: int) -> str:
    return pick(
        lang,
        f"#### 🗑️ 원본 메시지가 삭제되어 메모리 {n}개를 잊었습니다",
        f"#### 🗑️ The source message was deleted, so I forgot {n} {plural(n)}",
    )


def short_id(memory_id: str) -> str:
    """The last 8 characters: the random end of a ULID (its start is a timestamp shared by neighbours)."""
    return memory_id.replace("-", "")[-8:]


def format_date(ts: float, tz: tzinfo | None = None) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d") if tz else _local_date(ts)


def _local_date(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d")


SCOPE_LABELS = {
    "channel": ("이 채팅방", "this channel"),
    "user": ("개인", "personal"),
    "team": ("팀", "team"),
}


def scope_label(scope: str, lang: str) -> str:
    ko, en = SCOPE_LABELS.get(scope, (scope, scope))
    return pick(lang, ko, en)


# --- commands ---------------------------------------------------------------------------------


def format_remembered(memory: Memory, lang: str) -> str:
    """The seed's three lines, then the id that ``forget`` and ``history`` take."""
    if lang == "ko":
        return (
            "#### 🧠 메모리 저장됨\n"
            f"- **내용:** {memory.text}\n"
            f"- **범위:** {scope_label(memory.scope, lang)}\n"
            f"- **카테고리:** {memory.category}\n"
            f"- **ID:** `{memory.id}`"
        )
    return (
        "#### 🧠 Memory saved\n"
        f"- **Content:** {memory.text}\n"
        f"- **Scope:** {scope_label(memory.scope, lang)}\n"
        f"- **Category:** {memory.category}\n"
        f"- **ID:** `{memory.id}`"
    )


# --- what only the asker may read (the reader rule) -----------------------------------------


def only_you_head(lang: str) -> str:
    """Heads what is shown to the asker alone: memories others in the channel may not see."""
    return pick(
        lang,
        "🔒 **나만 보기** · 이 채널의 다른 사람은 볼 수 없는 메모리라 본인에게만 보여 드립니다.",
        "🔒 **Only you can see this** · these memories are not visible to everyone in this channel.",
    )


def withheld_here(lang: str) -> str:
    """The channel's answer when everything found may be read by the asker alone."""
    return pick(
        lang,
        "🔒 관련된 메모리는 본인만 볼 수 있는 메모리라 이 채널에는 게시하지 않습니다.",
        "🔒 What I have on this is not visible to everyone here, so I am not posting it in this channel.",
    )


def withheld_ask_in_dm(lang: str, mention: str) -> str:
    """Posted when the asker alone could not be shown it (no ephemeral posts, no DM)."""
    return pick(
        lang,
        f"🔒 본인만 볼 수 있는 관련 메모리가 있습니다. 저({mention})에게 DM으로 물어보면 보여 드립니다.",
        f"🔒 There is more that only you may see. Ask me ({mention}) in a direct message to see it.",
    )


def withheld_sent_to_dm(lang: str) -> str:
    return pick(
        lang,
        "🔒 본인만 볼 수 있는 관련 메모리는 DM으로 보내 드렸습니다.",
        "🔒 What only you may see, I sent to you in a direct message.",
    )


def format_forgotten_withheld(memory: Memory, lang: str) -> str:
    """The channel's confirmation of a deleted memory others may not see: no text, only the id."""
    sid = short_id(memory.id)
    return pick(
        lang,
        f"#### 🗑️ 메모리 삭제됨\n- **ID:** `{sid}` (본인만 볼 수 있는 메모리라 내용은 게시하지 않습니다)",
        f"#### 🗑️ Memory forgotten\n- **ID:** `{sid}` (not visible to everyone here: its text is not posted)",
    )


def format_scope_refused(lang: str, *, in_dm: bool = False) -> str:
    """`remember --team` from a private channel (or a DM) by someone who is not a team admin."""
    if in_dm:
        return pick(
            lang,
            "🚫 DM에는 팀이 없어 팀 메모리를 만들 수 없습니다. 저장하지 않았습니다. "
            "팀의 공개 채널에서 `remember 팀: 내용`으로 요청해 주세요.",
            "🚫 A DM has no team, so no team memory can be made here. Use `remember --team TEXT` in one of "
            "the team's public channels. Nothing was saved.",
        )
    return pick(
        lang,
        "🚫 팀 메모리는 공개 채널에서만(또는 관리자만) 만들 수 있습니다. 저장하지 않았습니다. "
        "이 채팅방에만 기억하려면 `remember 내용`을 쓰세요.",
        "🚫 Team memories can only be made from a public channel (or by a team admin). Nothing was saved. "
        "To remember it in this channel only, use `remember TEXT`.",
    )


def format_already_known(memory: Memory, lang: str) -> str:
    sid = short_id(memory.id)
    return pick(
        lang,
        f"🧠 이미 기억하고 있습니다: {one_line(memory.text)} (`{sid}`)",
        f"🧠 I already remember that: {one_line(memory.text)} (`{sid}`)",
    )


def format_replaced(old: Memory, lang: str, action: str = "update") -> str:
    """Appended to the saved reply when the new memory replaced (or retired) an older one."""
    sid, text = short_id(old.id), one_line(old.text, 120)
    if action == "delete":
        return pick(
            lang,
            f"♻️ 더 이상 유효하지 않음으로 표시: {text} (`{sid}`)",
            f"♻️ Marked no longer valid: {text} (`{sid}`)",
        )
    return pick(
        lang, f"♻️ 이전 내용을 대체했습니다: {text} (`{sid}`)", f"♻️ Replaces the earlier: {text} (`{sid}`)"
    )


def format_history(chain: Sequence[Memory], lang: str, tz: tzinfo | None = None) -> str:
    """Oldest first, each with the time it held: ``2026-11-20 ~ 2026-11-25`` or ``~ 현재``."""
    if not chain:
        return pick(lang, "이력을 찾을 수 없습니다.", "No history found.")
    head = pick(lang, f"#### 🕘 메모리 이력 ({len(chain)})", f"#### 🕘 Memory history ({len(chain)})")
    now = pick(lang, "현재", "now")
    lines = [head]
    for i, m in enumerate(chain, 1):
        start = format_date(m.valid_from or m.created_at, tz)
        end = format_date(m.valid_until, tz) if m.valid_until > 0 else now
        mark = " ✅" if m.valid_until <= 0 else ""
        lines.append(
            f"{i}. `{short_id(m.id)}` {start} ~ {end}{mark}: {one_line(m.text)} — {m.user_name or '?'}"
        )
    return "\n".join(lines)


def format_extracted(memories: Sequence[Memory], lang: str) -> str:
    """Appended to an answer in an extraction channel: what was remembered from the message."""
    items = "; ".join(f"{one_line(m.text, 120)} (`{short_id(m.id)}`, {m.category})" for m in memories)
    return pick(lang, f"🧠 기억해 둠: {items}", f"🧠 Remembered: {items}")


def format_sensitive_masked(count: int, kinds: str, lang: str) -> str:
    """Appended to the saved reply: what kinds were masked (``kinds`` names kinds, never values)."""
    return pick(
        lang,
        f"🔒 민감정보 {count}건({kinds})을 가려서 저장했습니다.",
        f"🔒 Masked {count} sensitive item{'s' if count != 1 else ''} ({kinds}) before saving.",
    )


def format_sensitive_refused(kinds: str, lang: str) -> str:
    return pick(
        lang,
        f"🔒 민감정보({kinds})가 포함되어 있어 저장하지 않았습니다. 해당 부분을 빼고 다시 요청해 주세요.",
        f"🔒 Not saved: the text contains sensitive data ({kinds}). Remove it and try again.",
    )


def memory_line(i: int, memory: Memory, tz: tzinfo | None, score: float | None = None, was: str = "") -> str:
    score_txt = f" ({score:.2f})" if score is not None else ""
    was_txt = f" {was}" if was else ""
    if memory.is_message:  # a channel message: no id to forget, a link to the post instead
        return (
            f"{i}. 💬{score_txt} {one_line(memory.shown)} — {memory.user_name or '?'},"
            f" {format_date(memory.created_at, tz)} ({memory.permalink})"
        )
    return (
        f"{i}. `{short_id(memory.id)}`{score_txt} {one_line(memory.text)}{was_txt}"
        f" — {memory.user_name or '?'}, {format_date(memory.created_at, tz)}"
    )


def changed_part(old_text: str, new_text: str) -> str:
    """What the old version said that the new one does not ("12%"), or the old text when unclear."""
    new_words = set(new_text.split())
    diff = [w for w in old_text.split() if w not in new_words]
    part = " ".join(diff)
    return part if part and len(part) <= 60 else one_line(old_text, 80)


def was_note(old: Memory, new: Memory, lang: str, tz: tzinfo | None = None) -> str:
    """``(이전: 12%, 2026-11-20까지)`` / ``(was 12% until 2026-11-20)``."""
    part = changed_part(old.text, new.text)
    until = format_date(old.valid_until or new.created_at, tz)
    return pick(lang, f"(이전: {part}, {until}까지)", f"(was {part} until {until})")


def format_search(
    query: str,
    hits: Sequence[Hit],
    lang: str,
    tz: tzinfo | None = None,
    previous: Mapping[str, Memory] | None = None,
) -> str:
    """`previous` maps a hit's id to the version it replaced, shown as "(was ... until ...)"."""
    if not hits:
        q = one_line(query, 80)
        return pick(lang, f"🔎 `{q}`와(과) 맞는 메모리가 없습니다.", f"🔎 No memories match `{q}`.")
    q = one_line(query, 80)
    head = pick(lang, f"#### 🔎 검색 결과: {q}", f"#### 🔎 Search results: {q}")
    prev = previous or {}
    lines = [
        memory_line(
            i,
            h.memory,
            tz,
            h.score,
            was_note(prev[h.memory.id], h.memory, lang, tz) if h.memory.id in prev else "",
        )
        for i, h in enumerate(hits, 1)
    ]
    tail = pick(lang, "_(ID, 유사도 점수; 💬 채널 대화)_", "_(id, similarity score; 💬 channel message)_")
    return "\n".join([head, *lines, tail])


def format_memories(memories: Sequence[Memory], lang: str, tz: tzinfo | None = None) -> str:
    if not memories:
        return pick(lang, "📋 여기서 볼 수 있는 메모리가 아직 없습니다.", "📋 No memories saved here yet.")
    head = pick(lang, f"#### 📋 최근 메모리 ({len(memories)})", f"#### 📋 Recent memories ({len(memories)})")
    return "\n".join([head, *(memory_line(i, m, tz) for i, m in enumerate(memories, 1))])


def format_forgotten(memory: Memory, lang: str) -> str:
    text, sid = one_line(memory.text), short_id(memory.id)
    if lang == "ko":
        return f"#### 🗑️ 메모리 삭제됨\n- **내용:** {text}\n- **ID:** `{sid}`"
    return f"#### 🗑️ Memory forgotten\n- **Content:** {text}\n- **ID:** `{sid}`"


def format_forget_not_found(ref: str, lang: str) -> str:
    # One message for "no such id" and "not yours to see": existence of a hidden memory must not leak.
    return pick(
        lang,
        f"ID `{ref}`인 메모리를 찾을 수 없거나, 여기서 삭제할 수 없는 메모리입니다.",
        f"No memory with id `{ref}` that you can delete here.",
    )


def format_history_not_found(ref: str, lang: str) -> str:
    return pick(
        lang,
        f"ID `{ref}`인 메모리를 찾을 수 없거나, 여기서 볼 수 없는 메모리입니다.",
        f"No memory with id `{ref}` that you can see here.",
    )


def format_forget_ambiguous(ref: str, lang: str) -> str:
    return pick(
        lang,
        f"ID `{ref}`로 시작하는 메모리가 여러 개입니다. 더 긴 ID를 입력해 주세요.",
        f"Several memories start with `{ref}`; please give a longer id.",
    )


def format_forget_candidates(query: str, hits: Sequence[Hit], lang: str, tz: tzinfo | None = None) -> str:
    if not hits:
        q = one_line(query, 80)
        return pick(
            lang,
            f"🗑️ `{q}`와(과) 맞는 메모리가 없어 아무것도 삭제하지 않았습니다.",
            f"🗑️ Nothing matches `{q}`; nothing was deleted.",
        )
    head = pick(
        lang,
        "#### 🗑️ 삭제할 메모리의 ID를 골라 주세요 (아직 아무것도 삭제하지 않았습니다)",
        "#### 🗑️ Which memory should I forget? (nothing deleted yet)",
    )
    lines = [memory_line(i, h.memory, tz, h.score) for i, h in enumerate(hits, 1)]
    tail = pick(lang, "삭제하려면: `@ai forget <ID>`", "To delete one: `@ai forget <id>`")
    return "\n".join([head, *lines, "", tail])


def format_usage(command: str, lang: str) -> str:
    ko = {
        "remember": "사용법: `@ai remember 기억할 내용`",
        "search": "사용법: `@ai search 검색어`",
        "history": "사용법: `@ai history <ID>` (이력)",
        "forget": "사용법: `@ai forget <ID>` 또는 `@ai forget 검색어` (후보를 보여 드립니다)",
        "learn": "사용법: `@ai 학습 켜기`, `@ai 학습 끄기` (`--forget`: 배운 내용도 삭제), `@ai 학습 상태`",
        "summarize": (
            "사용법: `@ai 요약` (스레드 안: 그 스레드), `@ai 요약 오늘|어제|이번 주`, `@ai 요약 #채널`"
        ),
    }
    en = {
        "remember": "Usage: `@ai remember TEXT`",
        "search": "Usage: `@ai search QUERY`",
        "history": "Usage: `@ai history <id>`",
        "forget": "Usage: `@ai forget <id>` or `@ai forget QUERY` (shows candidates)",
        "learn": (
            "Usage: `@ai learn on`, `@ai learn off` (`--forget`: delete what was learned), `@ai learn status`"
        ),
        "summarize": (
            "Usage: `@ai summarize` (in a thread: that thread),"
            " `@ai summarize today|24h|this week|since monday`, `@ai summarize #channel`"
        ),
    }
    return pick(lang, ko.get(command, ""), en.get(command, "")) or format_help(lang)


def format_help(lang: str, mention: str = "@ai") -> str:
    if lang == "ko":
        return (
            "#### 🤖 AI 메모리 봇 사용법\n"
            f"채널에서는 `{mention}`으로 불러 주세요 (DM에서는 필요 없습니다).\n"
            f"- `{mention} remember 내용` (기억, 기억해): 이 채팅방에 기억합니다\n"
            f"- `{mention} remember 개인: 내용` (`--me`): 나만, 어느 채널에서든 볼 수 있게 기억합니다\n"
            f"- `{mention} remember 팀: 내용` (`--team`): 팀 전체가 보도록 기억합니다 (공개 채널에서만)\n"
            f"- `{mention} search 검색어` (검색, 찾아): 기억한 내용을 ID와 점수와 함께 찾습니다\n"
            f"- `{mention} forget ID` (삭제, 잊어): 메모리를 삭제합니다. 검색어를 주면 후보만 보여 줍니다\n"
            f"- `{mention} memories` (목록): 최근 메모리를 보여 줍니다\n"
            f"- `{mention} history ID` (이력): 메모리가 어떻게 바뀌어 왔는지 보여 줍니다\n"
            f"- `{mention} 내 메모리` (`my memories`, DM에서): 내가 쓴 메모리와 개인 메모리를 범위별로\n"
            f"- `{mention} 내보내기` (`export`, DM에서): 그 메모리 전부(이전 버전 포함)를 JSONL 파일로\n"
            f"- `{mention} 나를 잊어줘` (`forget me`, DM에서): 개인 메모리와 학습된 대화 속 내 메시지를"
            " 지웁니다 (먼저 무엇을 지울지 보여 주고, `확인`해야 지웁니다)\n"
            f"- `{mention} 학습 켜기` / `학습 끄기` (`learn on/off`, 채널 관리자):"
            " 이 채널의 대화를 배워 답에 씁니다\n"
            f"- `{mention} 요약` (정리해줘, `summarize`): 스레드 안에서는 그 스레드를, 채널에서는"
            " 기간(`오늘`, `어제`, `이번 주`, 기본 24시간)의 대화를 요약합니다. `#채널`로 다른 채널도\n"
            f"- `{mention} help` (도움말): 이 안내\n"
            f"- 그 밖의 말은 질문으로 보고, 기억한 내용을 근거로 출처와 함께 답합니다"
        )
    return (
        "#### 🤖 AI Memory Bot help\n"
        f"In a channel, mention me with `{mention}` (not needed in a DM).\n"
        f"- `{mention} remember TEXT`: remember TEXT in this channel\n"
        f"- `{mention} remember --me TEXT`: personal, visible only to you, in any channel\n"
        f"- `{mention} remember --team TEXT`: visible in all of the team's channels (from a public channel)\n"
        f"- `{mention} search QUERY`: find memories, with ids and scores\n"
        f"- `{mention} forget ID`: delete a memory; with a query, only show candidates\n"
        f"- `{mention} memories`: list recent memories\n"
        f"- `{mention} history ID`: how a memory changed over time\n"
        f"- `{mention} my memories` (in the DM): the memories you wrote and your personal ones, by scope\n"
        f"- `{mention} export` (in the DM): all of them (earlier versions too) as a JSONL file\n"
        f"- `{mention} forget me` (in the DM): delete your personal memories and your messages in the"
        " learned conversations (it shows what first; `forget me confirm` deletes)\n"
        f"- `{mention} learn on` / `learn off` (channel admins): learn from this channel's conversation\n"
        f"- `{mention} summarize` (in a thread: the thread; in a learning channel: `today`, `24h`,"
        " `this week`, `since monday`, by default 24 h; `#channel` for another)\n"
        f"- `{mention} help`: this text\n"
        f"- anything else is a question: I answer from what I remember and cite the sources"
    )


# --- answers ----------------------------------------------------------------------------------


def format_source(
    n: int, memory: Memory, lang: str, *, channel_name: str = "", tz: tzinfo | None = None
) -> str:
    """``[1] 김과장, 2026-11-25, #품질검사 (permalink)``."""
    bits = [memory.user_name or "?", format_date(memory.created_at, tz)]
    if channel_name:
        bits.append(f"#{channel_name}")
    line = f"[{n}] " + ", ".join(bits)
    if memory.permalink:
        line += f" ({memory.permalink})"
    return line


def format_retrieval_only(
    hits: Sequence[Hit], lang: str, previous: Mapping[str, Memory] | None = None, tz: tzinfo | None = None
) -> str:
    """The answer when no LLM is configured: quote the best memories (and what they replaced)."""
    if not hits:
        return no_memories_found(lang)
    prev = previous or {}
    head = pick(
        lang,
        "LLM이 설정되어 있지 않아, 관련된 메모리를 그대로 보여 드립니다:",
        "No LLM is configured, so here are the most relevant memories:",
    )
    lines = []
    for i, h in enumerate(hits, 1):
        was = f" {was_note(prev[h.memory.id], h.memory, lang, tz)}" if h.memory.id in prev else ""
        said = f" — {h.memory.user_name or '?'}" if h.memory.is_message else ""
        lines.append(f"> [{i}] {one_line(h.memory.shown, 1000)}{was}{said}")
    return "\n".join([head, *lines])


def format_withheld_memories(
    hits: Sequence[Hit], lang: str, previous: Mapping[str, Memory] | None = None, tz: tzinfo | None = None
) -> str:
    """A question's memories that only the asker may read, quoted with their ids."""
    prev = previous or {}
    head = pick(lang, "관련된 메모리:", "What I have on this:")
    lines = []
    for i, h in enumerate(hits, 1):
        was = f" {was_note(prev[h.memory.id], h.memory, lang, tz)}" if h.memory.id in prev else ""
        lines.append(f"> [{i}] {one_line(h.memory.text, 1000)}{was} `{short_id(h.memory.id)}`")
    return "\n".join([head, *lines])


def no_memories_found(lang: str) -> str:
    return pick(
        lang,
        "그에 관한 메모리가 없습니다. `@ai remember 내용`으로 알려 주세요.",
        "I have no memory about that. Teach me with `@ai remember TEXT`.",
    )


def llm_error(lang: str) -> str:
    return pick(
        lang,
        "죄송합니다. 지금은 답변을 만들 수 없습니다 (LLM 응답 오류). 잠시 후 다시 시도해 주세요.",
        "Sorry, I can't answer right now (the language model did not respond). Please try again later.",
    )


def internal_error(lang: str) -> str:
    return pick(
        lang,
        "죄송합니다. 요청을 처리하는 중 오류가 발생했습니다. 잠시 후 다시 시도해 주세요.",
        "Sorry, something went wrong while handling that. Please try again later.",
    )


def _waited(waited: float) -> tuple[str, str]:
    if waited < 120:
        return f"{int(waited)}초", f"{int(waited)} s"
    if waited < 7200:
        return f"{int(waited // 60)}분", f"{int(waited // 60)} min"
    return f"{int(waited // 3600)}시간", f"{int(waited // 3600)} h"


def late_note(lang: str, waited: float, *, away: bool = True) -> str:
    """The first line of an answer given long after its question: the bot was away (``away``), or
    the question waited behind many others while the bot was there all along."""
    ko, en = _waited(waited)
    if not away:
        return pick(
            lang,
            f"_⏰ 질문이 한꺼번에 몰려 답이 늦었습니다 (질문 후 {ko})._",
            f"_⏰ Sorry for the wait: many questions came in at once (asked {en} ago)._",
        )
    return pick(
        lang,
        f"_⏰ 봇이 잠시 오프라인이어서 밀린 메시지에 답하는 중입니다 (질문 후 {ko})._",
        f"_⏰ I was offline for a while and am catching up on missed messages (asked {en} ago)._",
    )


def delivery_failed(lang: str) -> str:
    return pick(
        lang,
        "죄송합니다. 답변을 보내지 못했습니다. 다시 요청해 주세요.",
        "Sorry, I could not deliver my answer. Please ask again.",
    )


def cited_numbers(answer: str, n: int) -> list[int]:
    """[k] markers in the answer that refer to one of the n memories, in order of first use."""
    seen: list[int] = []
    for m in re.finditer(r"\[(\d{1,3})\]", answer):
        k = int(m.group(1))
        if 1 <= k <= n and k not in seen:
            seen.append(k)
    return sorted(seen)


def join_sources(answer: str, sources: Iterable[str]) -> str:
    lines = list(sources)
    return answer.rstrip() + ("\n\n" + "\n".join(lines) if lines else "")


# --- attachments -----------------------------------------------------------------------------------


def kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 1024 else f"{n} B"


def attached_files_head(lang: str) -> str:
    return pick(lang, "#### 📄 첨부 파일", "#### 📄 Attached files")


def file_unreadable(lang: str) -> str:
    return pick(lang, "- (읽을 수 없는 파일)", "- (a file I could not read)")


def file_not_text(lang: str, name: str) -> str:
    return pick(
        lang,
        f"- `{name}`: 텍스트(.txt)나 마크다운(.md) 파일만 기억할 수 있어 건너뛰었습니다.",
        f"- `{name}`: skipped; I can only remember text (.txt) and Markdown (.md) files.",
    )


def file_too_large(lang: str, name: str, size: int, limit: int) -> str:
    return pick(
        lang,
        f"- `{name}` ({kib(size)}): 너무 커서 저장하지 않았습니다. 최대 {kib(limit)}까지 "
        "기억할 수 있습니다. 나누어 올리거나 핵심만 `remember`로 알려 주세요.",
        f"- `{name}` ({kib(size)}): not saved, too large. The limit is {kib(limit)}; "
        "split the file, or `remember` the key points.",
    )


def file_download_failed(lang: str, name: str) -> str:
    return pick(lang, f"- `{name}`: 내려받지 못했습니다.", f"- `{name}`: could not be downloaded.")


def file_not_utf8(lang: str, name: str) -> str:
    return pick(
        lang,
        f"- `{name}`: UTF-8 텍스트가 아니어서 건너뛰었습니다.",
        f"- `{name}`: skipped; not UTF-8 text.",
    )


def file_masked(lang: str, kinds: str) -> str:
    return pick(lang, f"(민감정보 {kinds} 가림)", f"(masked: {kinds})")


def file_empty(lang: str, name: str) -> str:
    return pick(lang, f"- `{name}`: 빈 파일입니다.", f"- `{name}`: the file is empty.")


def file_saved(lang: str, name: str, size: int, pieces: int, masked: str) -> str:
    return pick(
        lang,
        f"- `{name}` ({kib(size)}): 메모리 {pieces}개로 나누어 저장했습니다.{masked}",
        f"- `{name}` ({kib(size)}): saved as {pieces} {plural(pieces)}.{masked}",
    )


# --- channel knowledge --------------------------------------------------------------------------


def learn_not_here(lang: str) -> str:
    return pick(
        lang,
        "DM과 그룹 메시지에서는 학습하지 않습니다. 채널에서 `@ai 학습 켜기`를 해 주세요.",
        "Direct and group messages never learn. Say `@ai learn on` in a channel.",
    )


def learn_refused(lang: str) -> str:
    return pick(
        lang,
        "🔒 학습은 이 채널의 관리자(또는 시스템 관리자)만 켜고 끌 수 있습니다.",
        "🔒 Only an admin of this channel (or a system admin) can turn learning on or off.",
    )


def learn_on_notice(lang: str, days: int) -> str:
    if lang == "ko":
        return (
            "#### 📚 이 채널의 대화를 학습합니다\n"
            "- **보관하는 것:** 이 채널에 올라오는 사람의 글(작성자, 시각, 스레드, 링크)."
            " 민감정보는 가린 뒤 저장합니다.\n"
            f"- **보관 기간:** {days}일. 글을 고치면 다시 배우고, 지우면 잊습니다.\n"
            "- **쓰는 곳:** 이 채널에서 받은 질문에만 답의 근거(링크)로 씁니다."
            " 다른 채널에는 나오지 않습니다.\n"
            "- **그만두기:** `@ai 학습 끄기` (배운 것까지 지우려면 `@ai 학습 끄기 --forget`)"
        )
    return (
        "#### 📚 Learning from this channel\n"
        "- **What is kept:** people's posts here (author, time, thread, link),"
        " with sensitive data masked first.\n"
        f"- **For how long:** {days} days. An edited post is learned again; a deleted one is forgotten.\n"
        "- **Where it is used:** only to answer questions asked in this channel, cited by link;"
        " never elsewhere.\n"
        "- **To stop:** `@ai learn off` (`@ai learn off --forget` also deletes what was learned)"
    )


def learn_off(lang: str, forgot: bool, removed: int) -> str:
    if forgot:
        return pick(
            lang,
            f"📚 학습을 껐고, 배운 글 {removed}개를 삭제했습니다.",
            f"📚 Learning is off, and {messages(removed)} learned here are deleted.",
        )
    return pick(
        lang,
        "📚 학습을 껐습니다. 이미 배운 글은 남아 있습니다 (`@ai 학습 끄기 --forget`으로 삭제).",
        "📚 Learning is off. What was learned stays (`@ai learn off --forget` deletes it).",
    )


def learn_status(lang: str, on: bool, size: int, days: int) -> str:
    if lang == "ko":
        state = "켜져 있습니다" if on else "꺼져 있습니다"
        return f"📚 이 채널의 학습은 {state}. 배운 글 {size}개, 보관 기간 {days}일."
    state = "on" if on else "off"
    return f"📚 Learning is {state} in this channel: {messages(size)} kept, for {days} days."


def backfill_progress(lang: str, kept: int, oldest_ms: int, *, done: bool) -> str:
    """The line a backfill posts in the channel and edits as it reads."""
    back_to = _local_date(oldest_ms / 1000) if oldest_ms else ""
    if lang == "ko":
        if done:
            return f"📚 이 채널의 이전 글 {kept}개를 배웠습니다" + (f" ({back_to}까지)." if back_to else ".")
        return (
            f"📚 이 채널의 이전 글을 읽는 중입니다: {kept}개" + (f", {back_to}까지" if back_to else "") + "…"
        )
    if done:
        return f"📚 Learned {messages(kept)} from this channel's history" + (
            f" (back to {back_to})." if back_to else "."
        )
    return (
        f"📚 Reading this channel's history: {messages(kept)} so far"
        + (f", back to {back_to}" if back_to else "")
        + "…"
    )


# --- summaries ------------------------------------------------------------------------------------


def _period_label(lang: str, label: str) -> str:
    if label == "24h":
        return pick(lang, "지난 24시간", "the last 24 hours")
    return label


def summary_head(lang: str, where: str, label: str, n: int) -> str:
    """``#### 📝 #qa 요약 (오늘, 글 300개)``; a thread has no period."""
    period = f"{_period_label(lang, label)}, " if label else ""
    return pick(
        lang,
        f"#### 📝 {where} 요약 ({period}글 {n}개)",
        f"#### 📝 Summary of {where} ({period}{messages(n)})",
    )


def summary_empty(lang: str, where: str, label: str) -> str:
    period = _period_label(lang, label)
    if not label:
        return pick(
            lang, f"📝 {where}에는 요약할 글이 없습니다.", f"📝 There is nothing to summarise in {where}."
        )
    return pick(
        lang,
        f"📝 {where}에는 {period} 동안 올라온 글이 없습니다.",
        f"📝 Nothing was said in {where} in {period}.",
    )


def summary_sampled(lang: str, read: int, total: int) -> str:
    return pick(
        lang,
        f"_글이 많아 {total}개 중 고르게 {read}개만 읽었습니다 (knowledge.summary_budget_tokens)._",
        f"_A long history: I read an even sample of {read} of its {total} messages"
        " (knowledge.summary_budget_tokens)._",
    )


def line_time(line: Line, tz: tzinfo, with_date: bool) -> str:
    """``09:41``, or ``12-02 09:41`` when a summary spans days."""
    at = datetime.fromtimestamp(line.create_at / 1000, tz)
    return at.strftime("%m-%d %H:%M" if with_date else "%H:%M")


def summary_source(n: int, line: Line, link: str, tz: tzinfo, with_date: bool) -> str:
    """``[3] kim, 09:41 (permalink)``."""
    return f"[{n}] {line.user_name or '?'}, {line_time(line, tz, with_date)} ({link})"


def format_extractive(
    head: str,
    lines: Sequence[Line],
    picks: Extract,
    lang: str,
    links: Sequence[str],
    tz: tzinfo,
    with_date: bool,
) -> str:
    """The summary without an LLM: labelled as such, each line quoted with its permalink."""
    label = pick(
        lang, "_LLM 없이 뽑은 요약 (원문 발췌)_", "_Extractive summary (no LLM): the messages themselves_"
    )
    parts = [head, label]
    names = (
        ("decisions", "**결정으로 보이는 글**", "**Looks like decisions**"),
        ("questions", "**질문**", "**Questions**"),
        ("tasks", "**할 일로 보이는 글**", "**Looks like tasks**"),
        ("central", "**가장 많이 이어진 이야기**", "**Most central messages**"),
    )
    for attr, ko, en in names:
        chosen: list[int] = getattr(picks, attr)
        if not chosen:
            continue
        items = [
            f"- {one_line(lines[i].text, 300)} — {lines[i].user_name or '?'},"
            f" {line_time(lines[i], tz, with_date)} ({links[i]})"
            for i in chosen
        ]
        parts.append("\n".join([pick(lang, ko, en), *items]))
    return "\n\n".join(parts)


def summary_not_in_dm(lang: str, mention: str) -> str:
    return pick(
        lang,
        "📝 DM과 그룹 메시지는 학습하지 않아 요약할 기록이 없습니다."
        f" 스레드 안에서 `{mention} 요약`을 하거나,"
        f" 채널을 지정해 주세요 (`{mention} 요약 #채널`, 팀의 채널에서).",
        f"📝 Direct and group messages are not kept, so there is no history to summarise. Say"
        f" `{mention} summarize` in a thread, or name a channel"
        f" (`{mention} summarize #channel`, in the team).",
    )


def summary_not_learning(lang: str, mention: str, name: str = "") -> str:
    where = f"#{name}" if name else pick(lang, "이 채널", "this channel")
    return pick(
        lang,
        f"📝 {where}은(는) 대화를 학습하지 않아 요약할 기록이 없습니다. 채널 관리자가 그 채널에서"
        f" `{mention} 학습 켜기`를 하면 그때부터 요약할 수 있습니다 (스레드는 언제든 스레드 안에서"
        f" `{mention} 요약`).",
        f"📝 {where} does not learn, so I keep no history of it to summarise. A channel admin can say"
        f" `{mention} learn on` there; summaries work from then on (a thread can always be summarised:"
        f" `{mention} summarize` in the thread).",
    )


def summary_no_channel(lang: str, name: str) -> str:
    return pick(
        lang,
        f"📝 이 팀에 `#{name}` 채널이 없거나, 본인이 그 채널의 멤버가 아닙니다.",
        f"📝 There is no channel `#{name}` in this team that you are a member of.",
    )


def summary_bot_not_in(lang: str, name: str) -> str:
    return pick(
        lang,
        f"📝 저는 `#{name}` 채널에 없어 그 대화를 알지 못합니다. 채널에 초대해 주세요.",
        f"📝 I am not in `#{name}`, so I do not know what was said there. Invite me first.",
    )


def summary_sent_privately(lang: str, where: str) -> str:
    return pick(
        lang,
        f"🔒 {where}의 요약은 그 채널의 멤버만 볼 수 있어 본인에게만 보내 드렸습니다.",
        f"🔒 A summary of {where} is for its members: I sent it to you alone.",
    )


def summary_llm_failed(lang: str) -> str:
    return pick(
        lang,
        "_⚠️ LLM이 응답하지 않아, LLM 없이 뽑은 요약을 드립니다._",
        "_⚠️ The language model did not respond, so here is a summary made without it._",
    )


# -- self-service: my memories, export, forget me ------------------------------------------------


def scope_name(scope: str, lang: str) -> str:
    names = {"user": ("개인", "Personal"), "channel": ("채널", "Channel"), "team": ("팀", "Team")}
    ko, en = names.get(scope, (scope, scope))
    return pick(lang, ko, en)


def mine_empty(lang: str) -> str:
    return pick(
        lang,
        "📋 내가 만든 메모리나 개인 메모리가 아직 없습니다.",
        "📋 You have no memories yet (none written by you, none personal).",
    )


def mine_head(lang: str, total: int) -> str:
    return pick(lang, f"#### 📋 내 메모리 ({total})", f"#### 📋 Your memories ({total})")


def more_items(lang: str, rest: int) -> str:
    return pick(lang, f"…외 {rest}개", f"…and {rest} more")


def mine_footer(lang: str) -> str:
    return pick(
        lang,
        "현재 버전만 보입니다. 전부(이전 버전 포함) 받으려면 `내보내기`.",
        "Current versions only. For all of them (earlier versions too): `export`.",
    )


def only_in_dm(lang: str, mention: str, command: str) -> str:
    return pick(
        lang,
        f"🔒 `{command}`은(는) 봇과의 1:1 DM에서만 됩니다 (개인 메모리가 보이기 때문입니다). "
        f"DM에서 `{mention} {command}`라고 보내 주세요.",
        f"🔒 `{command}` works only in your direct message with the bot (it shows personal memories). "
        f"Send `{mention} {command}` there.",
    )


def cannot_upload(lang: str) -> str:
    return pick(lang, "이 봇은 여기에 파일을 올릴 수 없습니다.", "This bot cannot upload files here.")


def export_caption(lang: str, total: int, current: int) -> str:
    return pick(
        lang,
        f"📦 내 메모리 {total}개 (현재 {current}개, 이전 버전 {total - current}개)를 JSONL로"
        " 내보냈습니다. 관리자는 `mchat-bot memory import`로 다시 넣을 수 있습니다.",
        f"📦 Your {total} memories ({current} current, {total - current} earlier versions) as"
        " JSONL, the format `mchat-bot memory import` reads.",
    )


def forget_me_command(lang: str, *, confirm: bool = False, everything: bool = False) -> str:
    ko = "나를 잊어줘" + (" 확인" if confirm else "") + (" 전부" if everything else "")
    en = "forget me" + (" confirm" if confirm else "") + (" all" if everything else "")
    return pick(lang, ko, en)


def forget_me_nothing(lang: str) -> str:
    return pick(
        lang,
        "🧹 지울 것이 없습니다: 개인 메모리도, 학습된 대화 속 내 메시지도,"
        " 내가 쓴 채널·팀 메모리도 없습니다.",
        "🧹 Nothing to forget: no personal memories, none of your messages in the learned channels,"
        " no channel or team memories written by you.",
    )


def forget_me_preview(
    lang: str,
    mention: str,
    *,
    personal: int,
    messages_n: int,
    channels: int,
    authored: Sequence[str],
    authored_total: int,
) -> str:
    """What ``forget me`` would delete, and how to confirm (nothing is deleted yet)."""
    lines = [
        pick(
            lang,
            "#### 🧹 나를 잊기: 아래를 삭제합니다 (아직 아무것도 지우지 않았습니다)",
            "#### 🧹 Forget me: this is what would be deleted (nothing deleted yet)",
        ),
        pick(
            lang,
            f"- 개인 메모리 {personal}개 (이전 버전 포함)",
            f"- {personal} personal memories (earlier versions too)",
        ),
        pick(
            lang,
            f"- 학습된 대화 속 내 메시지 {messages_n}개 (채널 {channels}곳)",
            f"- {messages(messages_n)} of yours in the learned conversations ({channels} channels)",
        ),
    ]
    if authored_total:
        lines += [
            "",
            pick(
                lang,
                f"내가 쓴 채널·팀 메모리 {authored_total}개는 다른 사람도 쓰는 것이라 따로 고릅니다:",
                f"The {authored_total} channel and team memories you wrote are shared with others;"
                " you choose:",
            ),
            *authored,
        ]
        if authored_total > len(authored):
            lines.append(more_items(lang, authored_total - len(authored)))
    confirm = forget_me_command(lang, confirm=True)
    everything = forget_me_command(lang, confirm=True, everything=True)
    lines += [
        "",
        pick(
            lang,
            f"확인하려면 `{mention} {confirm}`"
            + (f", 채널·팀 메모리까지 지우려면 `{mention} {everything}`." if authored_total else "."),
            f"To confirm: `{mention} {confirm}`"
            + (
                f"; to delete the channel and team memories too: `{mention} {everything}`."
                if authored_total
                else "."
            ),
        ),
    ]
    return "\n".join(lines)


def forget_me_receipt(
    lang: str, *, personal: int, messages_n: int, channels: int, authored: int, kept: int
) -> str:
    """What ``forget me`` deleted, by kind (counts only: the audit keeps these, never the texts)."""
    lines = [
        pick(lang, "#### 🧹 잊었습니다", "#### 🧹 Forgotten"),
        pick(lang, f"- 개인 메모리 {personal}개", f"- {personal} personal memories"),
        pick(
            lang,
            f"- 학습된 대화 속 내 메시지 {messages_n}개 (채널 {channels}곳)",
            f"- {messages(messages_n)} of yours in the learned conversations ({channels} channels)",
        ),
        pick(
            lang,
            f"- 내가 쓴 채널·팀 메모리 {authored}개",
            f"- {authored} channel and team memories you wrote",
        ),
    ]
    if kept:
        lines.append(
            pick(
                lang,
                f"채널·팀 메모리 {kept}개는 남겨 두었습니다 (`forget ID`로 하나씩 지울 수 있습니다).",
                f"{kept} channel and team memories were kept (`forget ID` deletes one).",
            )
        )
    lines.append(
        pick(
            lang,
            "감사 기록에는 이 작업과 개수만 남고, 내용은 남지 않습니다.",
            "The audit log keeps this action and the counts, never the texts.",
        )
    )
    return "\n".join(lines)


# -- buttons: labels on the replies, and what a click answers -------------------------------------


def button_undo(lang: str) -> str:
    return pick(lang, "↩️ 되돌리기", "↩️ Undo")


def button_forget(i: int, memory: Memory, lang: str) -> str:
    return pick(lang, f"🗑️ {i}번 삭제", f"🗑️ Forget {i}") + f": {one_line(memory.text, 40)}"


def button_forget_me(lang: str, *, everything: bool = False) -> str:
    if everything:
        return pick(lang, "🧹 채널·팀 메모리까지 모두 지우기", "🧹 Forget me and what I wrote in channels")
    return pick(lang, "🧹 나를 잊기", "🧹 Forget me")


def button_keep(memory: Memory, lang: str) -> str:
    return pick(lang, "이쪽이 맞음", "This one") + f": {one_line(memory.text, 50)}"


def format_conflict(new: Memory, old: Memory, lang: str, tz: tzinfo | None = None) -> str:
    """A new team/channel memory contradicts one by another author: both kept until someone chooses."""
    who_new, who_old = new.user_name or "?", old.user_name or "?"
    return pick(
        lang,
        "#### ⚖️ 어느 쪽이 맞나요?\n"
        f"새 메모리가 @{who_old}님의 메모리와 어긋납니다. 고를 때까지 둘 다 남겨 둡니다.\n"
        f"- **새 메모리** (@{who_new}): {one_line(new.text, 200)} (`{short_id(new.id)}`)\n"
        f"- **이전 메모리** (@{who_old}, {format_date(old.created_at, tz)}): {one_line(old.text, 200)}"
        f" (`{short_id(old.id)}`)\n"
        "두 작성자나 채널 관리자가 아래에서 고를 수 있습니다.",
        "#### ⚖️ Which is right?\n"
        f"The new memory contradicts one by @{who_old}. Both are kept until someone chooses.\n"
        f"- **New** (@{who_new}): {one_line(new.text, 200)} (`{short_id(new.id)}`)\n"
        f"- **Earlier** (@{who_old}, {format_date(old.created_at, tz)}): {one_line(old.text, 200)}"
        f" (`{short_id(old.id)}`)\n"
        "Either author or a channel admin can choose below.",
    )


def click_forged(lang: str) -> str:
    return pick(
        lang,
        "이 버튼은 확인할 수 없어 처리하지 않았습니다.",
        "This button could not be verified: nothing was done.",
    )


def click_expired(lang: str, mention: str) -> str:
    return pick(
        lang,
        f"이 버튼은 만료되었습니다. 명령으로 해 주세요 (`{mention} forget ID`).",
        f"This button has expired. Use the command instead (`{mention} forget ID`).",
    )


def click_not_yours(lang: str, author: str) -> str:
    return pick(
        lang,
        f"@{author}님만 되돌릴 수 있습니다. 아무것도 바꾸지 않았습니다.",
        f"Only @{author} can undo this. Nothing was changed.",
    )


def click_not_allowed_to_choose(lang: str) -> str:
    return pick(
        lang,
        "두 메모리의 작성자나 채널 관리자만 고를 수 있습니다. 아무것도 바꾸지 않았습니다.",
        "Only the two authors or a channel admin can choose. Nothing was changed.",
    )


def click_gone(lang: str) -> str:
    return pick(
        lang,
        "이미 처리된 메모리입니다. 아무것도 바꾸지 않았습니다.",
        "That memory was already handled. Nothing was changed.",
    )


def click_undone(lang: str, user: str) -> str:
    return pick(
        lang,
        f"↩️ @{user}님이 되돌렸습니다: 이 메모리는 삭제되었습니다.",
        f"↩️ Undone by @{user}: this memory was deleted.",
    )


def click_forgotten(lang: str, user: str, memory_id: str) -> str:
    sid = short_id(memory_id)
    return pick(lang, f"🗑️ @{user}님이 삭제: `{sid}`", f"🗑️ Forgotten by @{user}: `{sid}`")


def click_chose(lang: str, user: str, kept: Memory) -> str:
    return pick(
        lang,
        f"✅ @{user}님이 골랐습니다: {one_line(kept.text, 200)} (`{short_id(kept.id)}`)."
        " 다른 쪽은 더 이상 쓰지 않습니다.",
        f"✅ @{user} chose: {one_line(kept.text, 200)} (`{short_id(kept.id)}`). The other is no longer used.",
    )
