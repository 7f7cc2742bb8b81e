"""`mchat-bot knowledge backfill | status`: channel knowledge by hand.

`backfill` reads a learning channel's history over REST into the daemon's SQLite log, with a
progress bar; the running daemon's indexer embeds what it finds there (the embedded vector store
admits one process, so this command never opens it). It is restartable: killed halfway, it resumes
from the cursor saved after every page. The channel must learn already (`knowledge.channels` or
`@ai learn on`), so that the daemon searches what is read.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mchat_bot.cli.settings import command_settings
from mchat_bot.doors.backfill import Backfill, Progress, since_ms
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline.audit import record_admin
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.storage import storage_for

EXIT_NOT_LEARNING = 1
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)d$")


def add_knowledge_commands(subparsers: Any) -> None:
    kn = subparsers.add_parser("knowledge", help="channel knowledge: backfill a channel's history, status")
    sub = kn.add_subparsers(dest="knowledge_command", required=True)
    p = sub.add_parser("backfill", help="read a learning channel's history into the knowledge log")
    p.add_argument("--channel", required=True, help="channel id")
    p.add_argument(
        "--since", default="90d", type=_days, help="how far back, in days: 90d (default), 0d = all"
    )
    p.add_argument("--config", type=Path, default=Path("config.toml"))
    p.set_defaults(func=_cmd_backfill)
    p = sub.add_parser("status", help="messages kept and waiting to be embedded")
    p.add_argument("--config", type=Path, default=Path("config.toml"))
    p.set_defaults(func=_cmd_status)


def _days(text: str) -> float:
    m = _SINCE.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a number of days like 90d, got {text!r}")
    return float(m.group(1))


def _cmd_backfill(args: argparse.Namespace) -> int:
    return asyncio.run(_backfill(args))


async def _backfill(args: argparse.Namespace) -> int:
    s = command_settings(args.config)
    async with storage_for(s.storage) as storage:
        channels = await LearningChannels(storage, s.knowledge.channels).load()
        if not channels.learns(args.channel, "P"):
            print(
                f"mchat-bot: channel {args.channel} does not learn: list it in knowledge.channels or say"
                " `@ai learn on` there first",
                file=sys.stderr,
            )
            return EXIT_NOT_LEARNING
        async with RestClient(
            s.mattermost.url, s.mattermost.token.get(), timeout=s.mattermost.request_timeout
        ) as rest:
            me = await rest.get_me()
            bot = BotIdentity(str(me["id"]), str(me["username"]), tuple(s.mattermost.aliases))
            lines = await ChatLog(storage).load()
            learner = Learner(channels, lines, bot.user_id, wake=lambda: None)
            bar = tqdm(unit=" posts", desc=f"backfill {args.channel}", file=sys.stderr)

            async def show(progress: Progress) -> None:
                bar.update(progress.read - bar.n)
                bar.set_postfix(kept=progress.kept)

            try:
                result = await Backfill(rest, learner, channels, bot).run(
                    args.channel, since_ms(args.since), show
                )
            finally:
                bar.close()
        await record_admin(
            storage, "knowledge_backfill", channel_id=args.channel, detail=f"since={args.since}d"
        )
    print(f"read {result.read} posts, kept {result.kept} new or changed messages")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    s = command_settings(args.config)
    async with storage_for(s.storage) as storage:
        kept, backlog = await ChatLog(storage).sizes()
        rows = await storage.fetchall(
            "SELECT channel_id, count(*) FROM knowledge_line GROUP BY channel_id ORDER BY 2 DESC"
        )
    print(f"messages kept: {kept}, waiting to be embedded: {backlog}")
    for channel_id, count in rows:
        print(f"  {channel_id}  {count}")
    return 0
