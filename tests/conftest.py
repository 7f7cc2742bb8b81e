"""Shared test hygiene: no daemon process outlives the test (or module) that started it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import STARTED

pytest_plugins = ["tests.support.fixtures"]  # embedder, store, fake_llm


# One dev server and one fake LLM per module for the end-to-end modules that share a daemon;
# modules that need fresh ones per test (faults, cli) define their own `dev` and `llm`.
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


def _kill_from(index: int) -> None:
    while len(STARTED) > index:
        proc = STARTED.pop()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


@pytest.fixture(autouse=True)
def _kill_daemons_left_by_the_test() -> Iterator[None]:
    """A test that fails before stopping its daemon must not leave it running: it would reconnect
    forever and load the machine for the tests after it. Daemons of wider-scoped fixtures (started
    before this fixture) are left to their own teardown."""
    before = len(STARTED)
    yield
    _kill_from(before)


@pytest.fixture(autouse=True, scope="session")
def _kill_all_daemons_at_the_end() -> Iterator[None]:
    yield
    _kill_from(0)
