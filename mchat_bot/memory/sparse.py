"""Sparse (keyword) vectors for the hybrid search: BM25 document weights; the engine applies IDF.

Three tokenizers, measured against each other in bench/memory_quality.py:
- ``mixed`` (the default): Hangul as character bigrams, everything else (English, codes, numbers) as
  whole words without stop words. Best of the three on both sets (hybrid with e5: Korean recall@5 0.946,
  LoCoMo recall@10 0.709 vs 0.688 for kiwi), no model, microseconds per text.
- ``bigram``: character bigrams within words (and across a space between Hangul words). Korean attaches
  particles and endings to words (DB는/DB를) and spacing varies (모아 앱/모아앱), so whitespace tokens miss;
  bigrams match both. Weak on English (LoCoMo recall@10 0.616 in the hybrid).
- ``kiwi``: Korean morphemes from kiwipiepy (nouns, verb/adjective stems, roots, foreign words, numbers;
  particles and endings dropped), English words lower-cased. About 0.6 ms per sentence, 1-2 s to load
  and ~480 MB of resident memory for its model: kept selectable, no longer the default.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import zlib
from collections import Counter
from typing import Any, Literal

Tokenizer = Literal["mixed", "bigram", "kiwi"]
TOKENIZERS: tuple[Tokenizer, ...] = ("mixed", "bigram", "kiwi")

_SPLIT = re.compile(r"[^\w]+", re.UNICODE)  # whitespace and punctuation separate words

K1 = 1.2
B = 0.75
# typical memory length in tokens: the weights stay independent of the corpus
AVG_LEN = {"mixed": 20.0, "bigram": 30.0, "kiwi": 12.0}


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
                try:
                    from kiwipiepy import Kiwi
                except ImportError:  # an extra: ~480 MB of model that no default path needs
                    raise RuntimeError(
                        "the 'kiwi' keyword tokenizer needs kiwipiepy: pip install 'mchat-bot[bench]'"
                    ) from None

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
            form = _stem(form)
        out.append(form)
    return out


_RUN = re.compile(r"[\uac00-\ud7a3]+|[^\W\uac00-\ud7a3]+", re.UNICODE)  # Hangul runs / other runs


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def mixed(text: str) -> list[str]:
    """Hangul as character bigrams (as ``bigrams``), everything else as whole words.

    Korean needs bigrams (particles, spacing), English and codes need words: "release" and "freeze"
    as bigrams match half the corpus. English stop words dropped, a plural -s taken off, as ``morphemes``
    does, so this matches kiwi on English and bigrams on Korean without a 300-500 MB model.
    """
    out: list[str] = []
    prev = ""  # the previous Hangul run, if the last run was Hangul
    for word in _SPLIT.split(unicodedata.normalize("NFKC", text).lower()):
        runs = _RUN.findall(word)
        for n, run in enumerate(runs):
            if not _hangul(run[0]):
                if run not in _ENGLISH_STOP and run != "_":
                    out.append(_stem(run))
                prev = ""
                continue
            if len(run) == 1:
                if len(runs) == 1:  # a one-syllable word ("팀", "앱"); after a code it is a particle
                    out.append(run)
                if prev and n == 0:
                    out.append(prev[-1] + run)
            else:
                if prev and n == 0:
                    out.append(prev[-1] + run[0])
                out.extend(run[i : i + 2] for i in range(len(run) - 1))
            prev = run if n == len(runs) - 1 else ""
    return out


def tokens(text: str, kind: Tokenizer = "mixed") -> list[str]:
    if kind == "kiwi":
        return morphemes(text)
    return mixed(text) if kind == "mixed" else bigrams(text)


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
