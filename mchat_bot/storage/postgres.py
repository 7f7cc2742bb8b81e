"""The PostgreSQL engine (``storage.url = "postgresql://…"``): state that outlives one machine.

psycopg 3 with its connection pool (``psycopg_pool``): the driver the PostgreSQL project's own
Python tooling builds on, typed (mypy reads it), libpq underneath (every ``postgresql://`` URL
parameter, ``sslmode``, ``.pgpass`` and service files work as the operator knows them), a summed
``rowcount`` after ``executemany`` (asyncpg's gives none) and a pool that checks a connection before
lending it, so a Postgres restart costs the daemon its broken connections, not a wrong answer.

Every connection is in autocommit: a one-statement write is its own transaction, as on SQLite.
Timeouts: ``connect_timeout`` for a new connection and for waiting on the pool, ``statement_timeout``
set on every connection. Getting a connection is retried through the retry policy (nothing was sent
yet); a statement that fails on a broken connection is not, since it may have committed: it raises
:class:`StorageUnavailable`, a transient error that the workers and the supervisor already retry.

Migrations: the schema's version is one row of ``schema_version``, and all pending steps run in one
transaction under a transaction-level advisory lock, so daemons that start together migrate once.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mchat_bot.net.retry import RetryPolicy
from mchat_bot.storage.base import Row, Storage, StorageUnavailable, Transaction
from mchat_bot.storage.schema import MIGRATIONS, for_postgres, statements

log = structlog.get_logger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# pg_advisory_xact_lock key of the migrations (any constant; the same for every daemon)
MIGRATION_LOCK = 0x6D63_6861_7473_6368  # "mchatsch"
RECONNECT_TIMEOUT_S = 10.0
CONNECT_POLICY = RetryPolicy(first_delay=0.2, max_delay=2.0, tries=3)


class PostgresStorage(Storage):
    """A pool of autocommit connections to one database; ``async with PostgresStorage(url) as st``."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = 10.0,
        statement_timeout: float = 30.0,
        policy: RetryPolicy = CONNECT_POLICY,
    ) -> None:
        self._url = url
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = max(1, int(statement_timeout * 1000))
        self._policy = policy
        self._pool: AsyncConnectionPool[Connection] | None = None

    @property
    def where(self) -> str:
        return without_password(self._url)

    @property
    def pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise RuntimeError("Storage is not open")
        return self._pool

    async def open(self) -> Self:
        """Migrate on a first connection of its own (a refused login or a missing database is
        reported in the server's words, tried a few times, not after the pool's whole timeout),
        then open the pool."""
        first = await self._policy.call(self._connect)
        try:
            await self._configure(first)
            await self._migrate(first)
        finally:
            await first.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=max(1, self._pool_size),
            kwargs={"autocommit": True, "connect_timeout": max(1, round(self._connect_timeout))},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            timeout=self._connect_timeout,
            name="mchat-bot",
            # the pool's own reconnect backs off exponentially; giving up after 10 s lets the next
            # request start afresh, so a long outage is not followed by a minute-long wait
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            open=False,
        )
        self._pool = pool
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
        except PoolTimeout as exc:
            await self.close()
            raise StorageUnavailable(
                f"cannot connect to {self.where} within {self._connect_timeout} s"
            ) from exc
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def dedicated_connection(self) -> Connection:
        """A connection outside the pool, for a session that must live as long as it (the leader's
        advisory lock); TCP keepalives make the server end it within seconds of a vanished peer."""
        conn = await self._policy.call(
            lambda: self._connect(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        )
        await self._configure(conn)
        return conn

    async def _connect(self, **params: Any) -> Connection:
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout)), **params
            )
        except psycopg.OperationalError as exc:
            # libpq's words name the host, port and user, never the password
            reason = str(exc).removeprefix("connection failed: ").strip()
            raise StorageUnavailable(f"cannot connect to {self.where}: {reason}") from None

    async def _configure(self, conn: Connection) -> None:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(self._statement_timeout_ms),)
        )

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT version FROM schema_version")
        return int(row[0]) if row else 0

    async def _migrate(self, conn: Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
            if row is None:
                await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            current = int(row[0]) if row else 0
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"database {self.where} has schema version {current}, newer than this code "
                    f"({len(MIGRATIONS)}); refusing to touch it"
                )
            for version in range(current, len(MIGRATIONS)):
                for stmt in statements(for_postgres(MIGRATIONS[version])):
                    await conn.execute(stmt)
            await conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
        if current != len(MIGRATIONS):
            log.info("storage.migrated", where=self.where, version=len(MIGRATIONS), was=current)

    async def _with_connection(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection; a lost connection becomes :class:`StorageUnavailable`."""
        pool = self.pool
        conn = await self._policy.call(self._checkout)
        try:
            return await fn(conn)
        except psycopg.OperationalError as exc:
            # the connection broke, the server is going down, or the statement ran out of time
            raise StorageUnavailable(f"{self.where}: {type(exc).__name__}") from exc
        finally:
            await pool.putconn(conn)

    async def _checkout(self) -> Connection:
        try:
            return await self.pool.getconn(timeout=self._connect_timeout)
        except PoolTimeout as exc:  # nothing was sent: worth another try
            raise StorageUnavailable(
                f"no connection to {self.where} within {self._connect_timeout} s"
            ) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        pool = self.pool
        conn = await self._policy.call(self._checkout)
        try:
            async with conn.transaction():
                yield _PostgresTransaction(conn)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"{self.where}: {type(exc).__name__}") from exc
        finally:
            await pool.putconn(conn)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async def run(conn: Connection) -> int:
            cur = await conn.execute(pyformat(sql), params)
            return max(0, cur.rowcount)

        return await self._with_connection(run)

    async def execute_returning(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async def run(conn: Connection) -> list[Row]:
            cur = await conn.execute(pyformat(sql), params)
            return list(await cur.fetchall())

        return await self._with_connection(run)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0

        async def run(conn: Connection) -> int:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(pyformat(sql), rows)
                return max(0, cur.rowcount)

        return await self._with_connection(run)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self.execute_returning(sql, params)

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL recycles its write-ahead log itself (``VACUUM`` reclaims the
        blanked rows' old versions; the operator's backups and WAL archive are theirs to keep)."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async def run(conn: Connection) -> Row | None:
            cur = await conn.execute(pyformat(sql), params)
            return await cur.fetchone()

        return await self._with_connection(run)


class _PostgresTransaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(pyformat(sql), params)
        return max(0, cur.rowcount)


@functools.lru_cache(maxsize=1024)
def pyformat(sql: str) -> str:
    """The statement with psycopg's placeholders: ``?`` becomes ``%s`` and a literal ``%`` is
    doubled; quoted strings and identifiers are left as they are (translated once per statement)."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)  # psycopg reads % even inside literals
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def without_password(url: str) -> str:
    """The URL as it may be printed or logged: the password (and any query string) left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
