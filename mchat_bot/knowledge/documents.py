"""How a chat message becomes indexed text: the message, who said it, when, and what it answered.

A chat line alone is often unanswerable out of context: "I went yesterday, it was so powerful" says
nothing of *where* unless the line before ("How was the support group?") comes with it, and "when"
questions need the day it was said. So a message is indexed by two texts:

- ``index_text``, what is embedded: its own line headed by the speaker's name and the date, then its
  neighbours in the conversation as context, bounded so that the whole fits the embedder's window
  (multilingual-e5-small reads 512 tokens). The embedding carries the topic of the exchange.
- ``keyword_text``, what the keyword (BM25) vector is built from and what is stored and shown: the
  dated, attributed line alone. Context words in the keywords make every line of an exchange match
  the same terms, so the line that answers loses its rank to its neighbours (measured: recall@5 0.58
  with context in both texts, 0.63 with context in the embedding only; recall@10 0.79 and 0.78).

Neighbours (``neighbours``): for a reply, its thread's root and the replies around it; for a top-level
post, the channel's posts around it, but never across a silence of more than ``max_gap_s`` (a new
conversation has begun) and never a thread's replies in place of the channel's flow.

Everything here is pure: no store, no clock, no I/O. bench/knowledge_quality.py measures the recipe
on LoCoMo (dialogue turns as messages); the defaults are the measured choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

# A silence after which the next top-level post starts another conversation (not its context).
DEFAULT_MAX_GAP_S = 3 * 3600.0


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One post as the index sees it. ``create_at`` is epoch seconds; ``root_id`` is "" for a
    top-level post and the thread root's ``post_id`` for a reply."""

    post_id: str
    channel_id: str
    user_name: str
    text: str
    create_at: float
    root_id: str = ""


@dataclass(frozen=True, slots=True)
class Recipe:
    """What goes into a message's indexed text. The defaults are the measured choice.

    ``before``/``after``: how many neighbouring lines on each side (a reply's root comes in addition);
    ``context_chars``: each neighbour is cut to this, so context never drowns the message itself;
    ``own_chars``: the message is cut to this (e5 reads ~512 tokens, about 2,000 characters).
    """

    speaker: bool = True
    date: bool = True
    before: int = 1
    after: int = 1
    context_chars: int = 200
    own_chars: int = 1200


DEFAULT_RECIPE = Recipe()


def format_date(epoch_s: float, tz: tzinfo = UTC) -> str:
    """The day as people write it when they ask "when" ("8 May 2023"), in the channel's time zone."""
    d = datetime.fromtimestamp(epoch_s, tz)
    return f"{d.day} {d:%B} {d.year}"


def _clip(text: str, limit: int) -> str:
    """One line, at most `limit` characters, cut at a word boundary with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _said(line: ChatLine, limit: int, speaker: bool) -> str:
    text = _clip(line.text, limit)
    return f"{line.user_name}: {text}" if speaker and line.user_name else text


def neighbours(
    lines: Sequence[ChatLine],
    index: int,
    n_before: int = DEFAULT_RECIPE.before,
    n_after: int = DEFAULT_RECIPE.after,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
) -> tuple[list[ChatLine], list[ChatLine]]:
    """The context of ``lines[index]`` among one channel's lines (in time order): (before, after).

    - a reply: its thread's root first, then up to `n_before` earlier replies; after it, up to
      `n_after` later replies of the same thread (other threads and top-level posts are another topic);
    - a top-level post: up to `n_before` earlier and `n_after` later top-level posts, stopping at a
      silence longer than `max_gap_s`; a post that opened a thread takes its first replies as "after"
      instead, since those are what answered it.
    """
    line = lines[index]
    if line.root_id:
        thread = [x for x in lines if x.root_id == line.root_id and x.post_id != line.post_id]
        earlier = [x for x in thread if x.create_at <= line.create_at]
        later = [x for x in thread if x.create_at > line.create_at]
        root = [x for x in lines if x.post_id == line.root_id]
        before = root + (earlier[-n_before:] if n_before > 0 else [])
        return before, later[:n_after] if n_after > 0 else []
    replies = [x for x in lines if x.root_id == line.post_id]
    if replies:
        return _flow(lines, index, n_before, -1, max_gap_s), replies[:n_after] if n_after > 0 else []
    return _flow(lines, index, n_before, -1, max_gap_s), _flow(lines, index, n_after, 1, max_gap_s)


def _flow(lines: Sequence[ChatLine], index: int, n: int, step: int, max_gap_s: float) -> list[ChatLine]:
    """Up to `n` top-level lines from `index` in direction `step`, until a silence > `max_gap_s`."""
    out: list[ChatLine] = []
    last = lines[index].create_at
    i = index + step
    while n > 0 and 0 <= i < len(lines) and len(out) < n:
        x = lines[i]
        i += step
        if x.root_id:
            continue
        if abs(x.create_at - last) > max_gap_s:
            break
        out.append(x)
        last = x.create_at
    return out[::-1] if step < 0 else out


def keyword_text(line: ChatLine, tz: tzinfo = UTC, recipe: Recipe = DEFAULT_RECIPE) -> str:
    """The message's own line, "[8 May 2023] Caroline: text" (date and speaker as the recipe says):
    the keyword text, the stored text, and the head of ``index_text``."""
    own = _said(line, recipe.own_chars, recipe.speaker)
    return f"[{format_date(line.create_at, tz)}] {own}" if recipe.date else own


def index_text(
    line: ChatLine,
    before: Sequence[ChatLine],
    after: Sequence[ChatLine],
    tz: tzinfo = UTC,
    recipe: Recipe = DEFAULT_RECIPE,
) -> str:
    """The text a message is embedded by: its dated, attributed line, then the conversation around
    it in time order, each neighbour cut short.

    The message comes first, so truncation by the embedder (and a reader of the payload) meets it
    before any context; the context follows as the dialogue it was, "Context:" marking where it
    starts. `before`/`after` are taken as given, at most ``recipe.before``/``recipe.after`` of the
    closest (a reply's root, first in `before`, is always kept).
    """
    text = keyword_text(line, tz, recipe)
    ctx = [*_closest_before(before, recipe.before), *after[: max(recipe.after, 0)]]
    if not ctx:
        return text
    said = " | ".join(_said(x, recipe.context_chars, recipe.speaker) for x in ctx)
    return f"{text}\nContext: {said}"


def _closest_before(before: Sequence[ChatLine], n: int) -> list[ChatLine]:
    """The last `n` of `before`, and a thread root at its head kept in addition (it states the topic)."""
    if n <= 0 or not before:
        return []
    head = list(before[-n:])
    first = before[0]
    if first.root_id == "" and any(x.root_id == first.post_id for x in head) and first not in head:
        head.insert(0, first)
    return head
