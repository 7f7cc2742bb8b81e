"""Retrieval quality of the memory store on the Korean team-chat set and on LoCoMo.

    python bench/memory_quality.py [--ko PATH] [--locomo PATH] [--embedder NAME] [--dup-threshold X]

Runs through the real store (embedded engine on a temp dir, visibility filter inside the engine) and
prints recall tables overall and per kind/category, plus the leak count (must be 0), for:
the chosen retrieval (store defaults), dense-only, dense+recency, hybrid without recency, and a pure
Python BM25 over character bigrams (k1=1.2, b=0.75, visibility-filtered) as the baseline.
Scoring follows /work/shared/data/README.md.
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
from mchat_bot.memory.store import EdgeMemoryStore, Memory, Viewer

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


def load_locomo(path: Path) -> tuple[list[Memory], list[Query]]:
    mems: list[Memory] = []
    queries: list[Query] = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        sid = sample["sample_id"]
        conv = sample["conversation"]
        n = 1
        while f"session_{n}" in conv:
            when = datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y").timestamp()
            for i, turn in enumerate(conv[f"session_{n}"]):
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [shares {turn['blip_caption']}]"
                mems.append(
                    Memory(
                        id=f"{sid}:{turn['dia_id']}",
                        text=text,
                        team_id="t1",
                        channel_id=sid,
                        user_id=f"u-{turn['speaker'].lower()}",
                        created_at=when + i,
                    )
                )
            n += 1
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
    return mems, queries


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


class Bm25Bigram:
    """Okapi BM25 (k1=1.2, b=0.75) over `sparse.bigrams`, scored only over memories the viewer may see."""

    def __init__(self, mems: Sequence[Memory]) -> None:
        self.mems = list(mems)
        self.tfs = [Counter(sparse.bigrams(m.text)) for m in self.mems]
        self.lens = [sum(tf.values()) for tf in self.tfs]
        self.avg = sum(self.lens) / max(len(self.lens), 1)
        df: Counter[str] = Counter()
        for tf in self.tfs:
            df.update(tf.keys())
        n = len(self.mems)
        self.idf = {t: math.log((n - d + 0.5) / (d + 0.5) + 1.0) for t, d in df.items()}

    def search(self, text: str, viewer: Viewer, limit: int) -> list[str]:
        qt = set(sparse.bigrams(text))
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
    index_s: float = 0.0
    queries: int = 0
    query_s: float = 0.0


async def run_store_variants(
    mems: list[Memory],
    queries: list[Query],
    embedder: Any,
    variants: dict[str, dict[str, Any]],
    dup_threshold: float | None,
    timing: Timing,
) -> dict[str, dict[str, list[str]]]:
    """Index once, then run every variant (store options) over all queries; check visibility of hits."""
    by_id = {m.id: m for m in mems}
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeMemoryStore(tmp, embedder, dup_threshold=dup_threshold)
        t0 = time.perf_counter()
        for i in range(0, len(mems), 64):
            await store.add_many(mems[i : i + 64])
        timing.index_s += time.perf_counter() - t0
        timing.docs += len(mems)
        out: dict[str, dict[str, list[str]]] = {}
        invisible = 0
        for name, opts in variants.items():
            for k, v in opts.items():
                setattr(store, k, v)
            res: dict[str, list[str]] = {}
            t0 = time.perf_counter()
            for q in queries:
                hits = await store.search(q.text, q.viewer, limit=10)
                res[q.id] = [h.memory.id for h in hits]
                invisible += sum(not is_visible(by_id[h.memory.id], q.viewer) for h in hits)
            timing.query_s += time.perf_counter() - t0
            timing.queries += len(queries)
            out[name] = res
        await store.close()
    if invisible:
        print(f"!! {invisible} returned hits were not visible to their viewer", file=sys.stderr)
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense", "rerank": False},
    "dense+recency": {"mode": "dense", "rerank": True},
    "hybrid": {"mode": "hybrid", "rerank": False},
    "hybrid+recency": {"mode": "hybrid", "rerank": True},
}


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
    dup_threshold: float | None,
    timing: Timing,
    chosen: str,
) -> None:
    mems, queries = loader(path)
    results = asyncio.run(run_store_variants(mems, queries, embedder, VARIANTS, dup_threshold, timing))
    bm = Bm25Bigram(mems)
    results["bm25-bigram"] = {q.id: bm.search(q.text, q.viewer, 10) for q in queries}
    names = {n: (f"{n} (chosen)" if n == chosen else n) for n in results}
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
        scored = {names[n]: score_ko(queries, r) for n, r in results.items()}
        table(
            f"Korean set ({len(mems)} memories, {len(queries)} queries): recall@5",
            {n: s["recall"] for n, s in scored.items()},
            ["overall", *kinds],
            {n: str(s["leaks"]) for n, s in scored.items()},
        )
    else:
        cats = ["overall", "1", "2", "3", "4"]
        scored = {names[n]: score_locomo(queries, r) for n, r in results.items()}
        for k in ("r@10", "r@5"):
            table(
                f"LoCoMo ({len(mems)} memories, {len(queries)} queries): {k} (1 multi-hop, 2 temporal, "
                "3 open-domain, 4 single-hop)",
                {n: s[k] for n, s in scored.items()},
                cats,
                {},
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ko", type=Path, default=DATA / "ko_memory_dev.jsonl")
    ap.add_argument("--locomo", type=Path, default=DATA / "locomo_dev.json")
    ap.add_argument("--embedder", default="default")
    ap.add_argument("--dup-threshold", type=float, default=None)
    ap.add_argument("--skip-locomo", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    emb = load_embedder(args.embedder)
    dim = emb.dim  # forces the model load
    timing = Timing(load_s=time.perf_counter() - t0)
    emb.embed_query("warm up")
    t0 = time.perf_counter()
    for i in range(20):
        emb.embed_query(f"주간회의는 언제 하나요? question {i}")
    q_ms = (time.perf_counter() - t0) / 20 * 1000
    probe = EdgeMemoryStore("/nonexistent", emb, dup_threshold=args.dup_threshold)
    chosen = f"{probe.mode}{'+recency' if probe.rerank else ''}"
    print(
        f"embedder={emb.name} dim={dim} load={timing.load_s:.2f}s query_embed={q_ms:.1f}ms "
        f"dup_threshold={probe.dup_threshold} chosen={chosen}"
    )

    bench("ko", load_ko, args.ko, emb, args.dup_threshold, timing, chosen)
    if not args.skip_locomo:
        bench("locomo", load_locomo, args.locomo, emb, args.dup_threshold, timing, chosen)
    print(
        f"\nindexing: {timing.docs} docs in {timing.index_s:.1f}s = "
        f"{timing.docs / timing.index_s:.0f} docs/s "
        f"(embed + upsert); search: {timing.query_s / timing.queries * 1000:.1f} ms/query (embed + engine)"
    )


if __name__ == "__main__":
    main()
