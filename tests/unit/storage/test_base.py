"""What every engine gets from the Storage base: the key-value rows, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from mchat_bot.storage import SqliteStorage
from mchat_bot.storage.postgres import PostgresStorage


async def test_setdefault_kv_keeps_the_first_value_written(tmp_path: Path, pg_url: str) -> None:
    async with SqliteStorage(tmp_path / "s.sqlite3") as lite, PostgresStorage(pg_url) as pg:
        for st in (lite, pg):
            assert await st.setdefault_kv("first-wins", "a") == "a"
            assert await st.setdefault_kv("first-wins", "b") == "a"  # a second writer reads the first
            assert await st.get_kv("first-wins") == "a"
            await st.set_kv("first-wins", "c")  # set_kv still replaces
            assert await st.setdefault_kv("first-wins", "d") == "c"
