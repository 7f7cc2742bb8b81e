"""Character-bigram sparse vectors (BM25 document weights; the engine applies IDF).

Why bigrams: Korean attaches particles and endings to words (DB는/DB를) and spacing varies (모아 앱/모아앱),
so whitespace tokens miss; character bigrams within words (and across a space between Hangul words)
match both. No model, no dictionary, microseconds per text.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter

_SPLIT = re.compile(r"[^\w]+", re.UNICODE)  # whitespace and punctuation separate words

K1 = 1.2
B = 0.75
AVG_LEN = 30.0  # typical memory length in bigrams; a fixed average keeps weights independent of the corpus


def _hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3"


def bigrams(text: str) -> list[str]:
    """Character bigrams per word (lower-cased, NFKC); one-character words stay unigrams.

    Adjacent Hangul words also give the bigram across the space, so "모아 앱" and "모아앱" share "아앱";
    digits and Latin never join across a space, so "v1.2.3 10" does not invent "31".
    """
    words = [w for w in _SPLIT.split(unicodedata.normalize("NFKC", text).lower()) if w]
    out: list[str] = []
    prev = ""
    for word in words:
        if prev and _hangul(prev[-1]) and _hangul(word[0]):
            out.append(prev[-1] + word[0])
        if len(word) == 1:
            out.append(word)
        out.extend(word[i : i + 2] for i in range(len(word) - 1))
        prev = word
    return out


def _index(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) & 0x7FFFFFFF


def _collapse(pairs: dict[int, float]) -> tuple[list[int], list[float]]:
    idx = sorted(pairs)
    return idx, [pairs[i] for i in idx]


def document_vector(text: str) -> tuple[list[int], list[float]]:
    """BM25 term weights tf*(k1+1)/(tf+k1*(1-b+b*len/avg)) as (indices, values)."""
    toks = bigrams(text)
    if not toks:
        return [], []
    norm = K1 * (1.0 - B + B * len(toks) / AVG_LEN)
    weights: dict[int, float] = {}
    for tok, tf in Counter(toks).items():
        i = _index(tok)
        weights[i] = weights.get(i, 0.0) + tf * (K1 + 1.0) / (tf + norm)
    return _collapse(weights)


def query_vector(text: str) -> tuple[list[int], list[float]]:
    """Each distinct query bigram weighs 1; the engine's IDF modifier supplies the rest of BM25."""
    return _collapse({_index(t): 1.0 for t in set(bigrams(text))})
