"""The audit step: one ``audit_log`` row per handled message, with the memory ids its reply names.

It also binds the log fields (mchat_channel_id, mchat_user_id, action) for every log line made
while the message is handled, logs ``handled`` with latency_ms and memory_count, and counts
``mchat_messages_processed_total`` and the memories saved. What happened is read from the typed
reply (its outcome and ids), never from its text.
"""

from __future__ import annotations

import time

import structlog

from mchat_bot.observe import metrics
from mchat_bot.pipeline.audit import Audit, AuditRow, short_detail
from mchat_bot.pipeline.message import Outcome, Reply
from mchat_bot.pipeline.router import Command, Ignore
from mchat_bot.pipeline.turn import Next, Turn

log = structlog.get_logger(__name__)


def audit_outcome(action: str, reply: Reply | None) -> str:
    """The ``outcome`` column: ok, refused (nothing stored, or not allowed), no_change (nothing
    forgotten), not_found (nothing shown), llm_error or error."""
    if reply is None or reply.outcome is Outcome.FAILED:
        return "error"
    if reply.outcome is Outcome.LLM_FAILED:
        return "llm_error"
    if action == "remember":
        return "ok" if reply.outcome is Outcome.STORED else "refused"
    if action == "forget":
        return "ok" if reply.outcome is Outcome.FORGOTTEN else "no_change"
    if reply.outcome is Outcome.REFUSED:
        return "refused"
    if reply.outcome is Outcome.NOTHING_FOUND:
        return "not_found"  # e.g. the history of an id the asker may not see: nothing was shown
    return "ok"


class AuditStep:
    def __init__(self, audit: Audit) -> None:
        self.audit = audit

    async def __call__(self, turn: Turn, next: Next) -> None:
        routed, msg = turn.routed, turn.msg
        if isinstance(routed, Ignore):
            await next(turn)
            return
        action = routed.name if isinstance(routed, Command) else "answer"
        arg = routed.arg if isinstance(routed, Command) else routed.text
        started = time.monotonic()
        outcome = "error"
        try:
            with structlog.contextvars.bound_contextvars(
                mchat_channel_id=msg.channel_id, mchat_user_id=msg.user_id, action=action
            ):
                await next(turn)
                outcome = audit_outcome(action, turn.reply)
                log.info(
                    "handled",
                    post_id=msg.post_id,
                    door=msg.door,
                    latency_ms=round((time.monotonic() - started) * 1000, 1),
                    memory_count=len(turn.memory_ids),
                    outcome=outcome,
                )
        finally:
            metrics.HANDLE_LATENCY.labels(action=action).observe(time.monotonic() - started)
            metrics.MESSAGES_PROCESSED.labels(door=msg.door, action=action, outcome=outcome).inc()
            for scope in turn.reply.saved_scopes if turn.reply is not None else ():
                metrics.MEMORY_SAVED.labels(scope=scope).inc()
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
                    memory_ids=turn.memory_ids,
                    detail=short_detail(detail) if detail else "",
                )
            )

    async def settle(self, turn: Turn) -> None:
        return None
