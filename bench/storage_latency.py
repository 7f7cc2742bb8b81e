"""The inbox's cost per mention on each engine: put, claim and ack of N mentions (one thread each,
one claimer), against a SQLite file and a throwaway local PostgreSQL cluster (tests/support).

Run: ``.venv/bin/python bench/storage_latency.py [N]``; prints per-operation median and p99 in ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.storage import Storage, storage_at
from tests.support.factories import message
from tests.support.fixtures import create_database
from tests.support.postgres import start_cluster


async def measure(storage: Storage, n: int) -> dict[str, list[float]]:
    inbox = Inbox(storage)
    spent: dict[str, list[float]] = {"put": [], "claim": [], "ack": []}
    for i in range(n):
        m = message("@ai q", post_id=f"p{i}", root=f"r{i}", at=i)
        t0 = time.perf_counter()
        await inbox.put(m)
        t1 = time.perf_counter()
        [item] = await inbox.claim(1)
        t2 = time.perf_counter()
        await inbox.ack(item.post_id)
        t3 = time.perf_counter()
        spent["put"].append(t1 - t0)
        spent["claim"].append(t2 - t1)
        spent["ack"].append(t3 - t2)
    return spent


def report(name: str, spent: dict[str, list[float]]) -> None:
    parts = []
    for op, values in spent.items():
        values = sorted(values)
        p99 = values[int(len(values) * 0.99) - 1]
        parts.append(f"{op} {statistics.median(values) * 1000:.3f} / {p99 * 1000:.3f}")
    print(f"{name:<11} median / p99 ms: " + ", ".join(parts))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with storage_at(Path(folder) / "bench.sqlite3") as lite:
            report("SQLite", await measure(lite, n))
    cluster = start_cluster()
    try:
        async with storage_at(create_database(cluster, "bench")) as pg:
            report("PostgreSQL", await measure(pg, n))
    finally:
        cluster.remove()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
