"""The lines learning channels said, in SQLite: masked text, author, time, thread; the indexer's queue.

A line is written here as it arrives (one statement, cheap enough for the socket reader) and is the
source of truth: the vector index is built from it by the background indexer and can be rebuilt
from it. ``version`` grows with every edit and ``indexed`` records the version the index holds, so
"to be embedded" is ``indexed < version`` and an edit made while its line was being embedded is
embedded again. Text is stored after the sensitive-data filter, never raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mchat_bot.redaction import redact
from mchat_bot.storage import Storage

_COLUMNS = "post_id, channel_id, team_id, channel_name, root_id, user_id, user_name, create_at, text, version"


@dataclass(frozen=True, slots=True)
class Line:
    """One post of a learning channel. ``create_at`` in epoch milliseconds, as Mattermost gives it."""

    post_id: str
    channel_id: str
    text: str
    create_at: int
    team_id: str = ""
    channel_name: str = ""
    root_id: str = ""
    user_id: str = ""
    user_name: str = ""
    version: int = 1

    @property
    def thread_id(self) -> str:
        """The thread a line belongs to: its root, or itself when it is a root."""
        return self.root_id or self.post_id


def _line(row: Sequence[object]) -> Line:
    post_id, channel_id, team_id, channel_name, root_id, user_id, user_name, create_at, text, version = row
    return Line(
        post_id=str(post_id),
        channel_id=str(channel_id),
        text=str(text),
        create_at=int(str(create_at)),
        team_id=str(team_id),
        channel_name=str(channel_name),
        root_id=str(root_id),
        user_id=str(user_id),
        user_name=str(user_name),
        version=int(str(version)),
    )


class ChatLog:
    def __init__(self, storage: Storage) -> None:
        self._db = storage
        self._channels: set[str] = set()  # channels with lines: the others need no search at all

    async def load(self) -> ChatLog:
        rows = await self._db.fetchall("SELECT DISTINCT channel_id FROM knowledge_line")
        self._channels = {str(r[0]) for r in rows}
        return self

    def has(self, channel_id: str) -> bool:
        """Whether the channel has any line (in memory: asked for every question)."""
        return channel_id in self._channels

    async def sizes(self) -> tuple[int, int]:
        """(lines kept, lines waiting to be embedded), for /metrics and `check`."""
        return await self.size(), await self.backlog_size()

    async def record(self, lines: Sequence[Line]) -> int:
        """Store new lines and changed texts (after masking) in one statement; a line seen again
        with the same text (a catch-up re-reading it) changes nothing. Returns rows written."""
        rows = []
        for line in lines:
            text = redact(line.text, "mask").text.strip()
            if text:
                rows.append(
                    (
                        line.post_id,
                        line.channel_id,
                        line.team_id,
                        line.channel_name,
                        line.root_id,
                        line.user_id,
                        line.user_name,
                        line.create_at,
                        text,
                    )
                )
        self._channels.update(r[1] for r in rows)
        return await self._db.executemany(
            f"INSERT INTO knowledge_line ({_COLUMNS.removesuffix(', version')}) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (post_id) DO UPDATE SET text = excluded.text, version = knowledge_line.version + 1"
            " WHERE knowledge_line.text != excluded.text",
            rows,
        )

    async def remove(self, post_ids: Sequence[str]) -> list[str]:
        """Forget these posts; returns the ids that were there."""
        if not post_ids:
            return []
        marks = ",".join("?" * len(post_ids))
        rows = await self._db.execute_returning(
            f"DELETE FROM knowledge_line WHERE post_id IN ({marks}) RETURNING post_id", list(post_ids)
        )
        return [str(r[0]) for r in rows]

    async def older_than(self, before_ms: int, limit: int = 1000) -> list[str]:
        """Up to ``limit`` post ids of lines older than ``before_ms`` (retention)."""
        rows = await self._db.fetchall(
            "SELECT post_id FROM knowledge_line WHERE create_at < ? LIMIT ?", (before_ms, limit)
        )
        return [str(r[0]) for r in rows]

    def dropped(self, channel_id: str) -> None:
        """The channel's lines are all gone (forget_channel)."""
        self._channels.discard(channel_id)

    async def of_channel(self, channel_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT post_id FROM knowledge_line WHERE channel_id = ?", (channel_id,)
        )
        return [str(r[0]) for r in rows]

    async def of_user(self, user_id: str) -> list[tuple[str, str]]:
        """(post id, channel id) of every line ``user_id`` wrote, in any channel."""
        rows = await self._db.fetchall(
            "SELECT post_id, channel_id FROM knowledge_line WHERE user_id = ?", (user_id,)
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def backlog(self, limit: int) -> list[Line]:
        """Lines whose current version is not in the index yet, newest first (what was just said is
        what people ask about; a backfill's older lines are found by keywords meanwhile)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM knowledge_line WHERE indexed < version ORDER BY create_at DESC LIMIT ?",
            (limit,),
        )
        return [_line(r) for r in rows]

    async def backlog_in_channel(self, channel_id: str, limit: int) -> list[Line]:
        """A channel's newest lines not embedded yet (searched by keyword until they are)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM knowledge_line WHERE channel_id = ? AND indexed < version"
            " ORDER BY create_at DESC LIMIT ?",
            (channel_id, limit),
        )
        return [_line(r) for r in rows]

    async def backlog_size(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM knowledge_line WHERE indexed < version")
        return int(row[0]) if row else 0

    async def size(self, channel_id: str = "") -> int:
        """Lines kept, in one channel or (``""``) in all."""
        if channel_id:
            row = await self._db.fetchone(
                "SELECT count(*) FROM knowledge_line WHERE channel_id = ?", (channel_id,)
            )
        else:
            row = await self._db.fetchone("SELECT count(*) FROM knowledge_line")
        return int(row[0]) if row else 0

    async def requeue(self, post_ids: Sequence[str], *, only_indexed: bool = False) -> None:
        """Embed these lines again (their context changed: a neighbour came, was edited or deleted);
        ``only_indexed``: leave those still waiting alone (they will be embedded with it anyway)."""
        if post_ids:
            marks = ",".join("?" * len(post_ids))
            where = " AND indexed = version" if only_indexed else ""
            await self._db.execute(
                f"UPDATE knowledge_line SET version = version + 1 WHERE post_id IN ({marks}){where}",
                list(post_ids),
            )

    async def mark_indexed(self, lines: Sequence[Line]) -> None:
        """The index holds these versions (a line edited meanwhile stays in the backlog)."""
        await self._db.executemany(
            "UPDATE knowledge_line SET indexed = ? WHERE post_id = ? AND indexed < ?",
            [(line.version, line.post_id, line.version) for line in lines],
        )

    async def window(self, line: Line, before: int, after: int) -> list[Line]:
        """The line among the lines its context is chosen from (``documents.neighbours``), in time
        order: for a reply, its root and up to ``before``/``after`` replies of the thread on either
        side; for a top-level post, up to ``before``/``after`` top-level posts of the channel on
        either side and its own first ``after`` replies."""
        if line.root_id:
            where, key = "root_id = ?", [line.root_id]
        else:
            where, key = "channel_id = ? AND root_id = ''", [line.channel_id]
        earlier = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM knowledge_line WHERE {where} AND create_at <= ? AND post_id != ?"
            " ORDER BY create_at DESC LIMIT ?",
            [*key, line.create_at, line.post_id, before],
        )
        later = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM knowledge_line WHERE {where} AND create_at > ? AND post_id != ?"
            " ORDER BY create_at LIMIT ?",
            [*key, line.create_at, line.post_id, after],
        )
        extra: list[Line] = []
        if line.root_id:
            root = await self.get(line.root_id)
            extra = [root] if root is not None else []
        elif after:
            rows = await self._db.fetchall(
                f"SELECT {_COLUMNS} FROM knowledge_line WHERE root_id = ? ORDER BY create_at LIMIT ?",
                (line.post_id, after),
            )
            extra = [_line(r) for r in rows]
        found = [*extra, *(_line(r) for r in earlier), line, *(_line(r) for r in later)]
        return sorted(found, key=lambda x: (x.create_at, x.post_id != line.post_id))

    async def replies(self, root_id: str) -> list[str]:
        rows = await self._db.fetchall("SELECT post_id FROM knowledge_line WHERE root_id = ?", (root_id,))
        return [str(r[0]) for r in rows]

    async def present(self, post_ids: Sequence[str]) -> set[str]:
        """Which of these posts the log still has."""
        if not post_ids:
            return set()
        marks = ",".join("?" * len(post_ids))
        rows = await self._db.fetchall(
            f"SELECT post_id FROM knowledge_line WHERE post_id IN ({marks})", list(post_ids)
        )
        return {str(r[0]) for r in rows}

    async def get(self, post_id: str) -> Line | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM knowledge_line WHERE post_id = ?", (post_id,))
        return _line(row) if row else None

    async def in_channel(self, channel_id: str, since_ms: int = 0, limit: int = 10_000) -> list[Line]:
        """A channel's lines since a time, oldest first (summaries, exports)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM knowledge_line WHERE channel_id = ? AND create_at >= ?"
            " ORDER BY create_at LIMIT ?",
            (channel_id, since_ms, limit),
        )
        return [_line(r) for r in rows]
