"""Command line: run the dev server, print the seed, write it as JSON, stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from mchat_bot.devserver.server import DevServer


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="mchat-bot devserver", description="Run the Mattermost dev server.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8065)
    ap.add_argument("--bot-token", default=None, help="fixed token for the bot (random otherwise)")
    ap.add_argument(
        "--user-token",
        action="append",
        default=[],
        metavar="NAME=TOKEN",
        help="fixed token for a user, repeatable",
    )
    ap.add_argument("--seed-file", default=None, help="write the seed (url, ids, tokens) here as JSON")
    ap.add_argument("--ws-ping-interval", type=float, default=60.0)
    return ap.parse_args(argv)


async def run_devserver_cli(
    host: str = "127.0.0.1",
    port: int = 8065,
    bot_token: str | None = None,
    *,
    user_tokens: dict[str, str] | None = None,
    seed_file: str | None = None,
    ws_ping_interval: float = 60.0,
) -> None:
    """Serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with DevServer(host, port, bot_token, ws_ping_interval, user_tokens=user_tokens) as dev:
        print(dev.seed.to_text(dev.url), flush=True)
        if seed_file:
            data = json.dumps(dev.seed.to_json(dev.url), ensure_ascii=False, indent=2)
            await asyncio.to_thread(Path(seed_file).write_text, data, "utf-8")
        await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)


async def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    tokens: dict[str, str] = {}
    for item in args.user_token:
        name, sep, tok = item.partition("=")
        if not sep or not name or not tok:
            print(f"--user-token expects NAME=TOKEN, got {item!r}", file=sys.stderr)
            return 2
        tokens[name] = tok
    await run_devserver_cli(
        args.host,
        args.port,
        args.bot_token,
        user_tokens=tokens,
        seed_file=args.seed_file,
        ws_ping_interval=args.ws_ping_interval,
    )
    return 0
