"""`make bench`'s summary phase: a 2,000-message day of a learning channel, summarised by the real
daemon against the dev server, with the fake LLM (which counts the calls and the tokens it is
sent) and without an LLM. Reports wall time (question posted to final reply), LLM calls, tokens
sent and whether the budget (``knowledge.summary_budget_tokens``) held; writes bench/summary.md.

    python bench/summary_bench.py [--messages 2000] [--budget 24000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.daemon import replies_to, start_daemon, stop_daemon, wait_ready, write_config
from mchat_bot.devserver.fake_llm import FakeLLM

BENCH = Path(__file__).resolve().parent
TOPICS = (
    "Decided: lot {k} goes to line {l}",
    "Who signs the lot {k} order for line {l}?",
    "@lee will send the lot {k} certificate by Friday",
    "moisture on lot {k} was {p}% this morning, salt test {p} mg",
    "lot {k} passed the salt test; line {l} restarts at 14:00",
)


def lines_of(db: Path, channel_id: str) -> int:
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT count(*) FROM knowledge_line WHERE channel_id = ?", (channel_id,)
            ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return int(row[0])


async def one_run(
    dev: DevServer, llm: FakeLLM, folder: Path, env: dict[str, str], n: int
) -> dict[str, float]:
    qa = dev.seed.channels["qa"]
    config = write_config(folder, dev.url, llm.url)
    proc = await start_daemon(config, dev.seed.bot.token, folder / "daemon.log", env)
    try:
        await wait_ready(dev, proc, 120)
        db = folder / "mchat_bot.sqlite3"
        if lines_of(db, qa) < n:
            for i in range(n):
                text = TOPICS[i % len(TOPICS)].format(k=i % 37, l=i % 5, p=i % 23) + f" (#{i})"
                await dev.user_post(("kim", "lee", "park")[i % 3], qa, text)
            deadline = time.monotonic() + 120
            while lines_of(db, qa) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not learn the day in 120 s")
                await asyncio.sleep(0.1)
        llm.reset()
        started = time.monotonic()
        post = await dev.user_post("kim", qa, "@ai summarize")
        [reply] = await replies_to(dev, post, timeout=120)
        wall = time.monotonic() - started
        sizes = [sum(len(str(m.get("content", ""))) for m in body["messages"]) for body in llm.requests]
        return {
            "wall_s": wall,
            "calls": len(llm.requests),
            "tokens": llm.prompt_tokens,
            "largest_call_tokens": max(sizes, default=0) / 3,
            "links": reply["message"].count("/_redirect/pl/"),
            "sampled": "even sample" in reply["message"],
            "read": float(m.group(1)) if (m := re.search(r"even sample of (\d+)", reply["message"])) else n,
        }
    finally:
        await stop_daemon(proc)


async def main(n: int, budget: int, chunk: int) -> None:
    async with DevServer() as dev, FakeLLM() as llm:
        env = {
            "MCHAT_KNOWLEDGE_CHANNELS": dev.seed.channels["qa"],
            "MCHAT_KNOWLEDGE_SUMMARY_BUDGET_TOKENS": str(budget),
            "MCHAT_KNOWLEDGE_SUMMARY_CHUNK_TOKENS": str(chunk),
        }
        with tempfile.TemporaryDirectory(prefix="mchat-summary-") as tmp:
            folder = Path(tmp)
            with_llm = await one_run(dev, llm, folder, env, n)
            without = await one_run(dev, llm, folder, env | {"MCHAT_LLM_MODEL": ""}, n)
    held = with_llm["tokens"] <= budget
    how = (
        f"read as an even sample of {with_llm['read']:,.0f} messages (said in the answer)"
        if with_llm["sampled"]
        else "read whole"
    )
    md = [
        "## Summary of a day (`bench/summary_bench.py`)",
        "",
        f"A {n:,}-message day of a learning channel, `@ai summarize` (the last 24 hours) through the real "
        f"daemon; budget {budget:,} tokens, chunks of {chunk:,} (tokens estimated as characters / 3).",
        "",
        "| | wall time (question to final reply) | LLM calls | tokens sent | largest call | permalinks |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| fake LLM | {with_llm['wall_s']:.2f} s | {with_llm['calls']:.0f} | {with_llm['tokens']:,.0f} "
        f"| {with_llm['largest_call_tokens']:,.0f} | {with_llm['links']:.0f} |",
        f"| no LLM (extractive) | {without['wall_s']:.2f} s | 0 | 0 | - | {without['links']:.0f} |",
        "",
        f"Budget held: **{'yes' if held else 'NO'}** ({with_llm['tokens']:,.0f} ≤ {budget:,});"
        f" the day was {how}.",
        "",
    ]
    (BENCH / "summary.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    if not held:
        raise SystemExit("the summary budget did not hold")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--budget", type=int, default=24000)
    ap.add_argument("--chunk", type=int, default=3000)
    args = ap.parse_args()
    asyncio.run(main(args.messages, args.budget, args.chunk))
