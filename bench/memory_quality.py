"""Retrieval quality of the memory store on the Korean team-chat set and on LoCoMo.

    python bench/memory_quality.py [--ko FILE]... [--locomo FILE]... [--embedder NAME] [--cache DIR]

Runs through the real store (embedded engine on a temp dir, visibility filter inside the engine).
Prints, in one run, recall tables overall and per kind/category, plus the leak count (must be 0), for
this project's retrieval (the store's defaults, marked "default"), the two baselines (dense-only, and a
pure-Python Okapi BM25 k1=1.2 b=0.75 over character bigrams and over kiwi morphemes, visibility-filtered),
and the variants the default was chosen from. Ends with a verdict: project vs the best baseline on every
figure. Embeddings are computed once per file; `--cache DIR` reuses them across runs.
Scoring follows /work/shared/data/README.md.

The relevance cut (mchat_bot/memory/relevance.py) is measured beside it: "project + relevance cut"
scores the project's lists after the cut (a relevant memory cut away is a miss), and the negative
sets say how often a question with no answer in sight comes back empty ("nothing found"): each
Korean query asked in every channel of the other team, each LoCoMo question asked in every other
conversation's channel. `--min-relevance X` measures another threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mchat_bot.memory import sparse
from mchat_bot.memory.embedder import load_embedder
from mchat_bot.memory.relevance import DEFAULT_MIN_RELEVANCE, Relevance
from mchat_bot.memory.store import DEFAULT_TOKENIZER, EdgeMemoryStore, Memory, Viewer

DATA = Path("/work/shared/data")


@dataclass
class Query:
    id: str
    text: str
    viewer: Viewer
    kind: str
    relevant: list[str]
    current: str | None = None
    forbidden: list[str] = field(default_factory=list)


def load_ko(path: Path) -> tuple[list[Memory], list[Query]]:
    mems: list[Memory] = []
    queries: list[Query] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["type"] == "memory":
            mems.append(
                Memory(
                    id=row["id"],
                    text=row["text"],
                    scope=row["scope"],
                    team_id=row["team_id"],
                    channel_id=row["channel_id"],
                    user_id=row["user_id"],
                    created_at=datetime.fromisoformat(row["created_at"]).timestamp(),
                )
            )
        else:
            queries.append(
                Query(
                    id=row["id"],
                    text=row["query"],
                    viewer=Viewer(row["team_id"], row["channel_id"], row["user_id"]),
                    kind=row["kind"],
                    relevant=row.get("relevant", []),
                    current=row.get("current"),
                    forbidden=row.get("forbidden", []),
                )
            )
    return mems, queries


@dataclass(frozen=True)
class LocomoTurn:
    """One dialogue turn of a LoCoMo session; `when` is the session's (naive) date and time."""

    sample_id: str
    session: int
    index: int  # position in its session
    when: datetime
    speaker: str
    dia_id: str
    text: str  # the turn's words, then " [shares <blip_caption>]" when it has a caption


def locomo_turns(sample: dict[str, Any]) -> list[LocomoTurn]:
    """Every turn of one LoCoMo conversation, session by session, in order."""
    sid = sample["sample_id"]
    conv = sample["conversation"]
    out: list[LocomoTurn] = []
    n = 1
    while f"session_{n}" in conv:
        when = datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y")
        for i, turn in enumerate(conv[f"session_{n}"]):
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares {turn['blip_caption']}]"
            out.append(LocomoTurn(sid, n, i, when, turn["speaker"], turn["dia_id"], text))
        n += 1
    return out


def locomo_queries(sample: dict[str, Any]) -> list[Query]:
    """Each QA item as a query in its conversation's channel (category 5 and evidence-less skipped)."""
    sid = sample["sample_id"]
    queries: list[Query] = []
    for j, qa in enumerate(sample["qa"]):
        if qa.get("category") == 5 or not qa.get("evidence"):
            continue
        queries.append(
            Query(
                id=f"{sid}:q{j}",
                text=qa["question"],
                viewer=Viewer("t1", sid, "u-asker"),
                kind=str(qa["category"]),
                relevant=[f"{sid}:{e}" for e in qa["evidence"]],
            )
        )
    return queries


def load_locomo(path: Path) -> tuple[list[Memory], list[Query]]:
    mems: list[Memory] = []
    queries: list[Query] = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        for t in locomo_turns(sample):
            mems.append(
                Memory(
                    id=f"{t.sample_id}:{t.dia_id}",
                    text=f"{t.speaker}: {t.text}",
                    team_id="t1",
                    channel_id=t.sample_id,
                    user_id=f"u-{t.speaker.lower()}",
                    created_at=t.when.timestamp() + t.index,
                )
            )
        queries += locomo_queries(sample)
    return mems, queries


def negatives_ko(mems: list[Memory], queries: list[Query]) -> list[tuple[Query, Viewer]]:
    """Each query asked in every channel of the other team (DMs left out): its answers are out of sight."""
    channels: dict[str, set[str]] = defaultdict(set)
    for m in mems:
        if not m.channel_id.startswith("d-"):
            channels[m.team_id].add(m.channel_id)
    out = []
    for q in queries:
        for team in sorted(t for t in channels if t != q.viewer.team_id):
            out += [(q, Viewer(team, c, q.viewer.user_id)) for c in sorted(channels[team])]
    return out


def negatives_locomo(mems: list[Memory], queries: list[Query]) -> list[tuple[Query, Viewer]]:
    """Each question asked in every other conversation's channel, where its own turns are invisible."""
    sids = sorted({m.channel_id for m in mems})
    return [(q, Viewer("t1", s, "u-asker")) for q in queries for s in sids if s != q.viewer.channel_id]


def is_visible(m: Memory, v: Viewer) -> bool:
    """The README's visibility rule, written out here so the bench does not trust the store's own."""
    if m.scope == "channel":
        return m.channel_id == v.channel_id
    if m.scope == "user":
        return m.user_id == v.user_id and m.team_id == v.team_id
    return m.scope == "team" and m.team_id == v.team_id


# -- scoring ------------------------------------------------------------------------------------------


def ko_hit(q: Query, ranked: list[str]) -> bool:
    top5 = ranked[:5]
    if q.current:
        if q.current not in top5:
            return False
        pos = ranked.index(q.current)
        return all(ranked.index(r) > pos for r in q.relevant if r != q.current and r in ranked)
    return any(r in top5 for r in q.relevant)


def score_ko(queries: list[Query], results: dict[str, list[str]]) -> dict[str, Any]:
    hits: dict[str, list[bool]] = defaultdict(list)
    leaks = 0
    for q in queries:
        ranked = results[q.id]
        if q.forbidden and any(f in ranked[:10] for f in q.forbidden):
            leaks += 1
        if q.relevant:
            h = ko_hit(q, ranked)
            hits[q.kind].append(h)
            hits["overall"].append(h)
    return {"recall": {k: sum(v) / len(v) for k, v in hits.items()}, "leaks": leaks}


def score_locomo(queries: list[Query], results: dict[str, list[str]]) -> dict[str, Any]:
    at: dict[int, dict[str, list[bool]]] = {5: defaultdict(list), 10: defaultdict(list)}
    for q in queries:
        ranked = results[q.id]
        for k in (5, 10):
            h = any(r in ranked[:k] for r in q.relevant)
            at[k][q.kind].append(h)
            at[k]["overall"].append(h)
    return {f"r@{k}": {c: sum(v) / len(v) for c, v in d.items()} for k, d in at.items()}


# -- retrieval methods -------------------------------------------------------------------------------


class Bm25:
    """Okapi BM25 (k1=1.2, b=0.75) over `sparse.tokens`, scored only over memories the viewer may see."""

    def __init__(self, mems: Sequence[Memory], kind: sparse.Tokenizer = "bigram") -> None:
        self.kind = kind
        self.mems = list(mems)
        self.tfs = [Counter(sparse.tokens(m.text, kind)) for m in self.mems]
        self.lens = [sum(tf.values()) for tf in self.tfs]
        self.avg = sum(self.lens) / max(len(self.lens), 1)
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(self.mems)
        self.idf = {t: math.log((n - d + 0.5) / (d + 0.5) + 1.0) for t, d in df.items()}

    def search(self, text: str, viewer: Viewer, limit: int) -> list[str]:
        qt = set(sparse.tokens(text, self.kind))
        scored = []
        for m, tf, ln in zip(self.mems, self.tfs, self.lens, strict=True):
            if not is_visible(m, viewer):
                continue
            s = 0.0
            for t in qt:
                f = tf.get(t, 0)
                if f:
                    s += self.idf[t] * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * ln / self.avg))
            if s > 0:
                scored.append((s, m.created_at, m.id))
        scored.sort(reverse=True)
        return [i for _, _, i in scored[:limit]]


@dataclass
class Timing:
    load_s: float = 0.0
    docs: int = 0
    embed_s: float = 0.0
    upsert_s: float = 0.0
    queries: int = 0
    query_embed_s: float = 0.0
    searches: int = 0
    search_s: float = 0.0


# The store's own defaults are "this project's retrieval"; the rest are measured beside it.
CHOSEN = "project"
CUT = "project + relevance cut"
CUT_HELD: set[str] = set()  # the figures the cut must keep within 1 point: ko r@5, LoCoMo r@10
VARIANTS: dict[str, dict[str, Any]] = {
    CHOSEN: {},
    "dense-only": {"mode": "dense", "rerank": "off"},
    "hybrid-bigram (+values tie-break)": {"tokenizer": "bigram"},
    "hybrid-kiwi (+values tie-break)": {"tokenizer": "kiwi"},
    "hybrid-kiwi, no tie-break": {"rerank": "off"},
    "hybrid-kiwi, recency on all near-dups": {"rerank": "all"},
    "hybrid-kiwi, tie-break over 3x candidates": {"candidates": 3},
    "dense+recency (previous default)": {"mode": "dense", "rerank": "all", "candidates": 3},
}
BASELINES = ("dense-only", "bm25-bigram", "bm25-kiwi")


def embed_all(
    embedder: Any, texts: list[str], cache: Path | None, tag: str
) -> tuple[list[list[float]], float]:
    """Embed in batches; with --cache, reuse vectors from an earlier run (same embedder, same texts)."""
    import hashlib

    import numpy as np

    key = hashlib.sha256(("\x00".join([embedder.name, tag, *texts])).encode()).hexdigest()[:16]
    if cache is not None:
        f = cache / f"{key}.npy"
        if f.exists():
            return np.load(f).tolist(), 0.0
    t0 = time.perf_counter()
    out: list[list[float]] = []
    for i in range(0, len(texts), 64):
        if tag == "query":
            out.extend(embedder.embed_query(t) for t in texts[i : i + 64])
        else:
            out.extend(embedder.embed_documents(texts[i : i + 64]))
    took = time.perf_counter() - t0
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{key}.npy", np.asarray(out, dtype=np.float32))
    return out, took


async def run_store_variants(
    mems: list[Memory],
    queries: list[Query],
    embedder: Any,
    variants: dict[str, dict[str, Any]],
    timing: Timing,
    cache: Path | None,
    negatives: Sequence[tuple[Query, Viewer]] = (),
    cut: Relevance | None = None,
    nothing_found: dict[str, float] | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Embed once; one store per tokenizer; every variant (store options) over all queries.

    For the project's own retrieval also: its lists after `cut` (as ``CUT``), and the share of
    `negatives` that come back empty after it (into ``nothing_found["rate"]``).
    """
    by_id = {m.id: m for m in mems}
    doc_vecs, took = embed_all(embedder, [m.text for m in mems], cache, "passage")
    timing.embed_s += took
    timing.docs += len(mems)
    q_vecs, took = embed_all(embedder, [q.text for q in queries], cache, "query")
    timing.query_embed_s += took
    timing.queries += len(queries)
    out: dict[str, dict[str, list[str]]] = {}
    invisible = 0
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, EdgeMemoryStore] = {}
        for tok in sparse.TOKENIZERS:
            store = EdgeMemoryStore(Path(tmp) / tok, embedder, tokenizer=tok)
            t0 = time.perf_counter()
            items = list(zip(mems, doc_vecs, strict=True))
            for i in range(0, len(items), 256):
                await store.add_embedded(items[i : i + 256])
            timing.upsert_s += time.perf_counter() - t0
            stores[tok] = store
        for name, opts in variants.items():
            tok = opts.get("tokenizer", DEFAULT_TOKENIZER)
            store = stores[tok]
            base = EdgeMemoryStore("/nonexistent", embedder)
            for attr in (
                "mode",
                "rerank",
                "weights",
                "dup_threshold",
                "dup_margin",
                "subject_min",
                "candidates",
            ):
                setattr(store, attr, opts.get(attr, getattr(base, attr)))
            sq = [store.sparse_query(q.text) for q in queries]
            res: dict[str, list[str]] = {}
            t0 = time.perf_counter()
            kept: dict[str, list[str]] = {}
            for q, qv, s in zip(queries, q_vecs, sq, strict=True):
                hits = await store.search_vectors(qv, s, q.viewer, 10)
                res[q.id] = [h.memory.id for h in hits]
                invisible += sum(not is_visible(by_id[h.memory.id], q.viewer) for h in hits)
                if name == CHOSEN and cut is not None:
                    kept[q.id] = [h.memory.id for h in cut.keep(q.text, hits)]
            timing.search_s += time.perf_counter() - t0
            timing.searches += len(queries)
            out[name] = res
            if name == CHOSEN and cut is not None:
                out[CUT] = kept
                vec_of = {q.id: (qv, s) for q, qv, s in zip(queries, q_vecs, sq, strict=True)}
                empty = 0
                for q, viewer in negatives:
                    qv, s = vec_of[q.id]
                    hits = await store.search_vectors(qv, s, viewer, 10)
                    invisible += sum(not is_visible(by_id[h.memory.id], viewer) for h in hits)
                    empty += not cut.keep(q.text, hits)
                if nothing_found is not None:
                    nothing_found["rate"] = empty / max(len(negatives), 1)
                    nothing_found["n"] = len(negatives)
        for store in stores.values():
            await store.close()
    if invisible:
        print(f"!! {invisible} returned hits were not visible to their viewer", file=sys.stderr)
    return out


def table(title: str, rows: dict[str, dict[str, float]], cols: list[str], extra: dict[str, str]) -> None:
    print(f"\n{title}")
    head = ["method", *cols, *(["leaks"] if extra else [])]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, rec in rows.items():
        cells = [name, *(f"{rec.get(c, float('nan')):.3f}" for c in cols)]
        if extra:
            cells.append(extra[name])
        print("| " + " | ".join(cells) + " |")


def bench(
    label: str,
    loader: Callable[[Path], tuple[list[Memory], list[Query]]],
    path: Path,
    embedder: Any,
    timing: Timing,
    cache: Path | None,
    summary: dict[str, dict[str, float]],
    cut: Relevance,
) -> None:
    mems, queries = loader(path)
    negatives = negatives_ko(mems, queries) if label == "ko" else negatives_locomo(mems, queries)
    empty: dict[str, float] = {}
    results = asyncio.run(
        run_store_variants(mems, queries, embedder, VARIANTS, timing, cache, negatives, cut, empty)
    )
    for kind in sparse.TOKENIZERS:
        bm = Bm25(mems, kind)
        results[f"bm25-{kind}"] = {q.id: bm.search(q.text, q.viewer, 10) for q in queries}
    names = {n: (f"**{n}** (default)" if n == CHOSEN else n) for n in results}
    if label == "ko":
        kinds = [
            "direct",
            "paraphrase",
            "morphology",
            "mixed",
            "supersession",
            "isolation",
            "numeric",
            "multi",
        ]
        scored = {n: score_ko(queries, r) for n, r in results.items()}
        table(
            f"Korean set {path.name} ({len(mems)} memories, {len(queries)} queries): recall@5",
            {names[n]: s["recall"] for n, s in scored.items()},
            ["overall", *kinds],
            {names[n]: str(s["leaks"]) for n, s in scored.items()},
        )
        summary[f"{path.name} r@5"] = {n: s["recall"]["overall"] for n, s in scored.items()}
        summary[f"{path.name} leaks"] = {n: float(s["leaks"]) for n, s in scored.items()}
        cut_metric = "r@5"
    else:
        cats = ["overall", "1", "2", "3", "4"]
        scored_l = {n: score_locomo(queries, r) for n, r in results.items()}
        for k in ("r@10", "r@5"):
            table(
                f"LoCoMo {path.name} ({len(mems)} memories, {len(queries)} queries): {k} "
                "(1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop)",
                {names[n]: s[k] for n, s in scored_l.items()},
                cats,
                {},
            )
            summary[f"{path.name} {k}"] = {n: s[k]["overall"] for n, s in scored_l.items()}
        cut_metric = "r@10"
    summary[f"{path.name} nothing-found"] = {CUT: empty["rate"]}
    CUT_HELD.add(f"{path.name} {cut_metric}")
    before = summary[f"{path.name} {cut_metric}"]
    print(
        f"\nrelevance cut (min_relevance {cut.min_score}) on {path.name}: {cut_metric} "
        f"{before[CHOSEN]:.3f} -> {before[CUT]:.3f} ({before[CUT] - before[CHOSEN]:+.3f}); "
        f"nothing found on {int(empty['n'])} unanswerable asks (another "
        f"{'team' if label == 'ko' else 'conversation'}'s channel): {empty['rate']:.3f}"
    )


def verdict(summary: dict[str, dict[str, float]]) -> bool:
    """Does this project's retrieval beat every baseline on every recall figure, with 0 leaks?"""
    ok = True
    print("\nverdict (project vs best baseline; the cut within 1 point of no cut, nothing found >= 0.8):")
    for metric, by in summary.items():
        if metric.endswith("nothing-found"):
            good = by[CUT] >= 0.8
            print(f"  {metric}: project + cut {by[CUT]:.3f} {'OK' if good else 'FAIL'}")
        elif metric.endswith("leaks"):
            good = by[CHOSEN] == 0
            print(f"  {metric}: project {by[CHOSEN]:.0f} {'OK' if good else 'FAIL'}")
        else:
            best = max(BASELINES, key=lambda b: by.get(b, -1.0))
            good = by[CHOSEN] > by[best]
            print(
                f"  {metric}: project {by[CHOSEN]:.3f} vs {best} {by[best]:.3f} "
                f"({by[CHOSEN] - by[best]:+.3f}) {'OK' if good else 'FAIL'}"
            )
            if metric in CUT_HELD:
                near = by[CUT] >= by[CHOSEN] - 0.01
                print(
                    f"  {metric}: project + cut {by[CUT]:.3f} vs no cut {by[CHOSEN]:.3f} "
                    f"({by[CUT] - by[CHOSEN]:+.3f}) {'OK' if near else 'FAIL'}"
                )
                good = good and near
        ok = ok and good
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ko", type=Path, action="append", help="Korean-format JSONL file(s) (repeatable)")
    ap.add_argument("--locomo", type=Path, action="append", help="LoCoMo-format JSON file(s) (repeatable)")
    ap.add_argument("--embedder", default="default")
    ap.add_argument("--skip-locomo", action="store_true")
    ap.add_argument("--cache", type=Path, default=None, help="reuse embeddings from an earlier run (dir)")
    ap.add_argument(
        "--min-relevance", type=float, default=DEFAULT_MIN_RELEVANCE, help="the relevance cut to measure"
    )
    args = ap.parse_args()
    cut = Relevance(args.min_relevance)
    ko_files = args.ko or [DATA / "ko_memory_dev.jsonl"]
    locomo_files = [] if args.skip_locomo else (args.locomo or [DATA / "locomo_dev.json"])

    t0 = time.perf_counter()
    emb = load_embedder(args.embedder)
    dim = emb.dim  # forces the model load
    timing = Timing(load_s=time.perf_counter() - t0)
    probe = EdgeMemoryStore("/nonexistent", emb)
    print(
        f"embedder={emb.name} dim={dim} load={timing.load_s:.2f}s; project retrieval = store defaults: "
        f"mode={probe.mode} tokenizer={probe.tokenizer} rrf_weights={probe.weights} rerank={probe.rerank} "
        f"dup_threshold={probe.dup_threshold}"
    )
    summary: dict[str, dict[str, float]] = {}
    for f in ko_files:
        bench("ko", load_ko, f, emb, timing, args.cache, summary, cut)
    for f in locomo_files:
        bench("locomo", load_locomo, f, emb, timing, args.cache, summary, cut)
    if timing.embed_s:
        print(
            f"\nembedding: {timing.docs} docs in {timing.embed_s:.1f}s "
            f"= {timing.docs / timing.embed_s:.0f} docs/s; "
            f"{timing.queries} queries in {timing.query_embed_s:.1f}s "
            f"= {timing.query_embed_s / max(timing.queries, 1) * 1000:.1f} ms/query"
        )
    print(
        f"upsert (sparse tokenizing + engine, both tokenizers): {timing.docs * 2} points "
        f"in {timing.upsert_s:.1f}s; "
        f"search without embedding: {timing.search_s / max(timing.searches, 1) * 1000:.2f} ms/query"
    )
    ok = verdict(summary)
    print(
        "\nRESULT: project retrieval beats both baselines everywhere, and the cut holds"
        if ok
        else "\nRESULT: NOT better everywhere (see FAIL above)"
    )


if __name__ == "__main__":
    main()
