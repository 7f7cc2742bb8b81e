"""The WebSocket door: gateway events and REST catch-up into the durable inbox.

The gateway's reader calls `on_event` for every event in order; this only parses, routes and
enqueues, so the socket is never held up by a slow reply. When the gateway reports a gap (a
fresh `hello` after a lost connection, or missing `seq`), and once after a restart, the posts
since the last event seen are read over REST and go through the same route and dedupe; the edits
and deletions that the read finds go to the listeners (``on_missed``) as the events the socket
would have brought, so a memory or a learned line follows an edit made while the socket was down
as it follows one seen live. The catch-up is a supervised part of its own
(:meth:`Intake.run_catch_up`): a pass that fails is tried again with the one retry policy until it
succeeds, so a gap is never given up.

When several daemons share the state, the catch-up and the cursor are the leader's
(:meth:`Intake.run_as_leader`, a singleton job): the others' sockets feed the shared inbox, but
only the leader moves the cursor, so a leader that dies mid-catch-up leaves it held at the gap,
and the next leader reads from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import Line
from mchat_bot.mattermost.events import (
    ChannelType,
    OtherEvent,
    PassedPost,
    Post,
    Posted,
    parse_channel_type,
)
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.net.retry import RetryPolicy
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.router import BotIdentity, Ignore, route
from mchat_bot.pipeline.users import UserNames
from mchat_bot.storage import Storage, StorageUnavailable

log = structlog.get_logger(__name__)

CURSOR_KEY = "ws_cursor_ms"
CURSOR_FLUSH_S = 1.0
CATCH_UP_MARGIN_MS = 2_000  # clock skew and posts in flight around the gap; the inbox dedupes
SINCE_CAP = 1000  # the server's hard cap on a `since` answer
CATCH_UP_POLICY = RetryPolicy(first_delay=0.5, max_delay=60.0, tries=None)  # until it succeeds
# A put the database could not take (a PostgreSQL restart) is tried again in place, for up to about
# 25 s: the socket waits, so the posts still go in in the order the socket gave them (a post left for
# the catch-up would be answered after later posts of its thread). Longer: a gap, read by the catch-up.
PUT_POLICY = RetryPolicy(
    first_delay=0.1, max_delay=1.0, tries=30, retryable=lambda exc: isinstance(exc, StorageUnavailable)
)
MAX_PAGES = 200  # 40,000 posts in one channel during one gap: beyond that, give up on that channel


class Intake:
    def __init__(
        self,
        rest: RestClient,
        inbox: Inbox,
        storage: Storage,
        bot: BotIdentity,
        *,
        wake: Callable[[], None] = lambda: None,
        policy: RetryPolicy = CATCH_UP_POLICY,
        learner: Learner | None = None,
        on_missed: Callable[[OtherEvent], Awaitable[None]] | None = None,
    ) -> None:
        self._rest = rest
        self.on_missed = on_missed  # the listeners: edits and deletions a catch-up finds
        self._inbox = inbox
        self._storage = storage
        self._bot = bot
        self._wake = wake
        self._learner = learner
        self._cursor_ms = 0
        self._flushed_at = 0.0
        self._writes_cursor = False  # from the read of the stored cursor until the lead ends
        self._user_names = UserNames(rest.get_user, {bot.user_id: bot.username})
        self.accepted = 0
        self.ignored = 0
        self._gap_since: int | None = None  # the earliest gap not yet being read
        self._reading_since: int | None = None  # the gap the running pass is reading
        self._gap_reported = asyncio.Event()
        self.policy = policy
        self.catch_up_failures = 0  # passes that failed and were tried again
        self.catch_up_passes = 0  # passes that read every channel

    async def on_event(self, event: object) -> None:
        if isinstance(event, PassedPost):  # refused by `wants` in the reader: nothing was built
            await self._advance(event)
            self.ignored += 1
            return
        if not isinstance(event, Posted):
            return
        post = event.post
        await self._advance(post)
        if not self.wants(post.channel_id, event.channel_type, post.message):
            self.ignored += 1
            return
        await self.accept_many([message_from_posted(event)], live=True)

    def wants(self, channel_id: str, channel_type: ChannelType, message: str) -> bool:
        """A cheap test before any message is built (the gateway's ``PostFilter``, so that it runs
        before even the post is): False only for a post the route would ignore (no "@", so no
        mention of any name, and not a DM) that no learning channel wants. Most of a busy server's
        posts end here."""
        if channel_type == "D" or "@" in message:
            return True
        learner = self._learner
        return learner is not None and learner.channels.learns(channel_id, channel_type)

    async def accept(self, msg: IncomingMessage) -> bool:
        """Route one message and put it into the inbox; True when it was new and addressed to us."""
        return await self.accept_many([msg]) == 1

    async def accept_many(self, msgs: list[IncomingMessage], *, live: bool = False) -> int:
        """Route messages and put those addressed to us into the inbox together (one write for a
        catch-up page instead of one per post); returns how many were new. A learning channel's
        other posts go to the learner (``live``: the socket's, gathered and written in batches)."""
        wanted: list[tuple[IncomingMessage, str]] = []
        learned: list[Line] = []
        # nothing learns (the default): not even the per-post channel check
        learner = self._learner if self._learner is not None and self._learner.channels.any else None
        for msg in msgs:
            routed = route(msg, self._bot)
            if isinstance(routed, Ignore):
                self.ignored += 1
                line = knowledge_line(learner, msg) if learner is not None else None
                if line is not None:
                    learned.append(line)
            else:
                wanted.append((msg, type(routed).__name__.lower()))
        if learned and learner is not None:
            await (learner.gather(learned) if live else learner.keep(learned))
        if not wanted:
            return 0
        if len(wanted) == 1:
            first = wanted[0][0]
            added = [await PUT_POLICY.call(lambda: self._inbox.put(first))]
        else:
            added = await PUT_POLICY.call(lambda: self._inbox.put_many([m for m, _ in wanted]))
        found = 0
        for (msg, action), new in zip(wanted, added, strict=True):
            if not new:
                continue
            found += 1
            log.debug(  # at info, "handled" and "replied" say it once the work is done
                "accepted",
                post_id=msg.post_id,
                mchat_channel_id=msg.channel_id,
                mchat_user_id=msg.user_id,
                door=msg.door,
                action=action,
            )
        self.accepted += found
        if found:
            self._wake()
        return found

    async def _advance(self, post: Post | PassedPost) -> None:
        """Remember the newest post time seen, flushed to SQLite at most once a second."""
        stamp = max(post.create_at, post.update_at)
        if stamp > self._cursor_ms:
            self._cursor_ms = stamp
        now = time.monotonic()
        if self._writes_cursor and now - self._flushed_at >= CURSOR_FLUSH_S:
            self._flushed_at = now
            # While a gap is still being read, a restart must start from the gap, not from now.
            unwritten = self._learner.unwritten_since() if self._learner is not None else None
            pending = [t for t in (self._gap_since, self._reading_since, unwritten) if t is not None]
            durable = min([self._cursor_ms, *pending])
            await self._storage.set_kv(CURSOR_KEY, str(durable))

    async def run_as_leader(self, socket_up: asyncio.Event) -> None:
        """The singleton job: once the socket is up (so nothing falls between the read and the
        socket), read what was posted since the stored cursor, then every gap the socket reports;
        the cursor is written only meanwhile."""
        await socket_up.wait()
        try:
            await self.catch_up_after_restart()
            await self.run_catch_up()
        finally:
            self._writes_cursor = False

    async def catch_up_after_restart(self) -> None:
        """After a restart, read what was posted while we were down; on a first start, only note now."""
        stored = await self._storage.get_kv(CURSOR_KEY)
        self._writes_cursor = True
        if stored is None:
            self._cursor_ms = int(time.time() * 1000)
            await self._storage.set_kv(CURSOR_KEY, str(self._cursor_ms))
            return
        self._cursor_ms = max(self._cursor_ms, int(stored))
        log.info("catch_up.started", since_ms=int(stored))
        await self.on_gap(int(stored))

    async def on_gap(self, since_ms: int | None = None) -> None:
        """Events may have been missed since `since_ms`: note the gap for :meth:`run_catch_up`.

        The reading happens beside the socket reader (which must keep reading, or the server drops
        us once 256 events are queued). Gaps reported while a pass runs are merged into the next one:
        the running pass may already have read past the channels where their posts are.
        """
        since = (since_ms if since_ms is not None else self._cursor_ms) - CATCH_UP_MARGIN_MS
        if since <= 0:
            return
        self._merge_gap(since)
        self._gap_reported.set()

    def _merge_gap(self, since: int) -> None:
        """The earliest gap not yet read: ``since``, or one noted before it."""
        self._gap_since = since if self._gap_since is None else min(self._gap_since, since)

    async def run_catch_up(self) -> None:
        """For the supervisor: read every gap reported, each pass retried with the policy until it
        succeeds (a gap given up would be lost for good: the next resume reports no gap)."""
        delays = self.policy.backoff()
        if self._gap_since is not None:  # restarted by the supervisor with a gap still to read
            self._gap_reported.set()
        while True:
            await self._gap_reported.wait()
            self._gap_reported.clear()
            while self._gap_since is not None:
                since, self._gap_since = self._gap_since, None
                self._reading_since = since
                try:
                    if not delays.failures:  # a failing pass holds nothing past its first try's hold
                        await self._inbox.hold_after(since)
                    await self._catch_up(since)
                except asyncio.CancelledError:
                    # stopped mid-pass (shutdown, or the lead lost): the gap is still unread, and
                    # the cursor written after this must keep holding at it
                    self._merge_gap(since)
                    raise
                except Exception as exc:
                    # Put the gap back (merged with any newer one) and try again after a pause.
                    self._merge_gap(since)
                    self.catch_up_failures += 1
                    delay = delays.next(exc)
                    log.warning(
                        "catch_up_failed",
                        attempt=delays.failures,
                        retry_in_s=round(delay, 2),
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
                    await asyncio.sleep(delay)
                else:
                    self.catch_up_passes += 1
                    delays.reset()
                    if self._gap_since is None:
                        await self._inbox.stop_holding()
                finally:
                    self._reading_since = None

    async def _catch_up(self, since: int) -> None:
        """Read every channel's posts changed since `since`: new ones go to `accept`, edits and
        deletions of older ones to `on_missed`; raise if a channel could not be read (after reading
        the others), so that the whole pass is retried."""
        channels = await self._rest.get_my_channels(self._bot.user_id)
        found = 0
        failed = 0
        changes = 0
        for channel in channels:
            try:
                rows = await self._changed_since(channel["id"], since)
                posts = [(Post.from_dict(row), row) for row in rows.values()]
            except Exception as exc:  # one unreadable channel must not stop the others
                log.warning("catch_up_channel_failed", mchat_channel_id=channel.get("id"), error=str(exc))
                failed += 1
                continue
            fresh = sorted(
                (p for p, _ in posts if p.create_at > since and not p.delete_at and not p.original_id),
                key=lambda p: p.create_at,
            )
            msgs = []
            for post in fresh:
                msgs.append(message_from_post(post, channel, await self._user_names.of(post.user_id)))
                # a cursor flushed meanwhile is held at the gap being read (_reading_since)
                await self._advance(post)
            found += await self.accept_many(msgs)
            if self.on_missed is not None:
                for post, row in sorted(posts, key=lambda pair: pair[0].changed_at):
                    if (event := missed_event(post, row, since)) is not None:
                        await self.on_missed(event)
                        changes += 1
        log.info(
            "caught_up",
            since_ms=since,
            channels=len(channels),
            accepted=found,
            changes=changes,
            failed=failed,
        )
        if failed:
            raise RuntimeError(f"{failed} channel(s) could not be read")

    async def _changed_since(self, channel_id: str, since: int) -> dict[str, Any]:
        """The channel's posts changed after `since` (new, edited, deleted, and the roots the server
        adds for context), by id, as the server wrote them."""
        answer = await self._rest.get_channel_posts(channel_id, since=since)
        rows: dict[str, Any] = dict(answer.get("posts", {}))
        if len(answer.get("order", [])) >= SINCE_CAP:
            # `since` stops at 1000 rows: walk the channel newest first until we are past `since`.
            # Page numbers shift when posts arrive meanwhile; that only repeats rows, never skips.
            # (Pages leave deleted posts out: past the cap, a deletion is not seen.)
            for page_no in range(MAX_PAGES):
                page = await self._rest.get_channel_posts(channel_id, page=page_no, per_page=200)
                rows.update(page.get("posts", {}))
                oldest = _oldest(page)
                if oldest is None or oldest[1] <= since:
                    break
        return rows


def missed_event(post: Post, row: dict[str, Any], since: int) -> OtherEvent | None:
    """The event the socket would have delivered for a change a catch-up read: ``post_deleted``
    or ``post_edited`` for a post deleted or edited after `since`, else None (a reaction, a pin,
    the context root of a new reply, an edit's hidden old version). A post made in the gap too is
    also routed as a new post; the listeners find nothing to follow for one they never saw, and
    one they did see (made just before the gap: the margin reads it again) needs its edit."""
    if post.original_id:
        return None
    if post.delete_at > since:
        kind = "post_deleted"
    elif post.edit_at > since:
        kind = "post_edited"
    else:
        return None
    return OtherEvent(seq=0, event=kind, data={"post": row}, broadcast={"channel_id": post.channel_id})


def _oldest(answer: dict[str, Any]) -> tuple[str, int] | None:
    """The oldest post of a PostList page (`order` is newest first), or None for an empty page."""
    order = answer.get("order") or []
    if not order:
        return None
    post = answer.get("posts", {}).get(order[-1], {})
    return order[-1], int(post.get("create_at", 0))


# --- from the wire's Post to the pipeline's message ----------------------------------------------
# Here, in the door, so that `mattermost/` knows nothing of the pipeline.


def message_from_posted(event: Posted) -> IncomingMessage:
    """The pipeline's message for a ``posted`` event (the event carries the channel and the sender)."""
    return _message(event.post, event.channel_type, event.channel_name, event.team_id, event.sender_name)


def message_from_post(post: Post, channel: dict[str, Any], user_name: str) -> IncomingMessage:
    """The pipeline's message for a post read over REST (catch-up), with ``channel`` as REST returns it.

    A channel of an unknown type raises ``FrameError`` (a ``ValueError``).
    """
    kind = parse_channel_type(str(channel.get("type", "O")), "channel.type")
    return _message(post, kind, str(channel.get("name", "")), str(channel.get("team_id", "")), user_name)


def knowledge_line(learner: Learner, msg: IncomingMessage) -> Line | None:
    """The post as the knowledge log keeps it, when it is knowledge (a person's post in a learning
    channel; the caller has checked that it is not addressed to the bot), else None."""
    automated = msg.from_bot or msg.from_webhook
    if not learner.wants(msg.channel_id, msg.channel_type, msg.user_id, msg.post_type, automated=automated):
        return None
    return Line(
        post_id=msg.post_id,
        channel_id=msg.channel_id,
        text=msg.message,
        create_at=msg.create_at,
        team_id=msg.team_id,
        channel_name=msg.channel_name,
        root_id=msg.root_id,
        user_id=msg.user_id,
        user_name=msg.user_name,
    )


def _message(
    post: Post, kind: ChannelType, channel_name: str, team_id: str, user_name: str
) -> IncomingMessage:
    """``user_name`` may come as ``sender_name`` ("@kim"): one leading "@" is dropped."""
    return IncomingMessage(
        post_id=post.id,
        channel_id=post.channel_id,
        channel_type=kind,
        channel_name=channel_name,
        team_id=team_id,
        user_id=post.user_id,
        user_name=user_name.removeprefix("@"),
        message=post.message,
        root_id=post.root_id,
        create_at=post.create_at,
        door="websocket",
        from_bot=post.from_bot,
        from_webhook=post.from_webhook,
        post_type=post.type,
    )
