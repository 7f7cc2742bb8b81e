"""`mchat-bot audit`: read the audit log (the table and its rows live in ``pipeline/audit.py``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mchat_bot.cli.settings import command_settings
from mchat_bot.pipeline.audit import Audit, AuditRow
from mchat_bot.storage import storage_for

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: float | None = None) -> float:
    """``24h``, ``7d``, ``30m``, an ISO date or date-time (UTC unless it says), or epoch seconds."""
    now = time.time() if now is None else now
    value = value.strip()
    m = _RELATIVE.match(value)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since: expected e.g. 24h, 7d, 2024-05-01 or 2024-05-01T09:00, got {value!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def add_audit_command(subparsers: Any) -> None:
    """`mchat-bot audit --config --since --user --channel [--action] [--limit] [--jsonl]`."""
    p = subparsers.add_parser("audit", help="show the audit log (who did what, where, when)")
    p.add_argument("--config", type=Path, default=Path("config.toml"))
    p.add_argument("--since", default="24h", help="24h, 7d, 2024-05-01, ... (default: 24h)")
    p.add_argument("--until", default="", help="same forms as --since (default: now)")
    p.add_argument("--user", default="", help="user id or username")
    p.add_argument("--channel", default="", help="channel id or name")
    p.add_argument("--action", default="", help="remember, forget, search, answer, channels.disable, ...")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since)
        until = parse_since(args.until) if args.until else 0.0
    except ValueError as exc:
        print(f"mchat-bot: {exc}", file=sys.stderr)
        return 2
    settings = command_settings(args.config)

    async def run() -> list[AuditRow]:
        async with storage_for(settings.storage) as storage:
            return await Audit(storage).query(
                since=since,
                until=until,
                user=args.user,
                channel=args.channel,
                action=args.action,
                limit=args.limit,
            )

    rows = asyncio.run(run())
    if args.jsonl:
        for row in rows:
            print(json.dumps(row.to_dict(), ensure_ascii=False))
        return 0
    print(f"{'time (UTC)':20} {'action':18} {'outcome':9} {'user':16} {'channel':20} memory ids / detail")
    for row in rows:
        when = datetime.fromtimestamp(row.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        user = row.user_name or row.user_id or "-"
        channel = row.channel_name or row.channel_id or "-"
        tail = ",".join(row.memory_ids)
        if row.detail:
            tail = f"{tail} {row.detail!r}".strip()
        print(f"{when:20} {row.action[:18]:18} {row.outcome[:9]:9} {user[:16]:16} {channel[:20]:20} {tail}")
    print(f"{len(rows)} row(s) since {datetime.fromtimestamp(since, UTC) - timedelta(0):%Y-%m-%d %H:%M} UTC")
    return 0
