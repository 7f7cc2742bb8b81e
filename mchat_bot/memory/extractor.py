"""Reconciliation (add / update / delete / keep) and extraction of memories.

Reconciliation decides what a new memory does to the ones already stored in the same scope. With an
LLM the decision is the LLM's, asked for as a JSON object and validated (an unknown action, a target
that is not one of the candidates, or text that is not JSON falls back to the rule). Without an LLM a
deterministic rule decides: same subject (the texts agree once their values are taken out) and a
different value (numbers, dates, versions differ) means the new memory updates the old one.

Extraction turns a statement addressed to the bot into memories with a category. It only ever sees
the user's own words: never the bot's posts, recalled memories or the system prompt.
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from mchat_bot.memory import sparse
from mchat_bot.memory.store import Memory

log = structlog.get_logger(__name__)

Action = Literal["add", "update", "delete", "keep", "conflict"]  # conflict: set by the handler (ask)
ACTIONS: tuple[Action, ...] = ("add", "update", "delete", "keep")
CATEGORIES = ("fact", "preference", "decision", "task", "event", "other")

SUBJECT_CONTAINMENT = 0.8  # share of the shorter text's subject bigrams found in the other
SUBJECT_JACCARD = 0.4  # and overall overlap, so a long new sentence does not "update" a short old one


class Completer(Protocol):
    async def complete(self, messages: list[dict[str, str]]) -> str: ...


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    target: str = ""  # id of the existing memory for update / delete / keep
    by: Literal["rule", "llm"] = "rule"
    reason: str = ""


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


_LATIN = re.compile(r"[a-z]+")
_STOP = frozenset(
    "a an the is are was were be to of in on at for and or now new our its it this that".split()
)


def _names(text: str) -> frozenset[str]:
    """Latin words (part names, hosts, codenames: "X부품" -> "x"), without English function words."""
    return frozenset(w for w in _LATIN.findall(unicodedata.normalize("NFKC", text).lower()) if w not in _STOP)


def same_subject(a: str, b: str) -> bool:
    """The texts agree once values are taken out, and neither names something the other does not."""
    sa, sb = sparse.subject_bigrams(a), sparse.subject_bigrams(b)
    if not sa or not sb:
        return False
    na, nb = _names(a), _names(b)
    if not (na <= nb or nb <= na):  # "X부품" vs "Y부품": another part, another subject
        return False
    shared = len(sa & sb)
    return shared / min(len(sa), len(sb)) >= SUBJECT_CONTAINMENT and sparse.jaccard(sa, sb) >= SUBJECT_JACCARD


def decide_by_rule(text: str, candidates: Sequence[Memory]) -> Decision:
    """keep: the same text again; update: same subject, different value; else add."""
    norm = _norm(text)
    for old in candidates:
        if _norm(old.text) == norm:
            return Decision("keep", old.id, "rule", "same text")
    new_values = sparse.values(text)
    best: tuple[float, Memory] | None = None
    for old in candidates:
        old_values = sparse.values(old.text)
        if not new_values or not old_values or new_values == old_values:
            continue
        if same_subject(text, old.text):
            overlap = sparse.jaccard(sparse.subject_bigrams(text), sparse.subject_bigrams(old.text))
            if (
                best is None
                or overlap > best[0]
                or (overlap == best[0] and old.created_at > best[1].created_at)
            ):
                best = (overlap, old)
    if best is not None:
        return Decision("update", best[1].id, "rule", "same subject, different value")
    return Decision("add", "", "rule")


RECONCILE_SYSTEM = """You maintain a team's memory store. A user asked to remember a NEW memory.
Compare it with the EXISTING memories (same scope) and choose exactly one action:
- "add": the new memory is about something else (or adds a detail); keep everything.
- "update": the new memory is a newer version of ONE existing memory (same subject, changed value);
  the old one stops being valid.
- "delete": the new memory says ONE existing memory is no longer true (cancelled, ended, wrong).
- "keep": the new memory says the same as ONE existing memory; nothing new to store.
Reply with one JSON object only, no prose:
{"action": "add" | "update" | "delete" | "keep", "target": "<id of the existing memory, or empty>",
 "reason": "<a few words>"}"""


def reconcile_messages(text: str, candidates: Sequence[Memory]) -> list[dict[str, str]]:
    lines = [f"NEW: {' '.join(text.split())}", "", "EXISTING:"]
    lines += [f"- id={m.id}: {' '.join(m.text.split())}" for m in candidates] or ["(none)"]
    return [{"role": "system", "content": RECONCILE_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _json_object(reply: str) -> dict[str, object] | None:
    """The first JSON object in the reply (models like to wrap JSON in ``` fences)."""
    m = _JSON_OBJECT.search(reply)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_decision(reply: str, candidates: Sequence[Memory]) -> Decision | None:
    """A validated decision from the LLM's reply, or None when it is not one."""
    obj = _json_object(reply)
    if obj is None:
        return None
    action = obj.get("action")
    target = obj.get("target") or ""
    reason = obj.get("reason") or ""
    if action not in ACTIONS or not isinstance(target, str) or not isinstance(reason, str):
        return None
    ids = {m.id for m in candidates}
    if action == "add":
        return Decision("add", "", "llm", reason[:200])
    if target not in ids:
        return None
    return Decision(action, target, "llm", reason[:200])  # type: ignore[arg-type]


async def decide(
    text: str, candidates: Sequence[Memory], llm: Completer | None, *, timeout: float = 20.0
) -> Decision:
    """The LLM's decision when one is configured and answers validly, else the rule's."""
    if not candidates:
        return Decision("add", "", "rule", "no similar memory")
    if llm is not None:
        try:
            async with asyncio.timeout(timeout):
                reply = await llm.complete(reconcile_messages(text, candidates))
        except Exception as exc:  # LLMError, timeout: the rule still gives a correct store
            log.warning("reconcile.llm_failed", error=type(exc).__name__)
        else:
            decision = parse_decision(reply, candidates)
            if decision is not None:
                return decision
            log.warning("reconcile.llm_invalid", chars=len(reply))
    return decide_by_rule(text, candidates)


# -- extraction ---------------------------------------------------------------------------------------

EXTRACT_SYSTEM = """Extract facts worth remembering for a team from the user's message below.
Only what the user states as true (decisions, facts, preferences, tasks, events), in their words.
Questions, greetings and requests contain nothing to remember. Reply with one JSON object only:
{"memories": [{"text": "<one self-contained fact>", "category": "fact|preference|decision|task|event|other"}]}
Use an empty list when there is nothing to remember."""

_QUESTION = re.compile(
    r"[?？]\s*$|(?:뭐|무엇|언제|어디|누구|왜|어떻게|어때|얼마|몇|인가요|나요|까요|니\s*$|냐\s*$|는지|할까)"
    r"|^(?:what|when|where|who|why|how|which|is|are|do|does|did|can|could|should|will|would)\b",
    re.IGNORECASE,
)
_STATEMENT_END = re.compile(r"(?:다|요|음|함|됨|임|예정|완료|[.!])\s*$")
MIN_EXTRACT_CHARS = 8
MAX_EXTRACT_CHARS = 500


def looks_like_statement(text: str) -> bool:
    """A declarative sentence, not a question: the only thing the rule extracts."""
    flat = " ".join(text.split())
    if not (MIN_EXTRACT_CHARS <= len(flat) <= MAX_EXTRACT_CHARS):
        return False
    return not _QUESTION.search(flat) and bool(_STATEMENT_END.search(flat) or "\n" not in text)


def grounded(extracted: str, source: str) -> bool:
    """Most of the extracted text's bigrams come from the user's own words (no invented or recalled text)."""
    ex = set(sparse.bigrams(extracted))
    if not ex:
        return False
    return len(ex & set(sparse.bigrams(source))) / len(ex) >= 0.6


async def extract(
    text: str, llm: Completer | None, guess: object, *, timeout: float = 20.0
) -> list[tuple[str, str]]:
    """(text, category) pairs from a message addressed to the bot.

    `guess` is the rule categorizer (``text -> category``) used without an LLM. With an LLM, each item
    must be valid JSON, of a known category and grounded in the message; anything else is dropped.
    """
    if llm is None:
        if looks_like_statement(text):
            return [(" ".join(text.split()), str(guess(text)))]  # type: ignore[operator]
        return []
    try:
        async with asyncio.timeout(timeout):
            reply = await llm.complete(
                [{"role": "system", "content": EXTRACT_SYSTEM}, {"role": "user", "content": text}]
            )
    except Exception as exc:
        log.warning("extract.llm_failed", error=type(exc).__name__)
        return []
    obj = _json_object(reply)
    items = obj.get("memories") if obj else None
    if not isinstance(items, list):
        log.warning("extract.llm_invalid", chars=len(reply))
        return []
    out: list[tuple[str, str]] = []
    for item in items[:5]:
        if not isinstance(item, dict):
            continue
        fact, category = item.get("text"), item.get("category", "fact")
        if not isinstance(fact, str) or not fact.strip() or category not in CATEGORIES:
            continue
        if len(fact) > MAX_EXTRACT_CHARS or not grounded(fact, text):
            continue
        out.append((" ".join(fact.split()), str(category)))
    return out
