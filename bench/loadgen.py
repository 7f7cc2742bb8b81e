"""Load generator: posts as users at a fixed rate, from its own process, and prints what it sent as JSON.

    python bench/loadgen.py --url URL --tokens T1,T2 --channel CID --rate 100 --duration 10 --kind question
    python bench/loadgen.py --url URL --username kim --channel CID --rate 5000 --duration 5 --kind plain

`question` and `remember` post mentions one by one through REST (POST /api/v4/posts with the users'
tokens, round robin), open loop: post i is due at t0 + i/rate whatever the answers do. `plain` posts
non-mention messages through the dev server's control API in batches every 10 ms, up to 4 in flight
(REST one by one cannot offer thousands per second from one Python process on a 2-core machine), then
`--trailing` mentions through REST, so the runner can see whether the bot kept up.
Only 127.0.0.1; every run is bounded by --duration and a 30 s drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

PLAIN_IN_FLIGHT = 4  # plain: batches posted and not yet answered
TOPICS = ("불량률", "납기", "담당자", "검사 주기", "release freeze", "owner", "defect rate", "budget")


def message(kind: str, i: int) -> str:
    """Deterministic, varied texts: questions hit the memories stored by `remember`."""
    part = f"P{i % 1000:03d}"
    topic = TOPICS[i % len(TOPICS)]
    if kind == "remember":
        if i % 2:
            who = ("김", "이", "박")[i % 3]
            return f"@ai remember 부품 {part}의 {topic}: {i % 97}% 기준, 담당 {who}과장 확인"
        return f"@ai remember Part {part} {topic} is {i % 97} percent, checked by team {i % 13}"
    if kind == "question":  # the bot's own name, so that mmpy_bot (no aliases) sees a mention too
        if i % 2:
            return f"@memorybot 부품 {part}의 {topic}는 어떻게 돼?"
        return f"@memorybot what is the {topic} of part {part}?"
    return f"just chatting about {part} {topic} number {i}, nothing for the bot"


async def post_rest(
    session: aiohttp.ClientSession, url: str, token: str, channel: str, text: str
) -> str | None:
    try:
        async with session.post(
            f"{url}/api/v4/posts",
            json={"channel_id": channel, "message": text},
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as r:
            if r.status != 201:
                return None
            body = await r.json()
            return str(body["id"])
    except (aiohttp.ClientError, TimeoutError):
        return None


async def run_mentions(args: argparse.Namespace) -> dict[str, Any]:
    tokens = [t for t in args.tokens.split(",") if t]
    n = int(args.rate * args.duration)
    ids: list[str | None] = [None] * n
    sem = asyncio.Semaphore(args.concurrency)
    late_max = 0.0
    conn = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(i: int) -> None:
            async with sem:
                ids[i] = await post_rest(
                    session,
                    args.url,
                    tokens[i % len(tokens)],
                    args.channel,
                    message(args.kind, args.offset + i),
                )

        t0 = time.monotonic()
        tasks = []
        for i in range(n):
            due = t0 + i / args.rate
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late_max = max(late_max, -wait)
            tasks.append(asyncio.create_task(one(i)))
        t_end = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    ok = [i for i in ids if i]
    return {
        "kind": args.kind,
        "rate": args.rate,
        "t0": t0,
        "t_end": t_end,
        "ids": ok,
        "errors": n - len(ok),
        "late_max_s": late_max,
    }


async def run_plain(args: argparse.Namespace) -> dict[str, Any]:
    tick = 0.01
    per_tick = max(1, round(args.rate * tick))
    ticks = int(args.duration / tick)
    sent = 0
    errors = 0
    late_max = 0.0
    # A batch is sent when due, not when the previous one was answered: one round trip at a time
    # capped the offered rate on a busy machine, whatever the server could take. A few in flight.
    in_flight = asyncio.Semaphore(PLAIN_IN_FLIGHT)

    async def batch(first: int) -> None:
        nonlocal sent, errors
        texts = [message("plain", first + j) for j in range(per_tick)]
        try:
            async with session.post(
                f"{args.url}/__dev/user_posts",
                json={"username": args.username, "channel_id": args.channel, "messages": texts},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r:
                if r.status == 201:
                    sent += len((await r.json())["ids"])
                else:
                    errors += per_tick
        except (aiohttp.ClientError, TimeoutError):
            errors += per_tick
        finally:
            in_flight.release()

    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        batches = []
        for k in range(ticks):
            due = t0 + k * tick
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late_max = max(late_max, -wait)
            await in_flight.acquire()
            batches.append(asyncio.create_task(batch(k * per_tick)))
        await asyncio.gather(*batches)
        t_end = time.monotonic()
        trailing: list[str] = []
        tokens = [t for t in args.tokens.split(",") if t]
        for j in range(args.trailing):
            pid = await post_rest(
                session, args.url, tokens[j % len(tokens)], args.channel, message("question", j)
            )
            if pid:
                trailing.append(pid)
            await asyncio.sleep(0.05)
    return {
        "kind": "plain",
        "rate": args.rate,
        "t0": t0,
        "t_end": t_end,
        "sent": sent,
        "errors": errors,
        "late_max_s": late_max,
        "achieved_rate": sent / max(1e-9, t_end - t0),
        "ids": trailing,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--channel", required=True)
    ap.add_argument("--tokens", default="", help="users' tokens, comma separated (REST posts)")
    ap.add_argument("--username", default="kim", help="plain posts are made as this user (control API)")
    ap.add_argument("--kind", choices=["question", "remember", "plain"], default="question")
    ap.add_argument("--rate", type=float, required=True, help="posts per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--offset", type=int, default=0, help="first message number (varies the texts)")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--trailing", type=int, default=3, help="plain: mentions posted after the load")
    args = ap.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        print("loadgen: only 127.0.0.1 targets", file=sys.stderr)
        return 2
    if args.duration <= 0 or args.duration > 120 or args.rate <= 0 or args.rate > 50_000:
        print("loadgen: duration in (0, 120] s and rate in (0, 50000]/s", file=sys.stderr)
        return 2
    out = asyncio.run(run_plain(args) if args.kind == "plain" else run_mentions(args))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
