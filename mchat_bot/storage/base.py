"""What every part of the daemon asks of its database, whichever engine holds it.

SQL is written once, with ``?`` placeholders and in the subset SQLite and PostgreSQL read alike
(``INSERT … ON CONFLICT``, ``RETURNING``, ``excluded.``); an engine translates the placeholders
itself. The few statements that cannot be shared (the inbox's claim) are chosen by
:attr:`Storage.dialect`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self

Row = Sequence[Any]
Dialect = Literal["sqlite", "postgresql"]


class StorageUnavailable(ConnectionError):
    """The database cannot be reached or the connection broke mid-statement. A ``ConnectionError``,
    so the one retry predicate (``net.retry.is_transient``) treats it as worth another try."""


class Transaction(Protocol):
    """The statements of one write transaction (see :meth:`Storage.transaction`)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement inside the transaction; the number of rows it changed."""
        ...


class Storage(ABC):
    """The daemon's state: use ``async with storage`` or ``open()``/``close()``.

    One-statement writes (:meth:`execute`, :meth:`execute_returning`, :meth:`executemany`) are
    their own transaction; :meth:`transaction` is for the rare writes of several statements.
    """

    dialect: ClassVar[Dialect]

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the state lives, safe to print (a path, or a URL without its password)."""

    @abstractmethod
    async def open(self) -> Self:
        """Connect and bring the schema up to date (refusing a schema newer than this code)."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction of several statements: committed when the block ends, rolled back
        if it raises; read-then-write inside is atomic."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement as its own transaction; the number of rows changed."""

    @abstractmethod
    async def execute_returning(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One write statement with ``RETURNING``, as its own transaction; its rows."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """One statement over many parameter rows, one transaction; rows changed in total."""

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row, for queries of one row (a key lookup, an aggregate)."""

    @abstractmethod
    async def checkpoint(self) -> None:
        """Make sure no copy of deleted or blanked rows lingers in a log the engine keeps beside
        the data (SQLite's write-ahead file)."""

    async def get_kv(self, key: str, default: str | None = None) -> str | None:
        row = await self.fetchone("SELECT value FROM kv WHERE key = ?", (key,))
        return str(row[0]) if row else default

    async def set_kv(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def setdefault_kv(self, key: str, value: str) -> str:
        """The value kept under ``key``, ``value`` written first when there is none: of daemons
        sharing the state that write at once, the first one's value stays and all read it."""
        await self.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value)
        )
        return await self.get_kv(key) or ""
