"""Fixtures several test modules use (registered for the whole suite in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.knowledge.index import open_message_store
from mchat_bot.memory.embedder import Embedder, load_embedder
from mchat_bot.memory.store import AnyStore, EdgeMemoryStore, QdrantMemoryStore, open_store
from mchat_bot.storage import Storage, storage_at
from tests.support.postgres import ClusterUnavailable, PostgresCluster, start_cluster, unavailable

DIALECTS = ("sqlite", "postgresql")
TEST_DATABASE = "mchat_test"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_dialects: run the module's tests that use `storage` on SQLite and on PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_dialects`` that use ``storage`` run once per engine."""
    if "dialect" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_dialects"):
        metafunc.parametrize("dialect", DIALECTS, indirect=True)


@pytest.fixture
def dialect(request: pytest.FixtureRequest) -> str:
    """The engine of the ``storage`` fixture: SQLite unless the module is marked ``both_dialects``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (initdb, 127.0.0.1, a free port); under
    pytest-xdist each worker has its own, so a test that restarts or stops it disturbs no other."""
    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.remove()


def create_database(cluster: PostgresCluster, name: str) -> str:
    """A new, empty database in the cluster (dropped first if it exists); its URL."""
    with psycopg.connect(cluster.url(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.url(name)


@pytest.fixture(scope="session")
def pg_session_database(pg_cluster: PostgresCluster) -> str:
    return create_database(pg_cluster, TEST_DATABASE)


@pytest.fixture
def pg_url(pg_session_database: str) -> str:
    """The tests' database with every table empty (the schema stays: migrating once is enough)."""
    with psycopg.connect(pg_session_database, autocommit=True, connect_timeout=10) as conn:
        found = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [r[0] for r in found if r[0] != "schema_version"]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    return pg_session_database


@pytest.fixture
def storage_target(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where the test's ``storage`` lives: a SQLite file of its own, or the emptied test database."""
    if dialect == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return tmp_path / "bot.sqlite3"


@pytest.fixture
async def storage(storage_target: str | Path) -> AsyncIterator[Storage]:
    """The daemon's storage, open and migrated (SQLite, or PostgreSQL under ``both_dialects``)."""
    async with storage_at(storage_target, pool_size=4) as st:
        yield st


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


def store_on(engine: str, path: Path, embedder: Embedder, **options: object) -> AnyStore:
    """A memory store on ``engine``: the embedded engine at ``path``, or the Qdrant-server code path
    (``QdrantMemoryStore`` over qdrant-client) against qdrant-client's local mode at ``path``, the
    stand-in for a Qdrant server here: what a cluster would run is what these tests run."""
    if engine == "edge":
        return open_store(path, None, embedder, **options)  # type: ignore[arg-type]
    from qdrant_client import AsyncQdrantClient

    return QdrantMemoryStore(AsyncQdrantClient(path=str(Path(path) / "qdrant-local")), embedder, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["edge", "qdrant-client"])
def engine(request: pytest.FixtureRequest) -> str:
    """Run the test on both store engines (see :func:`store_on`)."""
    return str(request.param)


@pytest.fixture
async def messages(tmp_path: Path, embedder: Embedder, engine: str) -> AsyncIterator[AnyStore]:
    """The channel messages' collection, opened as the daemon opens it (the options of
    ``open_message_store``), in the test's own folder, on both engines."""
    if engine == "edge":
        s = open_message_store(tmp_path / "store", None, embedder)
    else:
        s = store_on(engine, tmp_path / "store", embedder, kind="messages", rerank="off")
    yield s
    await s.close()


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    """The fake OpenAI-compatible LLM server on a free port of 127.0.0.1, for one test."""
    async with FakeLLM() as fake:
        yield fake
