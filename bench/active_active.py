"""Several daemons on one PostgreSQL: replies/s and p99 reply latency with 1, 2 and 3 daemons, and
the fail-over gap (from a SIGKILL to the last reply, by the other daemon, to the mentions still
unanswered at the kill: the killed daemon's claims are among them, taken over when their lease ends).

The dev server, the fake LLM and a throwaway PostgreSQL cluster run on this machine beside the
daemons, so on 2 cores more daemons mean more processes sharing the same CPUs: this shows that
several daemons work together, not that they are faster. Each daemon keeps its own embedded memory
store (``memory.allow_embedded_with_shared_state``: no Qdrant server here).

Run: ``.venv/bin/python bench/active_active.py [mentions]`` (default 600; ~2 min).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import shared_state_daemons
from tests.support.fixtures import create_database
from tests.support.postgres import PostgresCluster, start_cluster

LEASE_S = 3.0
THREADS = 20


def first_replies(dev: DevServer) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for post in dev.posts_by(dev.seed.bot.id):
        props = post.get("props") or {}
        source = props.get("mchat_reply_to")
        if source and int(props.get("mchat_part", 0)) == 0:
            out.setdefault(str(source), post)
    return out


async def offer(
    dev: DevServer, roots: list[dict[str, Any]], n: int, tag: str, ask: str = "help"
) -> list[dict[str, Any]]:
    """n mentions as fast as the dev server takes them, round robin over the threads."""
    posts = []
    for i in range(n):
        root = roots[i % len(roots)]
        posts.append(
            await dev.user_post("kim", root["channel_id"], f"@ai {ask} {tag}{i}", root_id=root["id"])
        )
    return posts


async def until_answered(dev: DevServer, posts: list[dict[str, Any]], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = first_replies(dev)
        if all(p["id"] in got for p in posts):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("not every mention was answered")


async def throughput(cluster: PostgresCluster, folder: Path, daemons: int, n: int) -> str:
    async with DevServer() as dev, FakeLLM() as llm:
        url = create_database(cluster, f"bench_{daemons}")
        running = shared_state_daemons(dev, llm, folder / f"n{daemons}", url, daemons, lease=LEASE_S)
        await asyncio.gather(*(d.start() for d in running))
        try:
            roots = [
                await dev.user_post("kim", dev.seed.channels["qa"], f"thread {t}") for t in range(THREADS)
            ]
            started = time.monotonic()
            posts = await offer(dev, roots, n, "t")
            await until_answered(dev, posts)
            spent = time.monotonic() - started
            got = first_replies(dev)
            latency = sorted(got[p["id"]]["create_at"] - p["create_at"] for p in posts)
            p50, p99 = latency[len(latency) // 2], latency[int(len(latency) * 0.99) - 1]
            return f"{daemons} daemon(s): {n / spent:6.1f} replies/s, p50 {p50} ms, p99 {p99} ms"
        finally:
            for d in running:
                await d.stop()


async def fail_over(cluster: PostgresCluster, folder: Path, runs: int = 3) -> str:
    gaps = []
    async with DevServer() as dev, FakeLLM() as llm:
        url = create_database(cluster, "bench_failover")
        running = shared_state_daemons(dev, llm, folder / "failover", url, 2, lease=LEASE_S)
        await asyncio.gather(*(d.start() for d in running))
        try:
            roots = [
                await dev.user_post("kim", dev.seed.channels["qa"], f"thread {t}") for t in range(THREADS)
            ]
            for run in range(runs):
                llm.delay(1.0)  # questions in flight (no reply posted yet) when the kill lands
                posts = await offer(dev, roots, 20, f"f{run}-", ask="question")
                await asyncio.sleep(0.3)
                victim = running[run % 2]
                victim.kill()
                killed = time.time() * 1000
                await victim.proc.wait()  # type: ignore[union-attr]
                llm.delay(0)
                got = first_replies(dev)
                waiting = [p for p in posts if p["id"] not in got]
                await until_answered(dev, posts)
                got = first_replies(dev)
                if waiting:  # the last of them: the victim's claims, taken over once their lease ran out
                    gaps.append(max(got[p["id"]]["create_at"] for p in waiting) - killed)
                await victim.start()
        finally:
            for d in running:
                await d.stop()
    shown = ", ".join(f"{g / 1000:.2f}" for g in gaps)
    return f"fail-over gap (SIGKILL -> the last reply to what was unanswered, lease {LEASE_S:g} s): {shown} s"


async def main(n: int) -> None:
    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for daemons in (1, 2, 3) if "--fail-over-only" not in sys.argv else ():
                print(await throughput(cluster, Path(tmp), daemons, n), flush=True)
            print(await fail_over(cluster, Path(tmp)), flush=True)
    finally:
        cluster.remove()


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    asyncio.run(main(int(numbers[0]) if numbers else 600))
