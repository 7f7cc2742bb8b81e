"""What a button press does: one function per kind, the same rules as the text commands, audited.

The door (:mod:`mchat_bot.doors.web.actions`) has checked the signature and, with the server, the
post (the bot's, in that channel), the channel and the user's membership; what a click may do is
decided here. A kind is one coroutine ``(ClickRequest) -> ClickResult`` in :attr:`Clicks.kinds`:
``register`` adds one. Undo and Forget run the ``forget ID`` command as the presser, so the
visibility and permission rules are the command's own; Undo is for the author alone. "Which is
right?" is for the two authors or a channel admin (asked of the server). Every click, allowed or
not, is an audit row with the kind, the presser and the memory ids, never a text.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mchat_bot.memory.store import MemoryStore
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.audit import Audit, AuditRow
from mchat_bot.pipeline.buttons import Click
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.message import ChannelType, IncomingMessage, Outcome
from mchat_bot.pipeline.ports import ChatServer

log = structlog.get_logger(__name__)

DOOR_ACTION = "action"
ADMIN_ROLES = frozenset({"channel_admin", "scheme_admin"})


@dataclass(frozen=True, slots=True)
class ClickRequest:
    """A click whose context was verified and whose post, channel and user the server confirmed."""

    click: Click
    user_id: str
    user_name: str
    post: dict[str, Any]  # the bot's post that carried the button, as the server has it
    channel_id: str
    channel_type: ChannelType
    channel_name: str
    team_id: str
    lang: str


@dataclass(frozen=True, slots=True)
class ClickResult:
    """What Mattermost shows: ``message`` replaces the post's text (``clear`` also takes its
    buttons off), ``ephemeral`` goes to the presser alone."""

    outcome: str  # ok | refused | not_found
    ephemeral: str = ""
    message: str | None = None
    clear: bool = False
    memory_ids: tuple[str, ...] = field(default_factory=tuple)


ClickKind = Callable[[ClickRequest], Awaitable[ClickResult]]


class Clicks:
    def __init__(self, handlers: Handlers, store: MemoryStore, chat: ChatServer, audit: Audit | None) -> None:
        self.handlers = handlers
        self.store = store
        self.chat = chat
        self.audit = audit
        self.kinds: dict[str, ClickKind] = {
            "undo": self.undo,
            "forget": self.forget,
            "choose": self.choose,
            "forget_me": self.forget_me,
        }

    def register(self, kind: str, run: ClickKind) -> None:
        self.kinds[kind] = run

    async def handle(self, req: ClickRequest) -> ClickResult:
        run = self.kinds.get(req.click.kind)
        result = ClickResult("refused", texts.click_forged(req.lang)) if run is None else await run(req)
        await self.record(req.click.kind, result.outcome, req, result.memory_ids or req.click.memory_ids)
        log.info("click", kind=req.click.kind, outcome=result.outcome, mchat_user_id=req.user_id)
        return result

    async def record(
        self, kind: str, outcome: str, req: ClickRequest | None, ids: tuple[str, ...], **kw: str
    ) -> None:
        """One audit row per click (also for refused ones the door turns away: ``req`` None)."""
        if self.audit is None:
            return
        row = AuditRow(
            at=time.time(),
            action=f"click_{kind or 'unknown'}",
            outcome=outcome,
            user_id=req.user_id if req else kw.get("user_id", ""),
            user_name=req.user_name if req else "",
            channel_id=req.channel_id if req else kw.get("channel_id", ""),
            channel_name=req.channel_name if req else "",
            team_id=req.team_id if req else "",
            door=DOOR_ACTION,
            post_id=str(req.post.get("id", "")) if req else kw.get("post_id", ""),
            memory_ids=ids,
        )
        await self.audit.record(row)

    # --- the kinds ---------------------------------------------------------------------------

    async def undo(self, req: ClickRequest) -> ClickResult:
        if req.click.user_id and req.user_id != req.click.user_id:
            author = await self._name(req.click.user_id)
            return ClickResult("refused", texts.click_not_yours(req.lang, author))
        done = await self._forget_as_presser(req, req.click.memory_ids[:1])
        if done is None:
            return ClickResult("not_found", texts.click_gone(req.lang))
        note = texts.click_undone(req.lang, req.user_name)
        return ClickResult("ok", message=_append(req.post, note), clear=True, memory_ids=done)

    async def forget(self, req: ClickRequest) -> ClickResult:
        done = await self._forget_as_presser(req, req.click.memory_ids[:1])
        if done is None:
            return ClickResult("not_found", texts.click_gone(req.lang))
        note = texts.click_forgotten(req.lang, req.user_name, done[0])
        return ClickResult("ok", message=_append(req.post, note), memory_ids=done)

    async def choose(self, req: ClickRequest) -> ClickResult:
        keep_id, drop_id = (*req.click.memory_ids, "", "")[:2]
        keep, drop = await self.store.get(keep_id), await self.store.get(drop_id)
        if keep is None or drop is None or not keep.current or not drop.current:
            return ClickResult("not_found", texts.click_gone(req.lang))
        if req.user_id not in (keep.user_id, drop.user_id) and not await self._channel_admin(req):
            return ClickResult("refused", texts.click_not_allowed_to_choose(req.lang))
        if keep.created_at >= drop.created_at:  # the newer is right: the older becomes its history
            await self.store.set_fields(keep.id, {"replaces": drop.id})
            await self.store.supersede(drop.id, keep.id, time.time())
        else:  # the earlier is right: the new one was a mistake
            await self.store.delete(drop.id)
        note = texts.click_chose(req.lang, req.user_name, keep)
        return ClickResult("ok", message=_append(req.post, note), clear=True, memory_ids=(keep.id, drop.id))

    async def forget_me(self, req: ClickRequest) -> ClickResult:
        """The confirmation button of ``forget me``: for the asker alone, in their DM."""
        if not req.click.user_id or req.user_id != req.click.user_id:
            return ClickResult(
                "refused", texts.click_not_yours(req.lang, await self._name(req.click.user_id))
            )
        choice = "confirm all" if req.click.extra.get("all") == "1" else "confirm"
        reply = await self.handlers.forget_me.handle(
            self._as_typed(req, choice), choice, req.lang, self.handlers.mention
        )
        return ClickResult(
            "ok", message=_append(req.post, reply.text), clear=True, memory_ids=reply.memory_ids
        )

    # --- helpers -----------------------------------------------------------------------------

    def _as_typed(self, req: ClickRequest, text: str) -> IncomingMessage:
        """The click as a message the presser typed in that channel (the commands' rules apply)."""
        return IncomingMessage(
            post_id=str(req.post.get("id", "")),
            channel_id=req.channel_id,
            channel_type=req.channel_type,
            channel_name=req.channel_name,
            team_id=req.team_id,
            user_id=req.user_id,
            user_name=req.user_name,
            message=text,
            create_at=int(time.time() * 1000),
            door=DOOR_ACTION,
        )

    async def _forget_as_presser(self, req: ClickRequest, ids: tuple[str, ...]) -> tuple[str, ...] | None:
        """``forget ID`` as if the presser typed it in that channel: the command's rules apply."""
        if not ids:
            return None
        reply = await self.handlers.handle_message(
            self._as_typed(req, f"{self.handlers.mention} forget {ids[0]}")
        )
        return reply.memory_ids or ids if reply.outcome is Outcome.FORGOTTEN else None

    async def _channel_admin(self, req: ClickRequest) -> bool:
        try:
            member = await self.chat.get_channel_member(req.channel_id, req.user_id)
            user = await self.chat.get_user(req.user_id)
        except Exception:  # a failed lookup refuses
            return False
        roles = set(str(member.get("roles", "")).split()) | set(str(user.get("roles", "")).split())
        return bool(roles & ADMIN_ROLES) or member.get("scheme_admin") is True or "system_admin" in roles

    async def _name(self, user_id: str) -> str:
        try:
            return str((await self.chat.get_user(user_id)).get("username") or user_id)
        except Exception:
            return user_id


def _append(post: dict[str, Any], note: str) -> str:
    return f"{post.get('message', '')}\n\n{note}".strip()
