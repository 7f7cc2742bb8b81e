"""Fixtures several test modules use (registered for the whole suite in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.knowledge.index import open_message_store
from mchat_bot.memory.embedder import Embedder, load_embedder
from mchat_bot.memory.store import AnyStore, EdgeMemoryStore


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The default embedder, loaded once per run (loading it is the slow part)."""
    return load_embedder("default")


@pytest.fixture
async def store(tmp_path: Path, embedder: Embedder) -> AsyncIterator[EdgeMemoryStore]:
    """The real embedded memory store in the test's own folder."""
    s = EdgeMemoryStore(tmp_path, embedder)
    yield s
    await s.close()


@pytest.fixture
async def messages(tmp_path: Path, embedder: Embedder) -> AsyncIterator[AnyStore]:
    """The channel messages' collection, opened as the daemon opens it, in the test's own folder."""
    s = open_message_store(tmp_path / "store", None, embedder)
    yield s
    await s.close()


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    """The fake OpenAI-compatible LLM server on a free port of 127.0.0.1, for one test."""
    async with FakeLLM() as fake:
        yield fake
