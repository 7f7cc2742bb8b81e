"""Fixtures of the pipeline's unit tests: a real inbox on the real storage (tests/support/fixtures.py)."""

from __future__ import annotations

import pytest

from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.storage import Storage


@pytest.fixture
def inbox(storage: Storage) -> Inbox:
    return Inbox(storage)
