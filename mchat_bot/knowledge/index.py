"""The message index: learning channels' lines in their own collection of the memory store.

A line is indexed as a ``Memory`` of category ``message`` and scope ``channel``: the text embedded is
the line with its speaker, date and neighbours (``documents.index_text``), the text shown is the
line itself (``body``), and the engine's visibility filter, given a viewer with no user and no
team, admits the asking channel's messages only, so a channel's knowledge never reaches another.
Lines not embedded yet (the indexer's backlog) are found by their keywords, so a burst of posts is
searchable at once: one holding every word of the question comes first, others after the index's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

from mchat_bot.knowledge.documents import DEFAULT_RECIPE, ChatLine, index_text, keyword_text, neighbours
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.memory.embedder import Embedder
from mchat_bot.memory.relevance import coverage, keywords
from mchat_bot.memory.store import MESSAGE, AnyStore, Hit, Memory, MemoryStore, Viewer, open_store
from mchat_bot.net.http import permalink

NEIGHBOURS_BEFORE = DEFAULT_RECIPE.before
NEIGHBOURS_AFTER = DEFAULT_RECIPE.after
LOCAL_TZ = datetime.now().astimezone().tzinfo or UTC  # dates in the indexed text: as people say them here
QUESTIONS_FIRST_MAX_S = 2.0
BACKLOG_SCAN = 2000  # newest unembedded lines of the channel looked at by keyword
BACKLOG_MIN_COVERAGE = 0.5  # a backlog line must hold half of the question's keywords


def open_message_store(
    path: str | os.PathLike[str] | None, url: str | None, embedder: Embedder, api_key: str | None = None
) -> AnyStore:
    """The messages collection beside the memories (same engine, same embedder). Without the
    memories' recency tie-break: chat lines of one speaker and day look like versions of one fact
    to it (cosine above its duplicate threshold, a differing value), and the newer would win."""
    return open_store(path, url, embedder, api_key=api_key, kind="messages", rerank="off")


async def _questions_first(embedder: object, longest: float = QUESTIONS_FIRST_MAX_S) -> None:
    """Wait while questions wait for the model (up to ``longest``, so the backlog still moves)."""
    waited = 0.0
    while getattr(embedder, "waiting_queries", 0) > 0 and waited < longest:
        await asyncio.sleep(0.005)
        waited += 0.005


def chat_line(line: Line) -> ChatLine:
    return ChatLine(
        post_id=line.post_id,
        channel_id=line.channel_id,
        user_name=line.user_name,
        text=line.text,
        create_at=line.create_at / 1000,
        root_id=line.root_id,
    )


class MessageIndex:
    def __init__(self, store: MemoryStore, log: ChatLog, site_url: str, tz: tzinfo | None = None) -> None:
        self.store = store
        self.log = log
        self.site_url = site_url.rstrip("/")
        self.tz = tz

    def permalink(self, post_id: str) -> str:
        return permalink(self.site_url, post_id)

    def as_memory(self, line: Line, text: str) -> Memory:
        return Memory(
            id=line.post_id,
            text=text,
            body=line.text,
            category=MESSAGE,
            scope="channel",
            team_id=line.team_id,
            channel_id=line.channel_id,
            user_id=line.user_id,
            user_name=line.user_name,
            source_post_id=line.post_id,
            permalink=self.permalink(line.post_id),
            created_at=line.create_at / 1000,
        )

    async def document(self, line: Line) -> tuple[Memory, str]:
        """The line as it is indexed, with the conversation around it as it stands now: the memory
        (its text is the dated, attributed line: keywords and what is stored) and the embedded text
        (the line with its context; documents.py says why the two differ)."""
        around = await self.log.window(line, NEIGHBOURS_BEFORE, NEIGHBOURS_AFTER)
        chat = [chat_line(x) for x in around]
        at = next(i for i, x in enumerate(around) if x.post_id == line.post_id)
        before, after = neighbours(chat, at)
        tz = self.tz or LOCAL_TZ
        return self.as_memory(line, keyword_text(chat[at], tz)), index_text(chat[at], before, after, tz)

    async def add(self, lines: Sequence[Line]) -> None:
        """Embed and index lines (one engine call); the caller marks them indexed.

        One line per embedder call (batching gains nothing on this model: ~150-250 ms of CPU per
        line with its context), and none while a question waits for the model: a question waits
        for at most the line being embedded, not for a batch."""
        docs = [await self.document(line) for line in lines]
        embedder = self.store.embedder
        vectors: list[list[float]] = []
        for _, text in docs:
            await _questions_first(embedder)
            vectors += await asyncio.to_thread(embedder.embed_documents, [text])
        await self.store.add_embedded([(memory, vec) for (memory, _), vec in zip(docs, vectors, strict=True)])

    async def forget(self, post_ids: Sequence[str], *, requeue_neighbours: bool = True) -> int:
        """Remove posts from the index, then from the log (so a failure leaves nothing orphaned
        in the index: the log still names it); how many lines the log had. The lines around them
        were embedded with their text as context: they are embedded again without it."""
        if not post_ids:
            return 0
        around = await self.neighbours_of(post_ids) if requeue_neighbours else []
        await self.store.delete_many(list(post_ids))
        removed = len(await self.log.remove(post_ids))
        await self.log.requeue(around)
        return removed

    async def context_gained(self, lines: Sequence[Line]) -> list[str]:
        """The lines that new ``lines`` are the "after" context of (the lines just before them, a
        root of its first replies): embedded before these existed, they are embedded again."""
        found: set[str] = set()
        for line in lines:
            if line.version != 1:
                continue
            earlier = [
                x
                for x in await self.log.window(line, NEIGHBOURS_AFTER, 0)
                if x.post_id not in (line.post_id, line.root_id)
            ]
            found.update(x.post_id for x in earlier)
            if line.root_id and len(earlier) < NEIGHBOURS_AFTER:
                found.add(line.root_id)  # one of the root's first replies: its "after" context
        return sorted(found - {line.post_id for line in lines})

    async def neighbours_of(self, post_ids: Sequence[str]) -> list[str]:
        """The lines whose indexed text holds one of these lines as context."""
        gone = set(post_ids)
        found: set[str] = set()
        for post_id in post_ids:
            line = await self.log.get(post_id)
            if line is None:
                continue
            # a line is context of the lines next to it (both ways), and a root of all its replies
            around = await self.log.window(line, NEIGHBOURS_AFTER, NEIGHBOURS_BEFORE)
            found.update(x.post_id for x in around)
            if not line.root_id:
                found.update(await self.log.replies(line.post_id))
        return sorted(found - gone)

    async def forget_channel(self, channel_id: str) -> int:
        """Everything a channel said, gone from the index and the log; how many lines."""
        total = 0
        ids = await self.log.of_channel(channel_id)
        for start in range(0, len(ids), 500):
            total += await self.forget(ids[start : start + 500], requeue_neighbours=False)
        if not await self.log.size(channel_id):  # none came in meanwhile
            self.log.dropped(channel_id)
        return total

    async def search(self, query: str, channel_id: str, limit: int = 5) -> list[Hit]:
        """The channel's messages for a question: the index, then backlog lines that share its words."""
        if not channel_id or limit <= 0 or not query.strip():
            return []
        hits = await self.store.search(query, Viewer(team_id="", channel_id=channel_id, user_id=""), limit)
        hits = [h for h in hits if h.memory.is_message and h.memory.channel_id == channel_id]
        waiting = await self._backlog_hits(query, channel_id, limit, {h.memory.id for h in hits})
        # a waiting line with every word of the question is the surest hit; partial ones fill up
        whole = [h for h in waiting if h.score >= 1.0]
        return (whole + hits + [h for h in waiting if h.score < 1.0])[:limit]

    async def _backlog_hits(self, query: str, channel_id: str, limit: int, seen: set[str]) -> list[Hit]:
        words = keywords(query)
        if not words:
            return []
        waiting = await self.log.backlog_in_channel(channel_id, BACKLOG_SCAN)
        scored = []
        for line in waiting:
            share = coverage(words, line.text)
            if share >= BACKLOG_MIN_COVERAGE and line.post_id not in seen:
                scored.append((share, line.create_at, line))
        scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
        # the score shown for a keyword match is its keyword share (there is no cosine yet)
        return [Hit(self.as_memory(line, line.text), share) for share, _, line in scored[:limit]]
