"""One memory as one JSONL row: the format `mchat-bot memory export` writes and `memory import` reads.

Shared by the CLI and by the bot's own `export` command, so both write the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mchat_bot.memory.store import Memory


def iso(ts: float) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts and ts > 0 else None


def to_json(m: Memory) -> dict[str, Any]:
    return {
        "id": m.id,
        "text": m.text,
        "scope": m.scope,
        "team_id": m.team_id,
        "channel_id": m.channel_id,
        "user_id": m.user_id,
        "category": m.category,
        "created_at": iso(m.created_at),
        "valid_until": iso(m.valid_until),
        "source_post_id": m.source_post_id,
        "user_name": m.user_name,
        "permalink": m.permalink,
        "replaces": m.replaces,
        "superseded_by": m.superseded_by,
        "valid_from": iso(m.valid_from),
    }
