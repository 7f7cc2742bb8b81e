"""The keyword half of the hybrid search: the "mixed" tokenizer, and stores indexed with another one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from mchat_bot.memory import sparse
from mchat_bot.memory.store import EdgeMemoryStore, Memory, QdrantMemoryStore, Viewer

V = Viewer("t1", "c1", "u9")


class ScatterEmbedder:
    """Unrelated texts get unrelated directions (a hash), so the dense half ranks at random and only
    the keyword half can put the right memory first."""

    name = "scatter-test"
    dim = 16
    dup_threshold = 0.99

    def _vec(self, text: str) -> list[float]:
        digest = hashlib.sha256(text.encode()).digest()
        return [b / 255.0 - 0.5 for b in digest[: self.dim]]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


def mem(i: int, text: str) -> Memory:
    place = {"scope": "channel", "team_id": "t1", "channel_id": "c1", "user_id": "u1"}
    return Memory(id=f"m{i:04d}", text=text, created_at=1000 + i, **place)  # type: ignore[arg-type]


TARGET = mem(0, "3라인 검사 주기는 매주 화요일이고 release freeze는 금요일 18시부터입니다.")
OTHERS = [mem(i, f"점심 메뉴 후보 {i}번: 김치찌개, 된장찌개, 비빔밥 중에서 골라요.") for i in range(1, 40)]


def test_mixed_tokens_korean_bigrams_english_words():
    assert sparse.mixed("DB는 모아앱") == ["db", "는모", "모아", "아앱"]
    assert {"모아", "아앱"} <= set(sparse.mixed("DB를 모아 앱"))  # spacing varies: 모아 앱 ~ 모아앱
    assert sparse.mixed("What are the release freezes?") == ["release", "freeze"]
    assert sparse.mixed("E4012 에러") == ["e4012", "에러"]
    assert sparse.mixed("v1.2.3 10") == ["v1", "2", "3", "10"]  # numbers never join across a space


def test_mixed_matches_particles_and_english_forms():
    doc = set(sparse.mixed(TARGET.text))
    assert {"검사", "주기", "release", "freeze"} <= doc
    query = set(sparse.mixed("검사주기가 언제야? when is the release freeze"))
    assert {"검사", "주기", "release", "freeze"} <= query


async def search_top(store: EdgeMemoryStore | QdrantMemoryStore) -> list[str]:
    """The first three ids. The keyword half ranks the target first; the dense half ranks a distractor
    first, and the two tie in the fusion, so "in the top two" is what a working keyword index gives."""
    hits = await store.search("검사 주기 언제야", V, limit=3)
    return [h.memory.id for h in hits]


async def test_edge_store_indexed_with_another_tokenizer_is_reindexed_on_open(tmp_path):
    emb = ScatterEmbedder()
    old = EdgeMemoryStore(tmp_path, emb, tokenizer="bigram")
    await old.add_many([TARGET, *OTHERS])
    await old.close()

    store = EdgeMemoryStore(tmp_path, emb)  # the default tokenizer, "mixed"
    assert store.tokenizer == "mixed"
    assert TARGET.id in (await search_top(store))[:2]
    await store.close()


async def test_edge_store_without_reindex_would_miss_it(tmp_path):
    """The control: the same data, the keyword vector taken away, the memory is not found first."""
    emb = ScatterEmbedder()
    old = EdgeMemoryStore(tmp_path, emb, tokenizer="bigram")
    await old.add_many([TARGET, *OTHERS])
    await old.close()
    store = EdgeMemoryStore(tmp_path, emb)
    store._reindex_sparse = lambda shard: None  # type: ignore[method-assign]
    assert TARGET.id not in await search_top(store)
    await store.close()


async def test_qdrant_store_indexed_with_another_tokenizer_is_reindexed(tmp_path):
    """(qdrant-client's local mode fuses ranks its own way, so this asks the keyword index directly.)"""
    from qdrant_client import AsyncQdrantClient
    from qdrant_client import models as qm

    emb = ScatterEmbedder()
    client = AsyncQdrantClient(path=str(tmp_path / "q"))
    old = QdrantMemoryStore(client, emb, tokenizer="bigram")
    await old.add_many([TARGET, *OTHERS])
    store = QdrantMemoryStore(client, emb)
    assert store.tokenizer == "mixed"
    await store.count()  # opens the collection (and re-indexes)
    idx, val = store.sparse_query("검사 주기 언제야") or ([], [])
    found = await client.query_points(
        store._collection, query=qm.SparseVector(indices=idx, values=val), using="mixed", limit=3
    )
    assert [p.payload["memory_id"] for p in found.points if p.payload] == [TARGET.id]
    await client.close()


@pytest.mark.parametrize("kind", ["mixed", "bigram"])
def test_no_tokenizer_needs_a_model(kind):
    assert sparse.document_vector("검사 주기", kind)[0]
