"""Engine latency of the memory store: filtered search p50/p95 and insert rate at N points.

    python bench/memory_latency.py [--n 10000,100000] [--engine edge|local|both] [--dim 384] [--queries 200]

Random unit vectors and random sparse (keyword) vectors (latency does not depend on meaning), payloads
spread over 2 teams, 60 channels and 300 users (80% channel, 15% personal, 5% team scope, 10% of them
superseded). Goes through the store's own search code (the default hybrid query: dense + sparse
prefetch, RRF fusion, visibility and validity filter, vectors returned for the tie-break) but not the
embedder or the tokenizer: their costs are measured apart and printed first (per query and per
document), so insert throughput shows the engine and the embedding separately.
"edge" is the embedded default (qdrant-edge on disk); "local" is qdrant-client's local mode on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mchat_bot.memory.store import DEFAULT_TOKENIZER, EdgeMemoryStore, Memory, QdrantMemoryStore, Viewer


class RandomEmbedder:
    """Stands in for a model: only `name` and `dim` are used by the engine paths measured here."""

    def __init__(self, dim: int) -> None:
        self.name = f"random{dim}"
        self.dim = dim

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError


VOCAB = 30_000


def random_sparse(rng: np.random.Generator, n_tokens: int) -> tuple[list[int], list[float]]:
    """A Zipf-ish bag of token ids, like BM25 weights of a short text."""
    ids = sorted({int(x) % VOCAB for x in rng.zipf(1.3, size=n_tokens)})
    return ids, [float(v) for v in rng.uniform(0.5, 1.5, size=len(ids))]


def make_points(
    n: int, dim: int, rng: np.random.Generator
) -> tuple[list[tuple[Memory, list[float]]], dict[str, tuple[list[int], list[float]]]]:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scopes = rng.choice(["channel", "user", "team"], size=n, p=[0.8, 0.15, 0.05])
    out = []
    sparse_docs = {}
    for i in range(n):
        team = f"t{i % 2}"
        text = f"memory {i}"
        sparse_docs[text] = random_sparse(rng, 14)
        out.append(
            (
                Memory(
                    id=f"m{i:07d}",
                    text=text,
                    scope=str(scopes[i]),  # type: ignore[arg-type]
                    team_id=team,
                    channel_id=f"c{int(rng.integers(60))}",
                    user_id=f"u{int(rng.integers(300))}",
                    created_at=1_700_000_000.0 + i,
                    valid_until=1_700_000_100.0 + i if i % 10 == 0 else 0.0,
                ),
                vecs[i].tolist(),
            )
        )
    return out, sparse_docs


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p))


async def measure(store: Any, points: list[tuple[Memory, list[float]]], args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for i in range(0, len(points), args.batch):
        await store.add_embedded(points[i : i + args.batch])
    ins = time.perf_counter() - t0
    rate = len(points) / ins
    print(
        f"  insert (engine, vectors given): {len(points)} points in {ins:.1f}s = {rate:,.0f} points/s "
        f"(batch {args.batch})"
    )
    if getattr(store, "_shard", None) is not None and args.optimize:
        t0 = time.perf_counter()
        await store._run(lambda s: s.optimize())
        print(f"  optimize (HNSW build): {time.perf_counter() - t0:.1f}s")
    for label, mode, limit in (
        ("hybrid (default)", "hybrid", 5),
        ("hybrid", "hybrid", 10),
        ("dense", "dense", 5),
    ):
        store.mode = mode
        lat = []
        found = []
        for _ in range(args.queries):
            q = rng.standard_normal(args.dim).astype(np.float32)
            team, chan, user = int(rng.integers(2)), int(rng.integers(60)), int(rng.integers(300))
            viewer = Viewer(f"t{team}", f"c{chan}", f"u{user}")
            sq = random_sparse(rng, 6)
            t0 = time.perf_counter()
            hits = await store.search_vectors((q / np.linalg.norm(q)).tolist(), sq, viewer, limit)
            lat.append((time.perf_counter() - t0) * 1000)
            found.append(len(hits))
        print(
            f"  search {label} limit={limit}: p50 {pct(lat, 50):.2f} ms, p95 {pct(lat, 95):.2f} ms, "
            f"max {max(lat):.2f} ms ({args.queries} queries, visibility+validity filter, "
            f"{statistics.mean(found):.1f} hits avg)"
        )
    store.mode = "hybrid"
    t0 = time.perf_counter()
    for _ in range(20):
        viewer = Viewer("t0", f"c{int(rng.integers(60))}", f"u{int(rng.integers(300))}")
        await store.recent(viewer, 10)
    print(f"  recent(limit=10): {(time.perf_counter() - t0) / 20 * 1000:.2f} ms avg")


def text_costs(n_docs: int) -> None:
    """Embedding and tokenizing: what a real insert or query adds to the engine figures below."""
    from mchat_bot.memory import sparse
    from mchat_bot.memory.embedder import load_embedder

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_memory_dev.jsonl"
    if not data.exists():
        print(f"embedding and tokenizer timing skipped: no {data}")
        return
    texts = [json.loads(x)["text"] for x in data.read_text(encoding="utf-8").splitlines() if '"memory"' in x]
    texts = (texts * (n_docs // max(len(texts), 1) + 1))[:n_docs]
    emb = load_embedder("default")
    emb.embed_query("warm up")
    t0 = time.perf_counter()
    for i in range(0, len(texts), 64):
        emb.embed_documents(texts[i : i + 64])
    e = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:  # the store's own keyword tokenizer (kiwi's morphemes need the bench extra)
        sparse.document_vector(t, DEFAULT_TOKENIZER)
    k = time.perf_counter() - t0
    lat = []
    for t in texts[:50]:
        t0 = time.perf_counter()
        emb.embed_query(t)
        lat.append((time.perf_counter() - t0) * 1000)
    print(
        f"embedding ({emb.name}): {len(texts)} docs in {e:.1f}s = {len(texts) / e:.0f} docs/s; "
        f"query embedding p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms"
    )
    each = k / len(texts) * 1000
    print(f"{DEFAULT_TOKENIZER} keyword vectors: {len(texts) / k:,.0f} docs/s ({each:.2f} ms each)")


async def main_async(args: argparse.Namespace) -> None:
    engines = ["edge", "local"] if args.engine == "both" else [args.engine]
    for n in [int(x) for x in str(args.n).split(",")]:
        rng = np.random.default_rng(0)
        points, sparse_docs = make_points(n, args.dim, rng)
        emb = RandomEmbedder(args.dim)
        for engine in engines:
            with tempfile.TemporaryDirectory() as tmp:
                print(f"{engine}: n={n} dim={args.dim}")
                if engine == "edge":
                    store: Any = EdgeMemoryStore(tmp, emb, tokenizer="bigram")
                else:
                    from qdrant_client import AsyncQdrantClient

                    store = QdrantMemoryStore(AsyncQdrantClient(path=tmp), emb, tokenizer="bigram")
                store.sparse_document = sparse_docs.__getitem__  # random keyword vectors, no tokenizing
                await measure(store, points, args)
                await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="10000,100000", help="store sizes, comma-separated")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--engine", choices=["edge", "local", "both"], default="edge")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--optimize", action="store_true", help="edge: build HNSW (shard.optimize) before search")
    ap.add_argument(
        "--text-docs", type=int, default=256, help="docs for the embedding/tokenizer timing (0 = skip)"
    )
    args = ap.parse_args()
    if args.text_docs:
        text_costs(args.text_docs)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
