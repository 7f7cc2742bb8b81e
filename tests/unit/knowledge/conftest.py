"""Fixtures of the knowledge package's tests: a real SQLite file and the chat log on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.storage import Storage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with Storage(tmp_path / "bot.sqlite3") as st:
        yield st


@pytest.fixture
async def log(storage: Storage) -> ChatLog:
    return await ChatLog(storage).load()
