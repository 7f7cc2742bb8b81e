"""Fixtures of the pipeline's unit tests: a real inbox on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.storage import Storage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with Storage(tmp_path / "bot.sqlite3") as st:
        yield st


@pytest.fixture
def inbox(storage: Storage) -> Inbox:
    return Inbox(storage)
