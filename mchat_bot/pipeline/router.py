"""IncomingMessage -> Ignore | Command | Question: who is talking to the bot, and what they ask.

Pure functions, no I/O: the same message always routes the same way, so a worker can route again
what the door already routed. A mention is decided from the text alone (``@username`` or an alias
such as ``@ai``), outside code, so the rule is the same for every door.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mchat_bot.pipeline.message import IncomingMessage

if TYPE_CHECKING:  # the store (and numpy) load after the socket is up: see mchat_bot/app
    from mchat_bot.memory.store import Scope

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def detect_lang(text: str) -> str:
    """Return "ko" if the text has any Hangul, else "en": the reply follows the asker."""
    return "ko" if _HANGUL.search(text or "") else "en"


@dataclass(frozen=True, slots=True)
class BotIdentity:
    user_id: str
    username: str  # without "@"
    aliases: tuple[str, ...] = ()  # e.g. ("@ai",); the "@" is optional here

    def names(self) -> tuple[str, ...]:
        """Lower-cased mention names without "@", longest first (so "@ai-bot" wins over "@ai")."""
        return _names(self.username, self.aliases)


@functools.lru_cache(maxsize=64)
def _names(username: str, aliases: tuple[str, ...]) -> tuple[str, ...]:
    # Cached: the router asks for every post on the socket, thousands a second.
    found = {n.strip().lstrip("@").lower() for n in (username, *aliases)}
    return tuple(sorted((n for n in found if n), key=len, reverse=True))


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # remember | search | ... | summarize | my_memories | export | forget_me
    arg: str
    lang: str  # "ko" | "en"


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    lang: str


Routed = Ignore | Command | Question

COMMANDS: dict[str, str] = {
    "remember": "remember",
    "기억": "remember",
    "기억해": "remember",
    "기억해줘": "remember",
    "search": "search",
    "검색": "search",
    "찾아": "search",
    "찾아줘": "search",
    "forget": "forget",
    "삭제": "forget",
    "삭제해": "forget",
    "잊어": "forget",
    "잊어줘": "forget",
    "memories": "memories",
    "목록": "memories",
    "help": "help",
    "도움말": "help",
    "history": "history",
    "이력": "history",
    "learn": "learn",
    "학습": "learn",
    "export": "export",
    "내보내기": "export",
    "summarize": "summarize",
    "summarise": "summarize",
    "summary": "summarize",
    "요약": "summarize",
    "요약해": "summarize",
    "요약해줘": "summarize",
    "정리": "summarize",
    "정리해": "summarize",
    "정리해줘": "summarize",
}

# Two-word commands, said alone (``my memories``): "my memories from last week?" stays a question.
PHRASES: dict[tuple[str, ...], str] = {
    ("my", "memories"): "my_memories",
    ("my", "memory"): "my_memories",
    ("내", "메모리"): "my_memories",
    ("나의", "메모리"): "my_memories",
}
# Said after a phrase, they still make it the command: "내 메모리 보여줘".
PHRASE_VERBS = frozenset({"보여줘", "보여줘요", "보여주세요", "목록", "please"})
# Commands that take no argument: with one, the text is a question ("export the report to PDF?").
SOLO = frozenset({"export"})

# `remember` scope markers: a flag (`--me`) or a Korean label with a colon (`개인: ...`).
SCOPE_MARKERS: dict[str, Scope] = {
    "--me": "user",
    "--personal": "user",
    "개인": "user",
    "나만": "user",
    "--team": "team",
    "팀": "team",
    "--channel": "channel",
    "채널": "channel",
}
_SCOPE_LABEL = re.compile(r"^(개인|나만|팀|채널)\s*[:：]\s*")

# Said right after a name: "@ai야", "@ai님", "@ai에게". Only these are eaten with the mention;
# any other Hangul after an ASCII name still ends the mention but stays in the text.
_VOCATIVES = ("에게", "한테", "께서", "야", "아", "님", "씨", "께")
_NAME_CHARS = re.compile(r"[a-z0-9_\-]", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_BACKTICKS = re.compile(r"`+")


def route(msg: IncomingMessage, bot: BotIdentity) -> Routed:
    """Decide what, if anything, the bot must do with ``msg``."""
    if msg.user_id == bot.user_id:
        return Ignore("own post")
    if msg.from_bot:
        return Ignore("from a bot")
    if msg.post_type.startswith("system_"):
        return Ignore("system post")
    if msg.from_webhook:
        return Ignore("webhook post")

    text, mentioned = strip_mentions(msg.message, bot)
    if msg.channel_type != "D" and not mentioned:
        return Ignore("not mentioned")
    lang = detect_lang(msg.message)
    if not text:
        return Command("help", "", lang) if mentioned else Ignore("empty message")
    return parse_request(text, lang)


# `forget me` / `나를 잊어줘`, then only confirmation words (`forget me confirm all`); any other
# word after it makes it an ordinary `forget QUERY` ("forget me not" is a search).
FORGET_ME = frozenset(
    {("forget", "me"), ("forget-me",), ("나를", "잊어줘"), ("나를", "잊어"), ("날", "잊어줘")}
)
CONFIRM_WORDS = frozenset({"confirm", "yes", "확인", "네"})
ALL_WORDS = frozenset({"all", "everything", "전부", "모두", "다"})


def parse_choice(arg: str) -> tuple[bool, bool] | None:
    """(confirmed, everything) from the words after ``forget me``; None if they are something else."""
    words = {w.strip(".,!?").lower() for w in arg.split()}
    if not words <= CONFIRM_WORDS | ALL_WORDS:
        return None
    return bool(words & CONFIRM_WORDS), bool(words & ALL_WORDS)


def _forget_me(phrase: tuple[str, ...]) -> str | None:
    """The words after a ``forget me`` opening, or None when the text is not one."""
    for n in (1, 2):
        if phrase[:n] in FORGET_ME:
            rest = " ".join(phrase[n:])
            return rest if parse_choice(rest) is not None else None
    return None


# Korean puts the verb last ("오늘 대화 요약해줘"): these words end a short request for a summary.
TRAILING_SUMMARY = frozenset({"요약", "요약해", "요약해줘", "요약해주세요", "정리해줘", "정리해주세요"})
TRAILING_MAX_WORDS = 6


def parse_request(text: str, lang: str) -> Command | Question:
    """The first word picks a command (``/`` or ``!`` prefix allowed); anything else is a question,
    but a short request ending in a summary verb (``이번 주 정리해줘``) is a summary."""
    words = text.split()
    phrase = tuple(w.lstrip("/!").lower().rstrip(":,.!?") for w in words)
    if phrase in PHRASES or (len(phrase) == 3 and phrase[:2] in PHRASES and phrase[2] in PHRASE_VERBS):
        return Command(PHRASES[phrase[:2]], "", lang)
    choice = _forget_me(phrase)
    if choice is not None:
        return Command("forget_me", choice, lang)
    if 1 < len(words) <= TRAILING_MAX_WORDS and words[-1].rstrip(".!?~") in TRAILING_SUMMARY:
        if COMMANDS.get(words[0].lstrip("/!").lower().rstrip(":,.")) is None:
            return Command("summarize", " ".join(words[:-1]), lang)
    first, _, rest = text.partition(" ")
    if "\n" in first:  # "remember\nline two"
        first, _, more = first.partition("\n")
        rest = more + (" " + rest if rest else "")
    word = first.lstrip("/!").lower().rstrip(":,.")
    name = COMMANDS.get(word)
    if name is None or (name in SOLO and rest.strip()):
        return Question(text, lang)
    return Command(name, rest.strip(), lang)


def parse_scope(arg: str) -> tuple[Scope, str]:
    """Split `remember`'s argument into (scope, text): ``--me``/``개인:`` personal, ``--team``/``팀:`` team.

    Anything else is the default, this channel ("channel"); the marker must come first.
    """
    text = arg.strip()
    m = _SCOPE_LABEL.match(text)
    if m:
        return SCOPE_MARKERS[m.group(1)], text[m.end() :].strip()
    first, _, rest = text.partition(" ")
    scope = SCOPE_MARKERS.get(first.lower()) if first.startswith("--") else None
    if scope is not None:
        return scope, rest.strip()
    return "channel", text


def strip_mentions(text: str, bot: BotIdentity) -> tuple[str, bool]:
    """Remove every mention of the bot (outside code); returns (clean text, was mentioned)."""
    if "@" not in text:
        return text.strip(), False
    names = bot.names()
    if not names:
        return text.strip(), False
    masked = _mask_code(text)
    spans: list[tuple[int, int]] = []
    i = masked.find("@")
    while i != -1:
        end = _match_at(masked, i, names)
        if end is not None:
            spans.append((i, end))
            i = masked.find("@", end)
        else:
            i = masked.find("@", i + 1)
    if not spans:
        return text.strip(), False
    out: list[str] = []
    pos = 0
    for start, end in spans:
        out.append(text[pos:start])
        pos = end
    out.append(text[pos:])
    clean = "".join(out)
    # "@ai, what is..." / "@ai: remember" -> drop the punctuation that addressed the bot
    clean = re.sub(r"[ \t]{2,}", " ", clean).strip()
    clean = clean.lstrip(",:;").strip()
    return clean, True


def _match_at(masked: str, at: int, names: tuple[str, ...]) -> int | None:
    """If a bot mention starts at ``masked[at] == "@"``, return the index after it (and a vocative)."""
    if at > 0 and not _is_boundary_before(masked[at - 1]):
        return None
    for name in names:
        if masked[at + 1 : at + 1 + len(name)].lower() != name:
            continue
        end = at + 1 + len(name)
        if not _is_boundary_after(masked, end, name):
            continue
        for voc in _VOCATIVES:
            if masked.startswith(voc, end) and _ends_word(masked, end + len(voc)):
                return end + len(voc)
        return end
    return None


def _is_boundary_before(ch: str) -> bool:
    if ch.isspace():
        return True
    cat = unicodedata.category(ch)
    return (cat.startswith("P") or cat.startswith("S")) and ch not in "_@"


def _is_boundary_after(text: str, end: int, name: str) -> bool:
    if end >= len(text):
        return True
    ch = text[end]
    if ch.isspace():
        return True
    if _NAME_CHARS.match(ch):  # "@ai-bot", "@aim", "@ai_x" are other names
        return False
    if ch == ".":  # "@ai." ends a sentence, "@ai.bot" is another user
        return end + 1 >= len(text) or not _NAME_CHARS.match(text[end + 1])
    if _is_hangul(ch):
        # after an ASCII name any Hangul ends it (usernames are ASCII); after a Korean alias only
        # a vocative/particle does, so "@비서실" is not "@비서"
        if name and name[-1].isascii():
            return True
        return any(text.startswith(v, end) for v in _VOCATIVES)
    cat = unicodedata.category(ch)
    return cat.startswith("P") or cat.startswith("S")


def _ends_word(text: str, i: int) -> bool:
    return i >= len(text) or not (_is_hangul(text[i]) or text[i].isalnum())


def _is_hangul(ch: str) -> bool:
    o = ord(ch)
    return 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F


def _mask_code(text: str) -> str:
    """Same length as ``text`` with fenced blocks and inline code replaced by spaces."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            out.append(_blank(line))
            continue
        if m:
            fence = m.group(1)
            out.append(_blank(line))
            continue
        out.append(_mask_inline(line))
    return "".join(out)


def _mask_inline(line: str) -> str:
    chars = list(line)
    pos = 0
    while True:
        m = _BACKTICKS.search(line, pos)
        if not m:
            break
        run = m.group(0)
        close = re.compile(r"(?<!`)" + re.escape(run) + r"(?!`)").search(line, m.end())
        if not close:
            pos = m.end()
            continue
        for k in range(m.start(), close.end()):
            if chars[k] not in "\r\n":
                chars[k] = " "
        pos = close.end()
    return "".join(chars)


def _blank(line: str) -> str:
    return "".join(c if c in "\r\n" else " " for c in line)
