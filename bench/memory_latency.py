"""Engine latency of the memory store: filtered search p50/p95 and insert rate at N points.

    python bench/memory_latency.py --n 10000 [--engine edge|local|both] [--dim 384] [--queries 200]

Random unit vectors (latency does not depend on meaning), payloads spread over 2 teams, 60 channels and
300 users (80% channel, 15% personal, 5% team scope). Goes through the store's own engine code (filter
building, payload conversion, vectors returned for the rerank) but skips the embedder, whose cost is
reported by bench/memory_quality.py. "edge" is the embedded default (qdrant-edge on disk); "local" is
qdrant-client's local mode on disk, the alternative that was measured against it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mchat_bot.memory.store import EdgeMemoryStore, Memory, QdrantMemoryStore, Viewer


class RandomEmbedder:
    """Stands in for a model: only `name` and `dim` are used by the engine paths measured here."""

    def __init__(self, dim: int) -> None:
        self.name = f"random{dim}"
        self.dim = dim

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError


def make_points(n: int, dim: int, rng: np.random.Generator) -> list[tuple[Memory, list[float]]]:
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scopes = rng.choice(["channel", "user", "team"], size=n, p=[0.8, 0.15, 0.05])
    out = []
    for i in range(n):
        team = f"t{i % 2}"
        out.append(
            (
                Memory(
                    id=f"m{i:07d}",
                    text=f"memory {i}",
                    scope=str(scopes[i]),  # type: ignore[arg-type]
                    team_id=team,
                    channel_id=f"c{int(rng.integers(60))}",
                    user_id=f"u{int(rng.integers(300))}",
                    created_at=1_700_000_000.0 + i,
                ),
                vecs[i].tolist(),
            )
        )
    return out


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p))


async def measure(store: Any, points: list[tuple[Memory, list[float]]], args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for i in range(0, len(points), args.batch):
        await store._upsert(points[i : i + args.batch])
    ins = time.perf_counter() - t0
    rate = len(points) / ins
    print(f"  insert: {len(points)} points in {ins:.1f}s = {rate:,.0f} points/s (batch {args.batch})")
    if getattr(store, "_shard", None) is not None and args.optimize:
        t0 = time.perf_counter()
        await store._run(lambda s: s.optimize())
        print(f"  optimize (HNSW build): {time.perf_counter() - t0:.1f}s")
    for k in (15, 50):
        lat = []
        found = []
        for _ in range(args.queries):
            q = rng.standard_normal(args.dim).astype(np.float32)
            team, chan, user = int(rng.integers(2)), int(rng.integers(60)), int(rng.integers(300))
            viewer = Viewer(f"t{team}", f"c{chan}", f"u{user}")
            t0 = time.perf_counter()
            cands = await store._query((q / np.linalg.norm(q)).tolist(), None, viewer, k)
            lat.append((time.perf_counter() - t0) * 1000)
            found.append(len(cands))
        print(
            f"  search k={k}: p50 {pct(lat, 50):.2f} ms, p95 {pct(lat, 95):.2f} ms, max {max(lat):.2f} ms "
            f"({args.queries} queries, visibility filter, {statistics.mean(found):.0f} hits avg)"
        )
    t0 = time.perf_counter()
    for _ in range(20):
        viewer = Viewer("t0", f"c{int(rng.integers(60))}", f"u{int(rng.integers(300))}")
        await store.recent(viewer, 10)
    print(f"  recent(limit=10): {(time.perf_counter() - t0) / 20 * 1000:.2f} ms avg")


async def main_async(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    points = make_points(args.n, args.dim, rng)
    emb = RandomEmbedder(args.dim)
    engines = ["edge", "local"] if args.engine == "both" else [args.engine]
    for engine in engines:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{engine}: n={args.n} dim={args.dim}")
            if engine == "edge":
                store: Any = EdgeMemoryStore(tmp, emb)
            else:
                from qdrant_client import AsyncQdrantClient

                store = QdrantMemoryStore(AsyncQdrantClient(path=tmp), emb)
            await measure(store, points, args)
            await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--engine", choices=["edge", "local", "both"], default="edge")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--optimize", action="store_true", help="edge: build HNSW (shard.optimize) before search")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
