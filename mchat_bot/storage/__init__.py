"""The daemon's state (inbox, sent-log, cursor, mappings, door contexts, audit, knowledge log):
SQLite on one machine (the default), PostgreSQL with ``storage.url`` for state shared by machines.

``storage_for(settings.storage)`` is how every command opens it; the PostgreSQL driver is imported
only when a URL asks for it.
"""

from __future__ import annotations

from pathlib import Path

from mchat_bot.config import StorageSettings
from mchat_bot.storage.base import Dialect, Row, Storage, StorageUnavailable, Transaction
from mchat_bot.storage.schema import MIGRATIONS
from mchat_bot.storage.sqlite import SqliteStorage

__all__ = [
    "MIGRATIONS",
    "Dialect",
    "Row",
    "SqliteStorage",
    "Storage",
    "StorageUnavailable",
    "Transaction",
    "is_postgres_url",
    "storage_at",
    "storage_for",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(target: str) -> bool:
    return target.partition("://")[0].lower() in POSTGRES_SCHEMES and "://" in target


def storage_at(target: str | Path, *, pool_size: int = 10) -> Storage:
    """A ``postgresql://`` URL, or the path of a SQLite file; not opened yet."""
    if isinstance(target, str) and is_postgres_url(target):
        from mchat_bot.storage.postgres import PostgresStorage

        return PostgresStorage(target, pool_size=pool_size)
    return SqliteStorage(target)


def storage_for(settings: StorageSettings) -> Storage:
    """The storage the settings name: ``storage.url`` when set, else the SQLite file ``storage.path``."""
    url = settings.url.get()
    return storage_at(url or settings.path, pool_size=settings.pool_size)
