"""The doors' shared fixtures: a dev server on 127.0.0.1 and a fresh SQLite state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.storage import SqliteStorage, Storage


@pytest.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    st = await SqliteStorage(tmp_path / "bot.sqlite").open()
    yield st
    await st.close()
