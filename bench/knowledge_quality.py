"""Recall of channel knowledge (every message indexed) on LoCoMo: how a message becomes indexed text.

    python bench/knowledge_quality.py [--locomo FILE]... [--cache DIR] [--only NAME]...

Each dialogue turn becomes a ``ChatLine`` (a top-level post of its conversation's channel, at its
session's time plus n seconds), is turned into text by ``mchat_bot.knowledge.documents`` under one
recipe per variant, and is indexed through the real store (embedded engine on a temp dir, the store's
default hybrid search: e5 dense + "mixed" BM25 keywords, RRF). Each QA question is asked in its own
conversation's channel. Scoring is memory_quality.py's for LoCoMo (/work/shared/data/README.md):
recall@10 and recall@5, overall and per category, a question being a hit when any evidence turn is
in its top k. Questions are used as they are; nothing here looks at them to shape the recipe.

A variant is a dense recipe (the text that is embedded) and a keyword recipe (the text the BM25
vector is built from, also the stored payload), or a vector mix: each line embedded alone, its
neighbours' mean added at a weight (context without embedding longer texts). The chosen default is
marked: ``documents.index_text`` (``DEFAULT_RECIPE``: speaker, date, 1 line before and 1 after)
embedded, ``documents.keyword_text`` (the dated, attributed line alone) as keywords and payload.
Embeddings are cached per variant's text list with ``--cache DIR``; a first run embeds ~2,760 texts
per distinct dense text (10 min for single lines, 20 min with 1/1 context, on one shared core).
Figures move by up to ~0.01 between runs (engine ties), so smaller gaps are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from memory_quality import DATA, Query, embed_all, locomo_queries, locomo_turns, score_locomo, table

from mchat_bot.knowledge import documents
from mchat_bot.knowledge.documents import DEFAULT_RECIPE, ChatLine, Recipe
from mchat_bot.knowledge.index import open_message_store
from mchat_bot.memory.embedder import load_embedder
from mchat_bot.memory.relevance import DEFAULT_MIN_RELEVANCE, Relevance
from mchat_bot.memory.store import Memory

LINE_ONLY = Recipe(speaker=True, date=False, before=0, after=0)  # the memory path's "Speaker: text"
DATED = Recipe(before=0, after=0)


@dataclass(frozen=True)
class Variant:
    """Dense text recipe, keyword text recipe; `mix` > 0: dense = own vector + mix x neighbours' mean
    (of `DATED` single-line vectors, neighbours as in `dense`)."""

    dense: Recipe
    keywords: Recipe
    mix: float = 0.0


# documents.index_text (1 before/1 after) embedded, documents.keyword_text (the line) as keywords
CHOSEN = "context 1/1 in dense only"
ONE = DEFAULT_RECIPE  # 1 before / 1 after
TWO = replace(DEFAULT_RECIPE, before=2, after=2)
NO_SPEAKER = replace(DATED, speaker=False)
VARIANTS: dict[str, Variant] = {
    "speaker + date, no context": Variant(DATED, DATED),
    "keywords without speaker": Variant(DATED, NO_SPEAKER),
    "context 1/1 in keywords only": Variant(DATED, ONE),
    "context 2/2 in keywords only": Variant(DATED, TWO),
    "context 1/1 in both": Variant(ONE, ONE),
    CHOSEN: Variant(ONE, DATED),
    "vector mix 1/1 (x0.5), keywords 1/1": Variant(ONE, ONE, mix=0.5),
    "vector mix 2/2 (x0.5), keywords 2/2": Variant(TWO, TWO, mix=0.5),
    "vector mix 1/1 (x0.5), keywords own line": Variant(ONE, DATED, mix=0.5),
}
# Not run by default (each embeds ~2,760 longer texts, 15-30 min on one shared core): --only NAME.
EXPENSIVE: dict[str, Variant] = {
    "line only (memory path text)": Variant(LINE_ONLY, LINE_ONLY),
    "context 2/2 in both": Variant(TWO, TWO),
    "context 1 before/0 after in both": Variant(replace(ONE, after=0), replace(ONE, after=0)),
    "no speaker, date, no context": Variant(NO_SPEAKER, NO_SPEAKER),
}


def locomo_channels(path: Path) -> tuple[dict[str, list[ChatLine]], list[Query]]:
    """Each conversation as one channel of top-level posts in time order; its questions.

    Session times are naive in the data: read as UTC, and dates formatted in UTC, so a turn's date
    is its session's date. Turns of a session are n seconds apart, sessions days apart, so the
    neighbour rule's silence limit keeps context within a session, as it would in a real channel.
    """
    channels: dict[str, list[ChatLine]] = {}
    queries: list[Query] = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        lines = [
            ChatLine(
                post_id=f"{t.sample_id}:{t.dia_id}",
                channel_id=t.sample_id,
                user_name=t.speaker,
                text=t.text,
                create_at=t.when.replace(tzinfo=UTC).timestamp() + t.index,
            )
            for t in locomo_turns(sample)
        ]
        channels[sample["sample_id"]] = sorted(lines, key=lambda x: x.create_at)
        queries += locomo_queries(sample)
    return channels, queries


def texts(channels: dict[str, list[ChatLine]], recipe: Recipe) -> list[tuple[ChatLine, str]]:
    out = []
    for lines in channels.values():
        for i, line in enumerate(lines):
            before, after = documents.neighbours(lines, i, recipe.before, recipe.after)
            out.append((line, documents.index_text(line, before, after, UTC, recipe)))
    return out


def mixed_vectors(
    channels: dict[str, list[ChatLine]], own: dict[str, np.ndarray], recipe: Recipe, weight: float
) -> list[list[float]]:
    """Own unit vector + weight x mean of the neighbours' unit vectors, renormalised."""
    out = []
    for lines in channels.values():
        for i, line in enumerate(lines):
            before, after = documents.neighbours(lines, i, recipe.before, recipe.after)
            ctx = [own[x.post_id] for x in (*before, *after)]
            v = own[line.post_id] + (weight * np.mean(ctx, axis=0) if ctx else 0.0)
            out.append((v / np.linalg.norm(v)).tolist())
    return out


async def run_variant(
    lines_and_keywords: Sequence[tuple[ChatLine, str]],
    vectors: Sequence[list[float]],
    queries: Sequence[Query],
    q_vecs: Sequence[list[float]],
    embedder: Any,
    cut: Relevance | None = None,
) -> dict[str, list[str]]:
    """Each question's top 10 as the daemon's message collection returns them (open_message_store:
    no recency tie-break); with ``cut``, after the relevance cut the answers apply."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_message_store(Path(tmp), None, embedder)
        items = [
            (
                Memory(
                    id=line.post_id,
                    text=kw,
                    scope="channel",
                    team_id="t1",
                    channel_id=line.channel_id,
                    user_id=f"u-{line.user_name.lower()}",
                    user_name=line.user_name,
                    source_post_id=line.post_id,
                    created_at=line.create_at,
                ),
                list(vec),
            )
            for (line, kw), vec in zip(lines_and_keywords, vectors, strict=True)
        ]
        for i in range(0, len(items), 256):
            await store.add_embedded(items[i : i + 256])
        res: dict[str, list[str]] = {}
        for q, qv in zip(queries, q_vecs, strict=True):
            hits = await store.search_vectors(qv, store.sparse_query(q.text), q.viewer, 10)
            res[q.id] = [h.memory.id for h in (cut.keep(q.text, hits) if cut is not None else hits)]
        await store.close()
    return res


def bench(path: Path, embedder: Any, cache: Path | None, only: set[str]) -> None:
    channels, queries = locomo_channels(path)
    n = sum(len(v) for v in channels.values())
    q_vecs, _ = embed_all(embedder, [q.text for q in queries], cache, "query")
    results: dict[str, dict[str, list[str]]] = {}
    for name, var in {**VARIANTS, **EXPENSIVE}.items():
        if (only and name not in only and name != CHOSEN) or (not only and name in EXPENSIVE):
            continue
        t0 = time.perf_counter()
        kw = [(line, text) for line, text in texts(channels, var.keywords)]
        if var.mix > 0:
            dated = texts(channels, DATED)
            own_vecs, took = embed_all(embedder, [t for _, t in dated], cache, "passage")
            own = {
                line.post_id: np.asarray(v, dtype=np.float32)
                for (line, _), v in zip(dated, own_vecs, strict=True)
            }
            vecs = mixed_vectors(channels, own, var.dense, var.mix)
        else:
            dense = texts(channels, var.dense)
            vecs, took = embed_all(embedder, [t for _, t in dense], cache, "passage")
        results[name] = asyncio.run(run_variant(kw, vecs, queries, q_vecs, embedder))
        if name == CHOSEN:  # as answers and search see it: after memory.min_relevance's cut
            cut = Relevance(DEFAULT_MIN_RELEVANCE)
            results[f"{name} + relevance cut {cut.min_score}"] = asyncio.run(
                run_variant(kw, vecs, queries, q_vecs, embedder, cut)
            )
        r = score_locomo(queries, results[name])
        print(
            f"  {name}: r@10 {r['r@10']['overall']:.3f} r@5 {r['r@5']['overall']:.3f} "
            f"(embedded in {took:.0f}s, total {time.perf_counter() - t0:.0f}s)",
            file=sys.stderr,
        )
    scored = {n_: score_locomo(queries, r) for n_, r in results.items()}
    names = {n_: (f"**{n_}** (default)" if n_ == CHOSEN else n_) for n_ in results}
    for k in ("r@10", "r@5"):
        table(
            f"LoCoMo {path.name} over the message path ({n} messages, {len(queries)} questions): {k} "
            "(1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop)",
            {names[n_]: s[k] for n_, s in scored.items()},
            ["overall", "1", "2", "3", "4"],
            {},
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locomo", type=Path, action="append", help="LoCoMo-format JSON file(s) (repeatable)")
    ap.add_argument("--embedder", default="default")
    ap.add_argument("--cache", type=Path, default=None, help="reuse embeddings from an earlier run (dir)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run this variant and the default only (repeatable); also one of {sorted(EXPENSIVE)}",
    )
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    print(f"embedder={emb.name} dim={emb.dim}; default recipe: {DEFAULT_RECIPE}")
    for f in args.locomo or [DATA / "locomo_dev.json"]:
        bench(f, emb, args.cache, set(args.only))


if __name__ == "__main__":
    main()
