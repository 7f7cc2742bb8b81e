"""`mchat-bot run | check | devserver | demo`.

Exit codes: 0 fine, 1 a problem found (check) or a failure, 2 a settings error (nothing started).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from mchat_bot.cli.settings import settings_or_exit
from mchat_bot.observe.logging import configure_logging

T = TypeVar("T")

# One BLAS/OpenMP thread: the daemon's numpy work is small (a few hundred floats per search) and
# embedding runs in its own worker thread. Pools of spinning BLAS threads burned a core between
# mentions (bench/run.py: 108 ms of CPU per mention at 10/s with the USE embedder). An operator's
# own setting wins.
_SINGLE_THREADED_MATH = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """The daemon's event loop: uvloop (libuv underneath, the asyncio API on top), whose own work
    per socket event and callback is a fraction of the pure-Python loop's; everything the daemon
    reads and writes goes through it."""
    import uvloop

    return uvloop.run(main)


def _cmd_run(args: argparse.Namespace) -> int:
    configure_logging()
    settings = settings_or_exit(args.config)
    configure_logging(settings.log.level, secrets=settings.secrets)
    from mchat_bot.app import run_daemon

    return run_event_loop(run_daemon(settings))


def _cmd_check(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    configure_logging("error", secrets=settings.secrets)
    from mchat_bot.cli.check import run_checks

    return asyncio.run(run_checks(settings))


def _cmd_devserver(argv: list[str]) -> int:
    """The dev server parses its own options (`mchat-bot devserver --help`)."""
    configure_logging("warning")
    from mchat_bot.devserver.__main__ import main as devserver_main

    return devserver_main(argv)


def _cmd_demo(args: argparse.Namespace) -> int:
    configure_logging("warning")
    from mchat_bot.cli.demo import run_demo

    return asyncio.run(run_demo())


def build_parser(*, run_only: bool = False) -> argparse.ArgumentParser:
    """All the commands, or `run` alone: the other commands' modules (the memory store, numpy,
    the backfill) cost the daemon a large part of its start-up to import, and it never uses them."""
    parser = argparse.ArgumentParser(prog="mchat-bot", description="An AI memory bot for Mattermost.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=Path("config.toml"))
    run.set_defaults(func=_cmd_run)
    if run_only:
        return parser
    check = sub.add_parser("check", help="validate settings and try the server and the LLM")
    check.add_argument("--config", type=Path, default=Path("config.toml"))
    check.set_defaults(func=_cmd_check)
    sub.add_parser("devserver", help="run the bundled dev Mattermost server (see: devserver --help)")
    demo = sub.add_parser("demo", help="play a short scripted conversation against the dev server")
    demo.set_defaults(func=_cmd_demo)
    from mchat_bot.cli.admin import add_admin_commands  # register-commands, channels, users

    add_admin_commands(sub)
    from mchat_bot.cli.memory import add_memory_commands  # `mchat-bot memory ...`

    add_memory_commands(sub)
    from mchat_bot.cli.audit import add_audit_command  # `mchat-bot audit`

    add_audit_command(sub)
    from mchat_bot.cli.knowledge import add_knowledge_commands  # `mchat-bot knowledge ...`

    add_knowledge_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for name in _SINGLE_THREADED_MATH:  # before numpy is first imported (most commands import it)
        os.environ.setdefault(name, "1")
    # What mchat-bot writes (the SQLite state and its WAL, the memory store, exports) is the bot's
    # alone: 0600 files and 0700 folders, as the unit's UMask=0077 gives, also when run by hand.
    os.umask(0o077)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["devserver"]:
        return _cmd_devserver(argv[1:])
    args = build_parser(run_only=argv[:1] == ["run"]).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
