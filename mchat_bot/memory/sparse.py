"""Sparse (keyword) vectors for the hybrid search: BM25 document weights; the engine applies IDF.

Two tokenizers, measured against each other in bench/memory_quality.py:
- ``bigram``: character bigrams within words (and across a space between Hangul words). Korean attaches
  particles and endings to words (DB는/DB를) and spacing varies (모아 앱/모아앱), so whitespace tokens miss;
  bigrams match both. No model, microseconds per text.
- ``kiwi``: Korean morphemes from kiwipiepy (nouns, verb/adjective stems, roots, foreign words, numbers;
  particles and endings dropped), English words lower-cased. About 0.6 ms per sentence, 1-2 s to load.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import zlib
from collections import Counter
from typing import Any, Literal

Tokenizer = Literal["bigram", "kiwi"]
TOKENIZERS: tuple[Tokenizer, ...] = ("bigram", "kiwi")

_SPLIT = re.compile(r"[^\w]+", re.UNICODE)  # whitespace and punctuation separate words

K1 = 1.2
B = 0.75
AVG_LEN = {"bigram": 30.0, "kiwi": 12.0}  # typical memory length in tokens: weights stay corpus-independent


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


# Content morphemes: nouns, verb/adjective stems, roots, determiners, adverbs, foreign words, numbers,
# Chinese characters, and kiwi's special tokens (serials, e-mails, URLs...). Particles (J*), endings (E*)
# and affixes are what differ between "DB는" and "DB를", so they are dropped.
_KEEP_TAGS = ("NN", "NR", "NP", "VV", "VA", "XR", "MM", "MAG", "SL", "SN", "SH", "W_")
_ENGLISH_STOP = frozenset(
    "a an the is are was were be been to of in on at for and or but with by from as it its this that "
    "what when where who whom which how did do does i you he she we they me my your his her our their".split()
)
_kiwi: Any = None
_kiwi_lock = threading.Lock()


def _get_kiwi() -> Any:
    global _kiwi
    if _kiwi is None:
        with _kiwi_lock:
            if _kiwi is None:
                from kiwipiepy import Kiwi

                _kiwi = Kiwi(num_workers=-1)  # -1: no worker threads (faster for one short text)
    return _kiwi


def morphemes(text: str) -> list[str]:
    """Content morphemes of Korean text, lower-cased English words without stop words."""
    norm = unicodedata.normalize("NFKC", text)
    kiwi = _get_kiwi()
    with _kiwi_lock:
        tokens = kiwi.tokenize(norm)
    out: list[str] = []
    for tok in tokens:
        tag = str(tok.tag)
        if not tag.startswith(_KEEP_TAGS):
            continue
        form = tok.form.lower()
        if tag == "SL":
            if form in _ENGLISH_STOP:
                continue
            form = form[:-1] if len(form) > 3 and form.endswith("s") and not form.endswith("ss") else form
        out.append(form)
    return out


def tokens(text: str, kind: Tokenizer = "bigram") -> list[str]:
    return morphemes(text) if kind == "kiwi" else bigrams(text)


def _index(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) & 0x7FFFFFFF


def _collapse(pairs: dict[int, float]) -> tuple[list[int], list[float]]:
    idx = sorted(pairs)
    return idx, [pairs[i] for i in idx]


def document_vector(text: str, kind: Tokenizer = "bigram") -> tuple[list[int], list[float]]:
    """BM25 term weights tf*(k1+1)/(tf+k1*(1-b+b*len/avg)) as (indices, values)."""
    toks = tokens(text, kind)
    if not toks:
        return [], []
    norm = K1 * (1.0 - B + B * len(toks) / AVG_LEN[kind])
    weights: dict[int, float] = {}
    for tok, tf in Counter(toks).items():
        i = _index(tok)
        weights[i] = weights.get(i, 0.0) + tf * (K1 + 1.0) / (tf + norm)
    return _collapse(weights)


def query_vector(text: str, kind: Tokenizer = "bigram") -> tuple[list[int], list[float]]:
    """Each distinct query token weighs 1; the engine's IDF modifier supplies the rest of BM25."""
    return _collapse({_index(t): 1.0 for t in set(tokens(text, kind))})


# -- values: what makes two versions of a fact different --------------------------------------------

_VALUE = re.compile(r"\d+(?:[.,:/-]\d+)*")


def values(text: str) -> frozenset[str]:
    """Numbers, dates, times, versions, amounts in the text ("12", "2026-11-20", "1.2.3", "10:00")."""
    return frozenset(
        m.group(0).replace(",", "") for m in _VALUE.finditer(unicodedata.normalize("NFKC", text))
    )


def subject_bigrams(text: str) -> frozenset[str]:
    """The text's bigrams without its values: "X부품 불량률 12%" and "X부품 불량률 8%" share all of them."""
    return frozenset(bigrams(_VALUE.sub(" ", unicodedata.normalize("NFKC", text))))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0
