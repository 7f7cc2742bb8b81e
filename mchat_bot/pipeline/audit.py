"""The audit log: who did what, where, when, to which memories, in SQLite (table ``audit_log``).

Recorded without touching the handlers: :class:`AuditTrail` wraps the pipeline's ``handle_fn``
(one row per handled message: remember, forget, search, answer, memories, help, ...) and wraps the
memory store (:class:`AuditedStore`) to learn which memory ids each message added, deleted,
superseded or was shown. Store calls outside a message (e.g. a deleted post forgetting its memory)
get a row of their own. Admin commands and settings changes are recorded with :func:`record_admin`.
Rows older than ``audit.retention_days`` are pruned daily by :meth:`Audit.prune_loop`.

Texts are never stored whole: a query or argument is kept short and passed through the
sensitive-data filter, and a remembered text is not kept at all (forgetting must forget).
"""

from __future__ import annotations

import asyncio
import contextvars
import getpass
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from mchat_bot.observe import metrics
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.router import BotIdentity, Command, Ignore, route
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


# --- what one handled message did ----------------------------------------------------------------


@dataclass(slots=True)
class _Acts:
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)

    def ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for mid in (*self.added, *self.deleted, *self.superseded, *self.shown):
            seen.setdefault(mid, None)
        return tuple(seen)


_ACTS: contextvars.ContextVar[_Acts | None] = contextvars.ContextVar("mchat_audit_acts", default=None)


def _outcome(action: str, acts: _Acts) -> str:
    if action == "remember":
        return "ok" if acts.added else "refused"
    if action == "forget":
        return "ok" if acts.deleted else "no_change"
    return "ok"


class AuditTrail:
    """Wraps the pipeline's ``handle_fn`` and the memory store; one audit row per handled message.

    It also binds the seed's log fields (mchat_channel_id, mchat_user_id, action) for every log
    line made while a message is handled, logs ``handled`` with latency_ms and memory_count, and
    counts ``mchat_messages_processed_total``.
    """

    def __init__(self, audit: Audit, bot: BotIdentity) -> None:
        self.audit = audit
        self.bot = bot

    def wrap_handle(
        self, handle_fn: Callable[[IncomingMessage], Awaitable[str]]
    ) -> Callable[[IncomingMessage], Awaitable[str]]:
        async def handle(msg: IncomingMessage) -> str:
            routed = route(msg, self.bot)
            if isinstance(routed, Ignore):
                return await handle_fn(msg)
            action = routed.name if isinstance(routed, Command) else "answer"
            arg = routed.arg if isinstance(routed, Command) else routed.text
            acts = _Acts()
            token = _ACTS.set(acts)
            llm_failed: list[str] = []
            llm_token = metrics.LLM_FAILED.set(llm_failed)
            started = time.monotonic()
            outcome = "error"
            try:
                with structlog.contextvars.bound_contextvars(
                    mchat_channel_id=msg.channel_id, mchat_user_id=msg.user_id, action=action
                ):
                    text = await handle_fn(msg)
                    outcome = "llm_error" if llm_failed else _outcome(action, acts)
                    latency = time.monotonic() - started
                    log.info(
                        "handled",
                        post_id=msg.post_id,
                        door=msg.door,
                        latency_ms=round(latency * 1000, 1),
                        memory_count=len(acts.ids()),
                        outcome=outcome,
                    )
                return text
            finally:
                _ACTS.reset(token)
                metrics.LLM_FAILED.reset(llm_token)
                seconds = time.monotonic() - started
                metrics.HANDLE_LATENCY.labels(action=action).observe(seconds)
                metrics.MESSAGES_PROCESSED.labels(door=msg.door, action=action, outcome=outcome).inc()
                detail = "" if action == "remember" else arg  # a remembered text is not kept here
                await self.audit.record(
                    AuditRow(
                        at=time.time(),
                        action=action,
                        outcome=outcome,
                        user_id=msg.user_id,
                        user_name=msg.user_name,
                        channel_id=msg.channel_id,
                        channel_name=msg.channel_name,
                        team_id=msg.team_id,
                        door=msg.door,
                        post_id=msg.post_id,
                        memory_ids=acts.ids(),
                        detail=short_detail(detail) if detail else "",
                    )
                )

        return handle

    def wrap_store(self, store: Any) -> AuditedStore:
        return AuditedStore(store, self.audit)


class AuditedStore:
    """A transparent proxy of the memory store that notes memory ids (and times searches).

    Methods it does not know are passed through unchanged, so the store may grow.
    """

    def __init__(self, store: Any, audit: Audit) -> None:
        self._store = store
        self._audit = audit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def add(self, memory: Any) -> None:
        await self._store.add(memory)
        await self._added([memory])

    async def add_many(self, memories: Sequence[Any]) -> None:
        await self._store.add_many(memories)
        await self._added(list(memories))

    async def add_embedded(self, items: list[tuple[Any, list[float]]]) -> None:
        await self._store.add_embedded(items)
        await self._added([m for m, _ in items])

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        return await self._searched(self._store.search, *args, **kwargs)

    async def search_all(self, *args: Any, **kwargs: Any) -> Any:
        return await self._searched(self._store.search_all, *args, **kwargs)

    async def delete(self, memory_id: str) -> bool:
        done = bool(await self._store.delete(memory_id))
        if done:
            acts = _ACTS.get()
            if acts is not None:
                acts.deleted.append(memory_id)
            else:
                await self._audit.record(AuditRow(at=time.time(), action="forget", memory_ids=(memory_id,)))
        return done

    async def supersede(self, old_id: str, new_id: str, at: float) -> bool:
        done = bool(await self._store.supersede(old_id, new_id, at))
        if done:
            acts = _ACTS.get()
            if acts is not None:
                acts.superseded.append(old_id)
            else:
                await self._audit.record(
                    AuditRow(at=time.time(), action="supersede", memory_ids=(old_id, new_id))
                )
        return done

    async def count_by_scope(self) -> dict[str, int]:
        """Memories per scope when the store can say; otherwise the total under ``all``."""
        by_scope = getattr(self._store, "count_by_scope", None)
        if by_scope is not None:
            return dict(await by_scope())
        return {"all": int(await self._store.count())}

    async def _searched(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        hits = await fn(*args, **kwargs)
        metrics.MEMORY_SEARCH_LATENCY.observe(time.monotonic() - started)
        acts = _ACTS.get()
        if acts is not None:
            acts.shown.extend(str(h.memory.id) for h in hits)
        return hits

    async def _added(self, memories: list[Any]) -> None:
        acts = _ACTS.get()
        for m in memories:
            metrics.MEMORY_SAVED.labels(scope=str(getattr(m, "scope", "channel"))).inc()
            if acts is not None:
                acts.added.append(str(m.id))
        if acts is None and memories:
            first = memories[0]
            await self._audit.record(
                AuditRow(
                    at=time.time(),
                    action="remember",
                    user_id=str(getattr(first, "user_id", "")),
                    user_name=str(getattr(first, "user_name", "")),
                    channel_id=str(getattr(first, "channel_id", "")),
                    team_id=str(getattr(first, "team_id", "")),
                    post_id=str(getattr(first, "source_post_id", "")),
                    memory_ids=tuple(str(m.id) for m in memories),
                )
            )


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
