"""Reply latency as a user sees it: from a user's POST /posts to the bot's reply in the thread.

Runs the dev server and the fake LLM in this process and the real daemon as a child process:
    .venv/bin/python bench/reply_latency.py [--n 50] [--gap 0.2]
Requests are spaced by `--gap` seconds, so what is measured is one reply at a time, not the daemon's
REST pacing (at most mattermost.safety_rate_per_sec, 1000 calls/s by default, against a server
without rate headers).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.daemon import replies_to, start_daemon, stop_daemon, wait_ready, write_config
from mchat_bot.devserver.fake_llm import FakeLLM

GAP_S = 0.2


async def measure(dev: DevServer, channel_id: str, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        await asyncio.sleep(GAP_S)
        started = time.perf_counter()
        post = await dev.user_post("kim", channel_id, text)
        await replies_to(dev, post, timeout=30)
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"| {name} | {len(ms)} | {q[49]:.1f} | {q[94]:.1f} | {max(ms):.1f} |"


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with DevServer() as dev, FakeLLM() as llm:
            config = write_config(Path(tmp), dev.url, llm.url)
            proc = await start_daemon(config, dev.seed.bot.token, Path(tmp) / "daemon.log")
            try:
                await wait_ready(dev, proc)
                qa = dev.seed.channels["qa"]
                await measure(
                    dev, qa, [f"@ai remember 라인 {i} 설비 점검은 {i % 7 + 1}요일" for i in range(20)]
                )
                rows = [
                    summary("help (DM)", await measure(dev, dev.seed.dm["kim"], ["help"] * n)),
                    summary(
                        "remember",
                        await measure(dev, qa, [f"@ai remember 측정 {i} 불량률 {i}%" for i in range(n)]),
                    ),
                    summary(
                        "search", await measure(dev, qa, [f"@ai search 설비 점검 {i}" for i in range(n)])
                    ),
                    summary(
                        "question (LLM)",
                        await measure(dev, qa, [f"@ai 라인 {i} 점검은 언제야?" for i in range(n)]),
                    ),
                ]
            finally:
                await stop_daemon(proc)
    print("| request | n | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--gap", type=float, default=GAP_S)
    args = parser.parse_args()
    GAP_S = args.gap
    asyncio.run(main(args.n))
