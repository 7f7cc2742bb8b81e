"""The audit log: who did what, where, when, to which memories, in SQLite (table ``audit_log``).

One row per handled message (remember, forget, search, answer, memories, help, ...) is written by
the turn's audit step (:mod:`mchat_bot.pipeline.steps.audit`) from the memory ids the reply names.
Store changes outside a message (e.g. a deleted post forgetting its memory) get a row of their own
from the part that makes them. Admin commands and settings changes are recorded with :func:`record_admin`.
Rows older than ``audit.retention_days`` are pruned daily by :meth:`Audit.prune_loop`.

Texts are never stored whole: a query or argument is kept short and passed through the
sensitive-data filter, and a remembered text is not kept at all (forgetting must forget).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from mchat_bot.observe import metrics
from mchat_bot.redaction import redact
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

DETAIL_CHARS = 200
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: float
    action: str
    outcome: str = "ok"
    user_id: str = ""
    user_name: str = ""
    channel_id: str = ""
    channel_name: str = ""
    team_id: str = ""
    door: str = ""
    post_id: str = ""
    memory_ids: tuple[str, ...] = ()
    detail: str = ""
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory_ids"] = list(self.memory_ids)
        out["time"] = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")
        return out


_COLUMNS = (
    "at, action, outcome, user_id, user_name, channel_id, channel_name, team_id, door, post_id,"
    " memory_ids, detail"
)


def short_detail(text: str) -> str:
    """A short, filtered form of a user's text, safe to keep for the retention period."""
    return redact(" ".join(text.split())[:DETAIL_CHARS]).text


class Audit:
    """Writes and reads ``audit_log`` on a :class:`Storage` (the table comes with migration 3)."""

    def __init__(self, storage: Storage, *, retention_days: int = 90) -> None:
        self.storage = storage
        self.retention_days = retention_days

    async def record(self, row: AuditRow) -> None:
        """Write one row; a failing write is logged and counted, never raised (replies go on)."""
        try:  # one statement: one hop, one commit
            await self.storage.execute(
                f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.at,
                    row.action,
                    row.outcome,
                    row.user_id,
                    row.user_name,
                    row.channel_id,
                    row.channel_name,
                    row.team_id,
                    row.door,
                    row.post_id,
                    json.dumps(list(row.memory_ids)),
                    row.detail,
                ),
            )
        except Exception as exc:
            metrics.AUDIT_WRITE_ERRORS.inc()
            log.error("audit.write_failed", action=row.action, error=type(exc).__name__)

    async def query(
        self,
        *,
        since: float = 0.0,
        until: float = 0.0,
        user: str = "",
        channel: str = "",
        action: str = "",
        limit: int = 1000,
    ) -> list[AuditRow]:
        """Rows oldest first; ``user``/``channel`` match an id or a name."""
        where = ["at >= ?"]
        params: list[Any] = [since]
        if until:
            where.append("at < ?")
            params.append(until)
        if user:
            where.append("(user_id = ? OR user_name = ?)")
            params += [user, user.lstrip("@")]
        if channel:
            where.append("(channel_id = ? OR channel_name = ?)")
            params += [channel, channel.lstrip("~")]
        if action:
            where.append("action = ?")
            params.append(action)
        params.append(max(1, limit))
        rows = await self.storage.fetchall(
            f"SELECT id, {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)}"
            " ORDER BY at DESC, id DESC LIMIT ?",
            params,
        )
        out = [
            AuditRow(
                id=int(r[0]),
                at=float(r[1]),
                action=str(r[2]),
                outcome=str(r[3]),
                user_id=str(r[4]),
                user_name=str(r[5]),
                channel_id=str(r[6]),
                channel_name=str(r[7]),
                team_id=str(r[8]),
                door=str(r[9]),
                post_id=str(r[10]),
                memory_ids=tuple(json.loads(r[11] or "[]")),
                detail=str(r[12]),
            )
            for r in rows
        ]
        out.reverse()
        return out

    async def forget_details(self, user_id: str) -> int:
        """Blank the text snippets of ``user_id``'s rows (``forget me``): the actions stay, who did
        them and when, never what they wrote; how many rows had one."""
        rows = await self.storage.execute_returning(
            "UPDATE audit_log SET detail = '' WHERE user_id = ? AND detail != '' RETURNING id", (user_id,)
        )
        return len(rows)

    async def prune(self, now: float | None = None) -> int:
        """Delete rows older than the retention period; returns how many."""
        cutoff = (now if now is not None else time.time()) - self.retention_days * DAY_S
        n = await self.storage.execute("DELETE FROM audit_log WHERE at < ?", (cutoff,))
        if n:
            log.info("audit.pruned", rows=n, retention_days=self.retention_days)
        return n

    async def prune_loop(self, every: float = DAY_S) -> None:
        """For the supervisor: prune now, then once a day."""
        while True:
            await self.prune()
            await asyncio.sleep(every)


async def record_admin(
    storage: Storage, action: str, *, channel_id: str = "", team_id: str = "", detail: str = ""
) -> None:
    """An admin command or settings change made from the command line (who = the OS user)."""
    try:
        who = getpass.getuser()
    except Exception:
        who = "?"
    await Audit(storage).record(
        AuditRow(
            at=time.time(),
            action=action,
            user_name=who,
            channel_id=channel_id,
            team_id=team_id,
            door="cli",
            detail=short_detail(detail) if detail else "",
        )
    )
