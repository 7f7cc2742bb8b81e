"""Fixtures of the knowledge package's tests: the chat log on the real storage (tests/support/fixtures.py)."""

from __future__ import annotations

import pytest

from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.storage import Storage


@pytest.fixture
async def log(storage: Storage) -> ChatLog:
    return await ChatLog(storage).load()
