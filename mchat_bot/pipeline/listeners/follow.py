"""Memories follow their source post: an edit supersedes the memory, a deletion forgets it.

``post_edited`` / ``post_deleted`` events are queued here and worked off in one background task, so
the socket reader never waits for embedding or REST. Only posts that can have made a memory are
looked up (a ``remember`` addressed to the bot, a post with files, or any post of a channel with
automatic extraction). The edit keeps the old memory as history (``supersede``), the deletion
removes every memory made from the post (earlier versions and attachment pieces too) and says so
in the thread, or in the channel when the thread went with the post. Several daemons on one state
each get the event on their own socket: the one that claims it first (``Inbox.claim_event``)
follows it, so an edit makes one new version, not one per daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from typing import Any

import structlog

from mchat_bot.mattermost.events import FrameError, OtherEvent, Post
from mchat_bot.memory.store import Memory, MemoryStore, Selection, new_memory_id
from mchat_bot.observe import metrics
from mchat_bot.pipeline import router, texts
from mchat_bot.pipeline.audit import Audit, AuditRow
from mchat_bot.pipeline.handlers import guess_category
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.listeners.work import work_off
from mchat_bot.pipeline.message import ChannelType, IncomingMessage
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.router import BotIdentity, Command, detect_lang
from mchat_bot.redaction import redact

log = structlog.get_logger(__name__)

QUEUE_SIZE = 1000
DOCUMENT = "document"  # category of the pieces of an attached file (attachments.py)


async def memories_from_post(store: MemoryStore, channel_id: str, post_id: str) -> list[Memory]:
    """Every memory (superseded ones included) whose source is ``post_id``, in that post's channel."""
    return [m async for m in store.scan(Selection(channel_id=channel_id)) if m.source_post_id == post_id]


def _scope_and_text(arg: str) -> str:
    return router.parse_scope(arg)[1]


def format_updated(memory: Memory, lang: str) -> str:
    return texts.format_remembered(memory, lang) + "\n\n" + texts.source_edited_note(lang)


def format_forgotten_by_delete(memories: list[Memory], lang: str) -> str:
    current = [m for m in memories if m.valid_until <= 0] or memories
    lines = [f"- {texts.one_line(m.text, 120)} (`{texts.short_id(m.id)}`)" for m in current[:5]]
    if len(current) > 5:
        lines.append(f"- … (+{len(current) - 5})")
    return "\n".join([texts.source_deleted_head(lang, len(current)), *lines])


class Follower:
    def __init__(
        self,
        store: MemoryStore,
        rest: ChatServer,
        inbox: Inbox,
        bot: BotIdentity,
        *,
        sensitive: str = "mask",
        extract_channels: Collection[str] = (),
        audit: Audit | None = None,
    ) -> None:
        self.audit = audit  # no message is being handled here: each store change gets its own row
        self.store = store
        self.rest = rest
        self.inbox = inbox
        self.bot = bot
        self.sensitive = sensitive
        self.extract_channels = set(extract_channels)
        self.queue: asyncio.Queue[tuple[str, Post]] = asyncio.Queue(QUEUE_SIZE)
        self._channels: dict[str, dict[str, Any]] = {}
        self.updated = 0
        self.forgotten = 0

    async def on_event(self, event: object) -> None:
        """From the gateway reader: queue edits and deletions of other people's posts."""
        if not isinstance(event, OtherEvent) or event.event not in ("post_edited", "post_deleted"):
            return
        try:
            post = event.post()
        except FrameError:
            return
        if post is None or post.user_id == self.bot.user_id or post.type.startswith("system_"):
            return
        if post.original_id or not self._may_have_memories(post):
            return  # most edits: queued, they would only take room from those that matter
        try:
            self.queue.put_nowait((event.event, post))
        except asyncio.QueueFull:
            log.warning("follow.queue_full", post_id=post.id, event=event.event)

    async def run(self) -> None:
        """Work off the queue until cancelled (``work_off``: each item retried while it fails for
        a passing reason, one bad item never stops the loop)."""
        await work_off(
            self.queue, self.apply, event="follow", fields=lambda i: {"kind": i[0], "post_id": i[1].id}
        )

    async def apply(self, item: tuple[str, Post]) -> None:
        kind, post = item
        if kind == "post_edited":
            await self.edited(post)
        else:
            await self.deleted(post)

    # --- the two cases --------------------------------------------------------------------------

    async def _routed(self, post: Post) -> tuple[Command | None, str]:
        """(the remember command in the post, or None; the channel type) — no REST for most posts."""
        channel = await self._channel(post.channel_id)
        ctype: ChannelType = "O"
        for kind in ("P", "D", "G"):
            if channel.get("type") == kind:
                ctype = kind
        msg = IncomingMessage(  # what routing reads of the post (the door's conversion is above us)
            post_id=post.id,
            channel_id=post.channel_id,
            channel_type=ctype,
            channel_name=str(channel.get("name", "")),
            team_id=str(channel.get("team_id", "")),
            user_id=post.user_id,
            user_name="",
            message=post.message,
            root_id=post.root_id,
            create_at=post.create_at,
            from_bot=post.from_bot,
            from_webhook=post.from_webhook,
            post_type=post.type,
        )
        routed = router.route(msg, self.bot)
        if isinstance(routed, Command) and routed.name == "remember":
            return routed, ctype
        return None, ctype

    def _may_have_memories(self, post: Post) -> bool:
        return (
            "remember" in post.message.lower()
            or "기억" in post.message
            or bool(post.file_ids)
            or (post.channel_id in self.extract_channels)
        )

    async def edited(self, post: Post) -> None:
        if not post.edit_at:
            return  # a props-only change (reactions, pins)
        if not await self.inbox.claim_event(f"post_edited:{post.id}:{post.edit_at}"):
            return  # another daemon's socket brought the same edit, and that daemon follows it
        found = [
            m for m in await memories_from_post(self.store, post.channel_id, post.id) if m.valid_until <= 0
        ]
        found = [m for m in found if m.category != DOCUMENT]
        if not found:
            return
        command, _ = await self._routed(post)
        lang = detect_lang(post.message)
        text = _scope_and_text(command.arg) if command is not None else ""
        if not text:
            log.info("follow.edit_not_a_remember", post_id=post.id)  # left as it was
            return
        filtered = (
            redact(text, self.sensitive)
            if len(text) < 4000
            else await asyncio.to_thread(redact, text, self.sensitive)
        )
        if filtered.found and self.sensitive == "refuse":
            await self._say(
                post,
                texts.format_sensitive_refused(", ".join(sorted(filtered.counts())), lang),
                f"edit-{post.id}-{post.edit_at}",
            )
            return
        text = filtered.text
        old = found[0]
        if old.text == text:
            return
        now = time.time()
        new = Memory(
            id=new_memory_id(),
            text=text,
            category=guess_category(text),
            scope=old.scope,
            team_id=old.team_id,
            channel_id=old.channel_id,
            user_id=old.user_id,
            user_name=old.user_name,
            source_post_id=post.id,
            permalink=old.permalink,
            created_at=now,
            replaces=old.id,
        )
        await self.store.add(new)
        metrics.MEMORY_SAVED.labels(scope=new.scope).inc()
        await self._record("remember", (new.id,), new)
        for stale in found:
            if await self.store.supersede(stale.id, new.id, now):
                await self._record("supersede", (stale.id, new.id))
        self.updated += 1
        log.info("memory.followed_edit", memory_id=new.id, replaces=old.id, channel_id=post.channel_id)
        reply = format_updated(new, lang)
        confirmation = (await self.inbox.sent_parts(post.id)).get(0)
        if confirmation:
            with contextlib.suppress(Exception):
                await self.rest.patch_post(confirmation, message=reply)  # message only: markers stay
                return
        await self._say(post, reply, f"edit-{post.id}-{post.edit_at}")

    async def _record(self, action: str, memory_ids: tuple[str, ...], memory: Memory | None = None) -> None:
        if self.audit is None:
            return
        await self.audit.record(
            AuditRow(
                at=time.time(),
                action=action,
                user_id=memory.user_id if memory else "",
                user_name=memory.user_name if memory else "",
                channel_id=memory.channel_id if memory else "",
                team_id=memory.team_id if memory else "",
                post_id=memory.source_post_id if memory else "",
                memory_ids=memory_ids,
            )
        )

    async def deleted(self, post: Post) -> None:
        if not await self.inbox.claim_event(f"post_deleted:{post.id}"):
            return
        found = await memories_from_post(self.store, post.channel_id, post.id)
        if not found:
            return
        for memory in found:
            if await self.store.delete(memory.id):
                await self._record("forget", (memory.id,))
        self.forgotten += len(found)
        log.info("memory.followed_delete", post_id=post.id, memories=[m.id for m in found])
        await self._say(
            post, format_forgotten_by_delete(found, detect_lang(post.message)), f"forgot-{post.id}"
        )

    async def _say(self, post: Post, text: str, key: str) -> None:
        """In the post's thread; in the channel when the thread is gone (a deleted root takes it along)."""
        props = {"mchat_follow": post.id}
        root = post.root_id or post.id
        try:
            await self.rest.create_post(
                post.channel_id, text, root_id=root, props=props, pending_post_id=f"mchat-{key}"
            )
            return
        except Exception as exc:
            if getattr(exc, "status", None) != 400:
                log.warning("follow.say_failed", post_id=post.id, error=type(exc).__name__)
                return
        with contextlib.suppress(Exception):
            await self.rest.create_post(post.channel_id, text, props=props, pending_post_id=f"mchat-{key}-c")

    async def _channel(self, channel_id: str) -> dict[str, Any]:
        """The channel as REST gives it (its type decides what a DM's edit means); a failure
        raises, and the item is tried again (a guessed type would read a DM's ``remember`` as
        chat and leave the memory behind)."""
        if channel_id not in self._channels:
            self._channels[channel_id] = await self.rest.get_channel(channel_id)
        return self._channels[channel_id]
