"""The SQLite engine (the default, one machine): one aiosqlite connection, WAL, migrations by
``PRAGMA user_version``.

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
from typing import Any, Self

import aiosqlite
import structlog

from mchat_bot.storage.base import Row, Storage, Transaction
from mchat_bot.storage.schema import MIGRATIONS, statements

log = structlog.get_logger(__name__)


class SqliteStorage(Storage):
    """Owns the single connection; use ``async with SqliteStorage(path) as st``."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return self.path

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("Storage is not open")
        return self._db

    async def open(self) -> Self:
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
                for stmt in statements(MIGRATIONS[version]):
                    await db.execute(stmt)
                await db.execute(f"PRAGMA user_version={version + 1}")
            log.info("storage.migrated", path=self.path, version=version + 1)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, one hop per statement; coroutines take turns, so
        read-then-write inside is atomic. Inside, use what it yields (the lock is not re-entrant)."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(db)
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

    async def execute_returning(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
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

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self.db.execute_fetchall(sql, params))  # one hop (execute + fetch + close)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row, for queries of one row (a key lookup, an aggregate): one hop."""
        rows = await self.db.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and empty it (``wal_checkpoint(TRUNCATE)``):
        old page images, e.g. of a row since blanked, are gone from disk after this."""
        await self.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class _SqliteTransaction:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._db.execute(sql, params)
        return int(cur.rowcount)
