"""`summarize` / `요약` / `정리해줘`: what a thread, or a learning channel over a period, said.

Sources: a thread is read over REST (any channel; masked here, as the knowledge log is at rest); a
channel is read from the knowledge log, so only a learning channel can be summarised, and another
channel only when the asker and the bot are both members of it (asked of the server). A summary of
another channel goes to the asker alone: its members are not this channel's (the reader rule).

With an LLM the lines are numbered ``[1]..[n]`` and the model cites them; long histories are
summarised in chunks of at most ``chunk_tokens`` and the partial notes merged, and every token sent
(all calls together) stays within ``budget_tokens``: when the lines do not fit, an even sample of
them is read and the answer says so. Tokens are estimated as characters / 3 (Korean runs about
1-1.5 characters a token and English about 4 on common tokenizers, so this errs high for English
and near right for mixed text), since the bot does not know the model's tokenizer. A cited number
becomes a permalink only when that line was in the prompt; any other marker is dropped. The final
call (the only one, or the merge) streams through the turn's sink like an answer.

Without an LLM (or when it fails: a summary is still useful) the summary is extractive, and
labelled so: the most central lines (the words they share with the rest of the period) and the
lines that look like decisions, questions and tasks.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

import structlog

from mchat_bot.knowledge.channels import LEARNING_TYPES, LearningChannels
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.llm import PLACEHOLDER_NOTE, LLMError
from mchat_bot.memory.relevance import keywords
from mchat_bot.net.http import permalink
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply
from mchat_bot.pipeline.periods import Period, parse_period
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.turn import AnswerSink, Completer
from mchat_bot.pipeline.users import UserNames
from mchat_bot.redaction import redact

log = structlog.get_logger(__name__)

MAX_LINES = 20_000  # read from the log for one summary (a busy channel's month)
PARALLEL_PARTS = 3  # parts of a long history summarised at once (a model's wait, not our CPU)
EXTRACT_EACH = 5  # lines per section of an extractive summary
PART_LABEL_TOKENS = 8  # "Notes on part 12:" and the blank line before it, in the merge
_CHANNEL_REF = re.compile(r"^[#~](\S{1,64})$")  # the channel's name (its URL), as Mattermost links it

DECISION = re.compile(
    r"결정|확정|합의|하기로|decided|decision|agreed|approved|we will go with|we'll go with", re.I
)
QUESTION = re.compile(r"\?|？|까요|나요|는지|을까|ㄹ까|어때|인가요|습니까")
TASK = re.compile(
    r"해\s?주세요|부탁|할 일|까지\s?(?:제출|완료|보내)|담당|todo|to-do|action item|please |"
    r"@\w+\s+(?:will|can you|please)|i will |i'll |deadline",
    re.I,
)


def estimate_tokens(text: str) -> int:
    """Characters / 3, rounded up: the model's tokenizer is unknown here (the module says why)."""
    return math.ceil(len(text) / 3)


def prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


# --- what is read ----------------------------------------------------------------------------------


def entry(n: int, line: Line, tz: tzinfo, with_date: bool) -> str:
    """``[n] 09:41 kim: text`` (the date too when the period spans days)."""
    when = texts.line_time(line, tz, with_date)
    return f"[{n}] {when} {line.user_name or '?'}: {' '.join(line.text.split())}"


def sample_evenly(count: int, keep: int) -> list[int]:
    """``keep`` indices of ``range(count)`` spread evenly, in order (the first and last kept)."""
    if keep >= count:
        return list(range(count))
    if keep <= 0:
        return []
    if keep == 1:
        return [count - 1]
    step = (count - 1) / (keep - 1)
    return sorted({round(i * step) for i in range(keep)})


def pack(entries: Sequence[str], chunk_tokens: int) -> list[list[str]]:
    """Consecutive entries in chunks of at most ``chunk_tokens`` (a longer entry is cut to fit)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for text in entries:
        cost = estimate_tokens(text) + 1
        if cost > chunk_tokens:
            text = text[: max(1, chunk_tokens - 1) * 3 - 1] + "…"
            cost = estimate_tokens(text) + 1
        if current and size + cost > chunk_tokens:
            chunks.append(current)
            current, size = [], 0
        current.append(text)
        size += cost
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True, slots=True)
class Plan:
    """Which lines are read (indices into the period's lines) and the calls' chunks of them."""

    kept: list[int]
    chunks: list[list[str]]
    partial_tokens: int  # how much of each partial note the merge may read (0: one call, no merge)


def plan(
    count: int,
    numbered: Callable[[list[int]], list[str]],
    chunk_tokens: int,
    budget_tokens: int,
    overhead: int,
) -> Plan:
    """Fit ``count`` lines into the budget: one call when they fit a chunk, else chunks and a merge.

    ``numbered(kept)`` gives the prompt's entries for the lines kept (numbered 1.. over them).
    Every call costs ``overhead`` (its instructions) besides its lines; the merge reads at most a
    quarter of the budget of partial notes. The sum of all calls' estimates stays within the budget.
    """
    chunk = max(1, min(chunk_tokens, budget_tokens) - overhead)
    everything = list(range(count))
    entries_of = numbered(everything)
    if sum(estimate_tokens(e) + 1 for e in entries_of) <= chunk:
        return Plan(everything, [entries_of] if entries_of else [], 0)
    reserve = budget_tokens // 4  # the merge's input
    room = budget_tokens - reserve - overhead  # the map calls, each with its own instructions
    keep = count
    while keep > 0:
        kept = sample_evenly(count, keep)
        chunks = pack(numbered(kept), chunk)
        cost = sum(estimate_tokens(e) + 1 for c in chunks for e in c) + overhead * len(chunks)
        if cost <= room:
            return Plan(kept, chunks, max(1, (reserve - PART_LABEL_TOKENS * len(chunks)) // len(chunks)))
        keep = min(keep - 1, int(keep * room / cost))
    return Plan([], [], 0)


def clip(text: str, tokens: int) -> str:
    """``text`` cut to about ``tokens`` (at a line end when one is near)."""
    limit = tokens * 3
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def citations(answer: str, n: int) -> tuple[str, list[int]]:
    """The answer without markers that name no line of the prompt, and the numbers it cites."""
    cited: list[int] = []

    def keep(m: re.Match[str]) -> str:
        k = int(m.group(1))
        if 1 <= k <= n:
            if k not in cited:
                cited.append(k)
            return m.group(0)
        return ""

    clean = re.sub(r"\[(\d{1,6})\]", keep, answer)
    return re.sub(r"[ \t]+\n", "\n", clean), sorted(cited)


# --- prompts ---------------------------------------------------------------------------------------


def _language(lang: str) -> str:
    return "Korean" if lang == "ko" else "English"


def sections(lang: str) -> str:
    return texts.pick(
        lang,
        "결정 사항 / 열린 질문 / 할 일 (담당자) / 언급된 수치",
        "Decisions / Open questions / Action items (with owners) / Figures mentioned",
    )


SUMMARY_ROLE = "You summarise a team's chat for its members."


def single_prompt(entries_of: Sequence[str], lang: str, where: str) -> list[dict[str, str]]:
    system = (
        f"{SUMMARY_ROLE} Below are the chat lines of {where}, numbered, with time and author. "
        f"Write a concise summary in {_language(lang)}, in Markdown, with these sections (leave out an "
        f"empty one): {sections(lang)}. Name the owner of each action item. End every point with the "
        "numbers of the lines it comes from in square brackets, like [3] or [3][7]. Use only these "
        "lines; do not invent numbers, names or figures."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(entries_of)}]


def map_prompt(entries_of: Sequence[str], part: int, parts: int) -> list[dict[str, str]]:
    system = (
        f"{SUMMARY_ROLE} Below is part {part} of {parts} of a chat, numbered lines with time and author. "
        "Write terse notes: decisions, open questions, action items with their owners, figures "
        "mentioned. End every note with the numbers of its lines in square brackets, like [12]."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(entries_of)}]


def reduce_prompt(notes: Sequence[str], lang: str, where: str) -> list[dict[str, str]]:
    system = (
        f"{SUMMARY_ROLE} Below are notes on consecutive parts of the chat of {where}. Merge them "
        f"into one concise summary in {_language(lang)}, in Markdown, with these sections (leave out an "
        f"empty one): {sections(lang)}. Keep the line numbers in square brackets exactly as the "
        "notes give them, after every point; do not invent numbers."
    )
    body = "\n\n".join(f"Notes on part {i}:\n{n}" for i, n in enumerate(notes, 1))
    return [{"role": "system", "content": system}, {"role": "user", "content": body}]


# the instructions of one call, at their longest; the LLM adds its placeholder note to a prompt
# holding a masked value (llm.mask_messages), so that is counted too
OVERHEAD_TOKENS = (
    max(
        prompt_tokens(single_prompt([], "en", "#" + "x" * 64)),
        prompt_tokens(map_prompt([], 999, 999)),
        prompt_tokens(reduce_prompt([], "en", "#" + "x" * 64)),
    )
    + estimate_tokens(PLACEHOLDER_NOTE)
    + 16
)


# --- without an LLM -------------------------------------------------------------------------------


@dataclass(slots=True)
class Extract:
    """Indices into the period's lines for each section of an extractive summary."""

    central: list[int] = field(default_factory=list)
    decisions: list[int] = field(default_factory=list)
    questions: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)


def extract(lines: Sequence[Line], each: int = EXTRACT_EACH) -> Extract:
    """The most central lines (sum of how many other lines share each of its keywords, over the
    square root of its keyword count, so a long line does not win by length alone) and the newest
    lines that look like decisions, questions and tasks; a line is shown in one section only."""
    words = [keywords(line.text) for line in lines]
    df: Counter[str] = Counter(w for ws in words for w in ws)
    scores = [
        (sum(df[w] - 1 for w in ws) / math.sqrt(len(ws)) if ws else 0.0, i) for i, ws in enumerate(words)
    ]
    out = Extract()
    used: set[int] = set()
    for name, pattern in (("decisions", DECISION), ("tasks", TASK), ("questions", QUESTION)):
        picked = [i for i in reversed(range(len(lines))) if i not in used and pattern.search(lines[i].text)]
        chosen = sorted(picked[:each])
        used.update(chosen)
        setattr(out, name, chosen)
    ranked = [i for score, i in sorted(scores, key=lambda s: (-s[0], s[1])) if score > 0 and i not in used]
    out.central = sorted(ranked[:each])
    return out


# --- the command ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """What one summary reads: its lines, where from, and who may read the result."""

    lines: list[Line]
    where: str  # "#qa" or "this thread", for the prompt and the heading
    private: bool = False  # another channel: the asker alone reads it
    label: str = ""  # the period's words, for the heading ("" for a thread)


class Summaries:
    def __init__(
        self,
        chat: ChatServer,
        log_: ChatLog,
        channels: LearningChannels,
        llm: Completer | None,
        bot_user_id: str,
        site_url: str,
        *,
        tz: tzinfo | None = None,
        chunk_tokens: int = 3000,
        budget_tokens: int = 24000,
        mention: str = "@ai",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chat = chat
        self.log = log_
        self.channels = channels
        self.llm = llm
        self.bot_user_id = bot_user_id
        self.site_url = site_url.rstrip("/")
        self.tz = tz
        self.chunk_tokens = chunk_tokens
        self.budget_tokens = budget_tokens
        self.mention = mention
        self.clock = clock
        self._names = UserNames(chat.get_user, fallback_to_id=True)
        self.last_tokens = 0  # what the last summary sent, estimated (logs, tests)

    async def summarize(
        self, msg: IncomingMessage, arg: str, lang: str, sink: AnswerSink | None = None
    ) -> Reply:
        zone = await self._zone(msg.user_id)
        period, rest = parse_period(arg, datetime.fromtimestamp(self.clock(), zone))
        ref = next((m.group(1).lower() for w in rest.split() if (m := _CHANNEL_REF.match(w))), "")
        if ref and ref != msg.channel_name.lower():
            found = await self._other_channel(msg, ref, period, lang)
            if isinstance(found, Reply):
                return found
            source = found
        elif msg.root_id and not ref:
            source = await self._thread(msg, lang)
        else:
            if msg.channel_type not in LEARNING_TYPES:
                return Reply(texts.summary_not_in_dm(lang, self.mention), Outcome.REFUSED)
            if not self._learns(msg.channel_id, msg.channel_type):
                return Reply(texts.summary_not_learning(lang, self.mention), Outcome.REFUSED)
            source = await self._channel(msg.channel_id, msg.channel_name, period, lang)
        text = await self._summary(source, lang, zone, None if source.private else sink)
        if not source.private:
            return Reply(text, Outcome.ANSWERED)
        return Reply(
            texts.summary_sent_privately(lang, source.where),
            Outcome.ANSWERED,
            private=text,
            private_fallback=texts.withheld_ask_in_dm(lang, self.mention),
        )

    def _learns(self, channel_id: str, channel_type: str) -> bool:
        return self.channels.learns(channel_id, channel_type) or self.log.has(channel_id)

    async def _channel(self, channel_id: str, name: str, period: Period, lang: str) -> Source:
        lines = [
            line
            for line in await self.log.in_channel(channel_id, period.start_ms, MAX_LINES)
            if period.holds(line.create_at)
        ]
        return Source(
            lines, f"#{name}" if name else texts.pick(lang, "이 채널", "this channel"), label=period.name
        )

    async def _other_channel(
        self, msg: IncomingMessage, name: str, period: Period, lang: str
    ) -> Source | Reply:
        """Another channel of the asker's team: both the asker and the bot must be in it, and it must
        learn. One answer for "no such channel" and "not yours": its existence does not leak."""
        if not msg.team_id:
            return Reply(texts.summary_not_in_dm(lang, self.mention), Outcome.REFUSED)
        unknown = Reply(texts.summary_no_channel(lang, name), Outcome.REFUSED)
        try:
            channel = await self.chat.get_channel_by_name(msg.team_id, name)
            channel_id, kind = str(channel["id"]), str(channel.get("type", ""))
            if kind not in LEARNING_TYPES:
                return unknown
            await self.chat.get_channel_member(channel_id, msg.user_id)
        except Exception as exc:
            log.info("summary.channel_refused", name=name, error=type(exc).__name__)
            return unknown
        try:
            await self.chat.get_channel_member(channel_id, self.bot_user_id)
        except Exception:
            return Reply(texts.summary_bot_not_in(lang, name), Outcome.REFUSED)
        if not self._learns(channel_id, kind):
            return Reply(texts.summary_not_learning(lang, self.mention, name), Outcome.REFUSED)
        found = await self._channel(channel_id, name, period, lang)
        return Source(found.lines, found.where, private=True, label=found.label)

    async def _thread(self, msg: IncomingMessage, lang: str) -> Source:
        """The thread's posts over REST, oldest first: people's posts, masked; not the bot's own, not
        the command itself, not system messages."""
        thread = await self.chat.get_thread(msg.root_id)
        posts = sorted(thread.get("posts", {}).values(), key=lambda p: p.get("create_at", 0))
        lines: list[Line] = []
        for post in posts:
            if post.get("id") == msg.post_id or post.get("delete_at"):
                continue
            if str(post.get("type", "")).startswith("system_") or post.get("user_id") == self.bot_user_id:
                continue
            text = redact(str(post.get("message", "")), "mask").text.strip()
            if not text:
                continue
            lines.append(
                Line(
                    post_id=str(post["id"]),
                    channel_id=msg.channel_id,
                    text=text,
                    create_at=int(post.get("create_at", 0)),
                    root_id=str(post.get("root_id", "")),
                    user_id=str(post.get("user_id", "")),
                    user_name=await self._names.of(str(post.get("user_id", ""))),
                )
            )
        return Source(lines, texts.pick(lang, "이 스레드", "this thread"))

    async def _summary(self, source: Source, lang: str, zone: tzinfo, sink: AnswerSink | None) -> str:
        lines = source.lines
        head = texts.summary_head(lang, source.where, source.label, len(lines))
        if not lines:
            return texts.summary_empty(lang, source.where, source.label)
        with_date = (lines[-1].create_at - lines[0].create_at) > 20 * 3600 * 1000
        if self.llm is not None:
            try:
                return await self._with_llm(self.llm, source, lang, zone, sink, head, with_date)
            except LLMError as exc:  # counted by the LLM; the asker still gets a summary
                log.warning("summary.llm_failed", error=str(exc)[:200])
                head = f"{head}\n{texts.summary_llm_failed(lang)}"
        picks = extract(lines)
        return texts.format_extractive(
            head, lines, picks, lang, [self.permalink(x.post_id) for x in lines], zone, with_date
        )

    async def _with_llm(
        self,
        llm: Completer,
        source: Source,
        lang: str,
        zone: tzinfo,
        sink: AnswerSink | None,
        head: str,
        with_date: bool,
    ) -> str:
        lines = source.lines
        the_plan = plan(
            len(lines),
            lambda kept: [entry(n, lines[i], zone, with_date) for n, i in enumerate(kept, 1)],
            self.chunk_tokens,
            self.budget_tokens,
            OVERHEAD_TOKENS,
        )
        kept = [lines[i] for i in the_plan.kept]  # [n] names the n-th line of the prompt
        chunks = the_plan.chunks
        sent = 0
        if len(chunks) <= 1:
            messages = single_prompt(chunks[0] if chunks else [], lang, source.where)
        else:
            parts = [map_prompt(chunk, i, len(chunks)) for i, chunk in enumerate(chunks, 1)]
            sent += sum(prompt_tokens(p) for p in parts)
            gate = asyncio.Semaphore(PARALLEL_PARTS)

            async def one_part(part: list[dict[str, str]]) -> str:
                async with gate:
                    return clip(await llm.complete(part), the_plan.partial_tokens)

            notes = await asyncio.gather(*(one_part(p) for p in parts))
            messages = reduce_prompt(notes, lang, source.where)
        sent += prompt_tokens(messages)
        answer = await (sink.complete(llm, messages) if sink is not None else llm.complete(messages))
        self.last_tokens = sent
        log.info(
            "summary.made",
            lines=len(lines),
            read=len(kept),
            calls=len(chunks) + (1 if len(chunks) > 1 else 0),
            tokens=sent,
            budget=self.budget_tokens,
        )
        clean, cited = citations(answer, len(kept))
        sources = [
            texts.summary_source(n, kept[n - 1], self.permalink(kept[n - 1].post_id), zone, with_date)
            for n in cited
        ]
        note = texts.summary_sampled(lang, len(kept), len(lines)) if len(kept) < len(lines) else ""
        body = "\n\n".join(t for t in (head, note, clean.strip()) if t)
        return texts.join_sources(body, sources)

    async def _zone(self, user_id: str) -> tzinfo:
        """The asker's time zone from their Mattermost profile, else the bot's."""
        fallback = self.tz or datetime.now().astimezone().tzinfo
        assert fallback is not None
        try:
            zone = (await self.chat.get_user(user_id)).get("timezone") or {}
        except Exception:
            return fallback
        use_auto = str(zone.get("useAutomaticTimezone", "true")).lower() == "true"
        name = str(zone.get("automaticTimezone" if use_auto else "manualTimezone") or "")
        try:
            return ZoneInfo(name) if name else fallback
        except (ValueError, KeyError, OSError):
            return fallback

    def permalink(self, post_id: str) -> str:
        return permalink(self.site_url, post_id)
