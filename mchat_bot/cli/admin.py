"""Admin commands: `register-commands`, `channels list|enable|disable|set-webhook`, `users list`.

`register-commands` needs a token allowed to manage slash commands (a team or system admin): the
bot token by default, or MCHAT_ADMIN_TOKEN from the environment (never a command-line argument,
which other users could read from the process list).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from mchat_bot.cli.settings import command_settings
from mchat_bot.config import Settings
from mchat_bot.net.http import is_server_hook_url
from mchat_bot.pipeline.audit import record_admin  # admin commands and settings changes are audited

SLASH_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("remember", "Remember something for this channel", "TEXT"),
    ("search", "Search the memories you may see (only you see the answer)", "QUERY"),
    ("forget", "Forget a memory by id, or show candidates for a query", "ID or QUERY"),
    ("memories", "List recent memories of this channel", ""),
    ("ai", "Ask the memory bot (add --public to answer in the channel)", "[--public] QUESTION"),
)


def add_admin_commands(subparsers: Any) -> None:
    """Add the admin subcommands to `mchat-bot`'s parser (each takes `--config`)."""
    reg = subparsers.add_parser(
        "register-commands", help="create or update the slash commands in a team; prints their tokens"
    )
    reg.add_argument("--team", required=True, help="team name (as in its URL)")
    _config_arg(reg)
    reg.set_defaults(func=_cmd_register)

    ch = subparsers.add_parser("channels", help="list channels the bot has seen; switch them on or off")
    ch_sub = ch.add_subparsers(dest="channels_command", required=True)
    p = ch_sub.add_parser("list", help="list channels")
    _config_arg(p)
    p.set_defaults(func=_cmd_channels_list)
    for name, active in (("enable", True), ("disable", False)):
        p = ch_sub.add_parser(name, help=f"{name} the bot in a channel")
        p.add_argument("channel_id")
        _config_arg(p)
        p.set_defaults(func=_cmd_channels_active, active=active)
    p = ch_sub.add_parser("set-webhook", help="set (or clear with '') a channel's incoming-webhook URL")
    p.add_argument("channel_id")
    p.add_argument("url")
    _config_arg(p)
    p.set_defaults(func=_cmd_channels_webhook)

    us = subparsers.add_parser("users", help="users the bot has seen")
    us_sub = us.add_subparsers(dest="users_command", required=True)
    p = us_sub.add_parser("list", help="list users")
    _config_arg(p)
    p.set_defaults(func=_cmd_users_list)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("config.toml"))


def _settings(args: argparse.Namespace) -> Settings:
    return command_settings(args.config)


# --- register-commands ------------------------------------------------------------------------


def _cmd_register(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.http.public_url:
        print("mchat-bot: settings error: http.public_url: missing (how Mattermost reaches this daemon)")
        return 2
    token = os.environ.get("MCHAT_ADMIN_TOKEN") or settings.mattermost.token.get()
    return asyncio.run(register_commands(settings, args.team, token))


async def register_commands(settings: Settings, team_name: str, token: str) -> int:
    """Create or update the five commands; print their tokens for `webhooks.slash_tokens`."""
    from mchat_bot.mattermost.rest import MattermostError, MattermostUnavailable, RestClient

    url = settings.http.public_url.rstrip("/") + "/mattermost/slash"
    async with RestClient(
        settings.mattermost.url, token, timeout=settings.mattermost.request_timeout
    ) as rest:
        try:
            team = await rest.request("GET", f"/teams/name/{team_name}")
            existing = await rest.request(
                "GET", "/commands", params={"team_id": team["id"], "custom_only": "true"}
            )
            by_trigger = {c.get("trigger"): c for c in existing or [] if isinstance(c, dict)}
            tokens: list[str] = []
            for trigger, description, hint in SLASH_COMMANDS:
                body: dict[str, Any] = {
                    "team_id": team["id"],
                    "trigger": trigger,
                    "method": "P",
                    "url": url,
                    "display_name": f"mchat-bot {trigger}",
                    "description": description,
                    "auto_complete": True,
                    "auto_complete_desc": description,
                    "auto_complete_hint": hint,
                    "username": settings.webhooks.username,
                    "icon_url": settings.webhooks.icon_url,
                }
                old = by_trigger.get(trigger)
                if old is None:
                    cmd = await rest.request("POST", "/commands", json=body)
                    verb = "created"
                else:
                    cmd = await rest.request("PUT", f"/commands/{old['id']}", json={**old, **body})
                    verb = "updated"
                tokens.append(str(cmd.get("token", "")))
                print(f"{verb:8} /{trigger:9} id={cmd.get('id')} token={cmd.get('token')}")
        except MattermostError as exc:
            print(f"mchat-bot: Mattermost refused: {exc.status} {exc.error_id}: {exc.message}")
            if exc.status == 403:
                print("  (managing slash commands needs a team/system admin: set MCHAT_ADMIN_TOKEN)")
            return 1
        except MattermostUnavailable as exc:
            print(f"mchat-bot: Mattermost unreachable: {exc}")
            return 1
    await bind_slash_tokens(settings, tokens, str(team["id"]))
    quoted = ", ".join(f'"{t}"' for t in tokens)
    print("\nPut the tokens into the settings, e.g.:")
    print(f"  [webhooks]\n  slash_tokens = [{quoted}]")
    print(f"  or MCHAT_WEBHOOKS_SLASH_TOKENS={','.join(tokens)}")
    return 0


async def bind_slash_tokens(settings: Settings, tokens: list[str], team_id: str) -> None:
    """Record the team each token was registered in: the daemon refuses the token for any other
    team's channel (a token is a secret that team's admins can read, not a key to every team)."""
    import hashlib

    from mchat_bot.doors.web.webhooks import SLASH_TEAM_KEY
    from mchat_bot.storage import storage_for

    async with storage_for(settings.storage) as storage:
        for token in tokens:
            if token:
                await storage.set_kv(SLASH_TEAM_KEY + hashlib.sha256(token.encode()).hexdigest(), team_id)


# --- channels / users -------------------------------------------------------------------------


async def _with_mappings(settings: Settings, fn: Any) -> int:
    from mchat_bot.pipeline.mappings import Mappings
    from mchat_bot.storage import storage_for

    async with storage_for(settings.storage) as storage:
        return int(await fn(Mappings(storage)))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _cmd_channels_list(args: argparse.Namespace) -> int:
    async def run(m: Any) -> int:
        rows = await m.channels()
        print(f"{'channel id':28} {'name':24} {'team id':28} {'active':6} {'webhook':7} updated")
        for r in rows:
            hook = "yes" if r.incoming_webhook_url else "-"
            active = "yes" if r.is_active else "NO"
            print(
                f"{r.mchat_channel_id:28} {r.mchat_channel_name[:24]:24} {r.mchat_team_id:28} "
                f"{active:6} {hook:7} {_when(r.updated_at)}"
            )
        print(f"{len(rows)} channel(s)")
        return 0

    return asyncio.run(_with_mappings(_settings(args), run))


def _cmd_channels_active(args: argparse.Namespace) -> int:
    async def run(m: Any) -> int:
        await m.set_active(args.channel_id, args.active)
        await record_admin(
            m.storage, f"channels.{'enable' if args.active else 'disable'}", channel_id=args.channel_id
        )
        print(f"channel {args.channel_id}: {'enabled' if args.active else 'disabled'}")
        return 0

    return asyncio.run(_with_mappings(_settings(args), run))


def _cmd_channels_webhook(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.url and not is_server_hook_url(args.url, settings.mattermost.url):
        print(
            f"mchat-bot: expected an incoming webhook of {settings.mattermost.url} (/hooks/...) or '',"
            f" got {args.url!r}"
        )
        return 2

    async def run(m: Any) -> int:
        await m.set_webhook(args.channel_id, args.url)
        await record_admin(
            m.storage,
            "channels.set_webhook",
            channel_id=args.channel_id,
            detail="set" if args.url else "cleared",
        )
        print(f"channel {args.channel_id}: incoming webhook {'set' if args.url else 'cleared'}")
        return 0

    return asyncio.run(_with_mappings(settings, run))


def _cmd_users_list(args: argparse.Namespace) -> int:
    async def run(m: Any) -> int:
        rows = await m.users()
        print(f"{'user id':28} {'username':24} first seen")
        for r in rows:
            print(f"{r.mchat_user_id:28} {r.mchat_username[:24]:24} {_when(r.created_at)}")
        print(f"{len(rows)} user(s)")
        return 0

    return asyncio.run(_with_mappings(_settings(args), run))
