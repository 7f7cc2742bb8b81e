"""The bot's SQLite database: one aiosqlite connection, WAL, migrations by ``PRAGMA user_version``.

One connection is enough for one process, and it keeps SQLite's locking simple. Every await on the
connection is a hop to its thread and back, which is what the hot path pays for, so a
write that is one statement (a claim as ``UPDATE … RETURNING``, an ``INSERT OR IGNORE``) goes
through :meth:`Storage.execute` / :meth:`Storage.execute_returning`: one hop, SQLite's own
autocommit transaction. :meth:`Storage.transaction` (``BEGIN IMMEDIATE`` … ``COMMIT``, one hop per
statement) is for the rare writes that need several statements. Both take the same asyncio lock,
so a one-statement write never lands inside another coroutine's open transaction.

Pragmas: WAL with ``synchronous=NORMAL``. A commit is in the WAL file (the OS's page cache) before
it returns, so a killed process (SIGKILL, OOM) loses nothing committed; only an OS crash or power
loss can drop the last commits before a checkpoint. ``FULL`` would add an fsync to every inbox
write, i.e. to every event the socket hands over, for a case systemd restarts cannot cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import structlog

log = structlog.get_logger(__name__)

# Each entry moves the schema from version i to i + 1. Append only; never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    # 1: key/value, inbox, sent-log
    """
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE inbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        post_id     TEXT NOT NULL UNIQUE,
        thread_key  TEXT NOT NULL,
        create_at   INTEGER NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        not_before  REAL NOT NULL DEFAULT 0,
        last_error  TEXT NOT NULL DEFAULT '',
        reply       TEXT,
        enqueued_at REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX inbox_state ON inbox (state, create_at);
    CREATE INDEX inbox_thread ON inbox (thread_key, state);
    CREATE TABLE sent_log (
        source_post_id TEXT NOT NULL,
        part           INTEGER NOT NULL,
        reply_post_id  TEXT NOT NULL,
        sent_at        REAL NOT NULL,
        PRIMARY KEY (source_post_id, part)
    );
    """,
    # 2: channel/user mapping tables (the seed's section 7) and the context of web doors' requests
    """
    CREATE TABLE mchat_channel_mapping (
        mchat_channel_id     TEXT PRIMARY KEY,
        mchat_channel_name   TEXT NOT NULL DEFAULT '',
        mchat_team_id        TEXT NOT NULL DEFAULT '',
        agent_room_id        TEXT NOT NULL DEFAULT '',
        incoming_webhook_url TEXT NOT NULL DEFAULT '',
        is_active            INTEGER NOT NULL DEFAULT 1,
        created_at           REAL NOT NULL,
        updated_at           REAL NOT NULL
    );
    CREATE TABLE mchat_user_mapping (
        mchat_user_id  TEXT PRIMARY KEY,
        mchat_username TEXT NOT NULL DEFAULT '',
        agent_user_id  TEXT NOT NULL DEFAULT '',
        created_at     REAL NOT NULL
    );
    CREATE TABLE door_context (
        post_id       TEXT PRIMARY KEY,
        door          TEXT NOT NULL,
        response_url  TEXT NOT NULL DEFAULT '',
        response_type TEXT NOT NULL DEFAULT 'ephemeral',
        uses          INTEGER NOT NULL DEFAULT 0,
        created_at    REAL NOT NULL
    );
    """,
    # 3: the audit log (who did what, where, when, to which memories; pruned by retention)
    """
    CREATE TABLE audit_log (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           REAL NOT NULL,
        action       TEXT NOT NULL,
        outcome      TEXT NOT NULL DEFAULT 'ok',
        user_id      TEXT NOT NULL DEFAULT '',
        user_name    TEXT NOT NULL DEFAULT '',
        channel_id   TEXT NOT NULL DEFAULT '',
        channel_name TEXT NOT NULL DEFAULT '',
        team_id      TEXT NOT NULL DEFAULT '',
        door         TEXT NOT NULL DEFAULT '',
        post_id      TEXT NOT NULL DEFAULT '',
        memory_ids   TEXT NOT NULL DEFAULT '[]',
        detail       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_at ON audit_log (at);
    CREATE INDEX audit_user ON audit_log (user_id, at);
    CREATE INDEX audit_channel ON audit_log (channel_id, at);
    """,
    # 4: channel knowledge: the learning channels and the lines they said (masked), which are also
    # the indexer's durable queue (indexed < version: to be embedded)
    """
    CREATE TABLE knowledge_channel (
        channel_id   TEXT PRIMARY KEY,
        team_id      TEXT NOT NULL DEFAULT '',
        channel_name TEXT NOT NULL DEFAULT '',
        enabled_by   TEXT NOT NULL DEFAULT '',
        enabled_at   REAL NOT NULL,
        learning     INTEGER NOT NULL DEFAULT 1,
        backfill_before TEXT NOT NULL DEFAULT '',
        backfilled_to INTEGER NOT NULL DEFAULT 0,
        backfill_done INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE knowledge_line (
        post_id      TEXT PRIMARY KEY,
        channel_id   TEXT NOT NULL,
        team_id      TEXT NOT NULL DEFAULT '',
        channel_name TEXT NOT NULL DEFAULT '',
        root_id      TEXT NOT NULL DEFAULT '',
        user_id      TEXT NOT NULL DEFAULT '',
        user_name    TEXT NOT NULL DEFAULT '',
        create_at    INTEGER NOT NULL,
        text         TEXT NOT NULL,
        version      INTEGER NOT NULL DEFAULT 1,
        indexed      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX knowledge_line_channel ON knowledge_line (channel_id, create_at);
    CREATE INDEX knowledge_line_root ON knowledge_line (root_id, create_at);
    CREATE INDEX knowledge_line_backlog ON knowledge_line (create_at) WHERE indexed < version;
    CREATE INDEX knowledge_line_channel_backlog ON knowledge_line (channel_id, create_at)
        WHERE indexed < version;
    CREATE INDEX knowledge_line_user ON knowledge_line (user_id);
    """,
)


class Storage:
    """Owns the single connection; use ``async with Storage(path) as st`` or ``open()``/``close()``."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("Storage is not open")
        return self._db

    async def open(self) -> Storage:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE) below.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        try:
            await self._db.executescript(  # one hop; the reasons are in the module docstring
                # secure_delete: a blanked or deleted row is overwritten on disk, not left in free pages
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA secure_delete=ON;"
                f" PRAGMA busy_timeout={int(self._busy_timeout_ms)}; PRAGMA foreign_keys=ON;"
            )
            await self._migrate()
        except BaseException:
            await self.close()  # else its (non-daemon) thread outlives the refusal and blocks exit
            raise
        return self

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self) -> Storage:
        return await self.open()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"database {self.path} has schema version {current}, newer than this code "
                f"({len(MIGRATIONS)}); refusing to touch it"
            )
        for version in range(current, len(MIGRATIONS)):
            async with self.transaction() as db:
                for stmt in _statements(MIGRATIONS[version]):
                    await db.execute(stmt)
                await db.execute(f"PRAGMA user_version={version + 1}")
            log.info("storage.migrated", path=self.path, version=version + 1)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction of several statements; coroutines take turns, so read-then-write
        inside is atomic. Inside, use the connection it yields (the lock is not re-entrant)."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            else:
                await db.execute("COMMIT")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement as its own transaction, in one hop; returns the number of rows changed."""
        async with self._lock:
            cur = await self.db.execute(sql, params)
            return int(cur.rowcount)

    async def execute_returning(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """One write statement with ``RETURNING``, as its own transaction, in one hop; its rows.

        All rows are read in the same hop: an autocommit statement commits only once it is finished.
        """
        async with self._lock:
            return list(await self.db.execute_fetchall(sql, params))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """One statement over many parameter rows, one transaction, one hop; rows changed in total."""
        if not rows:
            return 0
        async with self._lock:
            cur = await self.db.executemany(sql, rows)
            return int(cur.rowcount)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        return list(await self.db.execute_fetchall(sql, params))  # one hop (execute + fetch + close)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        """The first row, for queries of one row (a key lookup, an aggregate): one hop."""
        rows = await self.db.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and empty it (``wal_checkpoint(TRUNCATE)``):
        old page images, e.g. of a row since blanked, are gone from disk after this."""
        await self.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def get_kv(self, key: str, default: str | None = None) -> str | None:
        row = await self.fetchone("SELECT value FROM kv WHERE key = ?", (key,))
        return str(row[0]) if row else default

    async def set_kv(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our DDL literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
