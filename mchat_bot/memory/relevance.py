"""The relevance cut: below it a retrieved memory is not shown, listed, quoted or given to the LLM.

The engine always returns its nearest memories, related or not, and e5 cosines are compressed (an
unrelated memory of the same channel scores 0.74-0.84), so neither the rank nor the cosine alone says
"this is about the question". The score here adds what the query's own keywords say:

    relevance = cosine(query, memory) + KEYWORD_WEIGHT * (share of the query's keywords in the memory)

Keywords are the store's "mixed" tokens (Hangul bigrams, other words whole, English stop words out).
Weight and threshold were measured on the dev sets (bench/memory_quality.py, docs/architecture.md):
the highest cut that keeps Korean recall@5 and LoCoMo recall@10 within one point of no cut, with
half a point to spare for RRF's run-to-run spread. The cosine scale belongs to the embedder: the
default threshold is for the bundled e5; another embedder needs its own (``memory.min_relevance``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mchat_bot.memory import sparse
from mchat_bot.memory.store import Hit

KEYWORD_WEIGHT = 0.15
DEFAULT_MIN_RELEVANCE = 0.83


def keywords(text: str) -> frozenset[str]:
    return frozenset(sparse.tokens(text, "mixed"))


def coverage(query_keywords: frozenset[str], text: str) -> float:
    """The share of the query's keywords that the text contains (0 when the query has none)."""
    if not query_keywords:
        return 0.0
    return len(query_keywords & keywords(text)) / len(query_keywords)


@dataclass(frozen=True, slots=True)
class Relevance:
    """One cut for every path (answers, search, forget candidates, the CLI); 0 keeps everything."""

    min_score: float = DEFAULT_MIN_RELEVANCE
    keyword_weight: float = KEYWORD_WEIGHT

    def score(self, query: str, hit: Hit) -> float:
        return self._score(keywords(query), hit)

    def _score(self, query_keywords: frozenset[str], hit: Hit) -> float:
        return hit.score + self.keyword_weight * coverage(query_keywords, hit.memory.text)

    def keep(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """The hits at or above the cut, in their order and unchanged (a shown score stays the cosine)."""
        if self.min_score <= 0:
            return list(hits)
        q = keywords(query)
        return [h for h in hits if self._score(q, h) >= self.min_score]
