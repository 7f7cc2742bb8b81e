"""Validity and administration surface of both engines: supersede, current-only search, scan, DM rule."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mchat_bot.memory.store import EdgeMemoryStore, Memory, QdrantMemoryStore, Selection, Viewer


@pytest.fixture(params=["edge", "qdrant-client"])
async def store(request, tmp_path, embedder) -> AsyncIterator[EdgeMemoryStore | QdrantMemoryStore]:
    if request.param == "edge":
        s: EdgeMemoryStore | QdrantMemoryStore = EdgeMemoryStore(tmp_path, embedder)
    else:
        from qdrant_client import AsyncQdrantClient

        s = QdrantMemoryStore(AsyncQdrantClient(location=":memory:"), embedder)
    yield s
    await s.close()


def m(id: str, text: str, **kw: object) -> Memory:
    base: dict[str, object] = {"scope": "channel", "team_id": "t1", "channel_id": "c1", "user_id": "u1"}
    return Memory(id=id, text=text, created_at=float(len(id)), **(base | kw))  # type: ignore[arg-type]


async def test_superseded_memories_leave_search_but_not_history(store) -> None:
    await store.add_many([m("a", "X부품 불량률 12%"), m("bb", "X부품 불량률 8%", replaces="a")])
    assert await store.supersede("a", "bb", 100.0)
    assert not await store.supersede("missing", "bb", 100.0)
    v = Viewer("t1", "c1", "u9")
    assert [h.memory.id for h in await store.search("X부품 불량률", v, 5)] == ["bb"]
    assert {h.memory.id for h in await store.search_all("X부품 불량률", v, 5)} == {"a", "bb"}
    old = await store.get("a")
    assert old is not None and old.valid_until == 100.0 and old.superseded_by == "bb" and not old.current
    assert [x.id for x in await store.recent(v, 10)] == ["bb"]
    assert {x.id for x in await store.recent_all(v, 10)} == {"a", "bb"}


async def test_personal_memories_from_a_dm_and_the_direct_viewer(store) -> None:
    await store.add_many(
        [
            m("p1", "내 연차는 12월 24일부터", scope="user", team_id="", channel_id="d1"),
            m("p22", "내 주차 자리는 B2-14", scope="user", team_id="t2", channel_id="x1"),
            m("t333", "팀 회식은 금요일", scope="team", team_id="t1", channel_id="c2"),
        ]
    )
    in_team = {h.memory.id for h in await store.search("연차 주차 회식", Viewer("t1", "c7", "u1"), 10)}
    assert in_team == {"p1", "t333"}  # not the personal memory of team t2
    in_dm = {
        h.memory.id for h in await store.search("연차 주차 회식", Viewer("", "d1", "u1", direct=True), 10)
    }
    assert in_dm == {"p1", "p22"}  # all of u1's personal memories; no team memory in a DM
    in_group_dm = {h.memory.id for h in await store.search("연차 주차 회식", Viewer("", "g1", "u1"), 10)}
    assert in_group_dm == {"p1"}
    other = {
        h.memory.id for h in await store.search("연차 주차 회식", Viewer("", "d2", "u2", direct=True), 10)
    }
    assert other == set()


async def test_scan_selects_without_a_viewer(store) -> None:
    await store.add_many([m(f"m{i}", f"memory {i}", channel_id=f"c{i % 3}") for i in range(300)])
    assert len([x async for x in store.scan(Selection(), batch=64)]) == 300
    c1 = [x async for x in store.scan(Selection(channel_id="c1"), batch=64)]
    assert len(c1) == 100 and all(x.channel_id == "c1" for x in c1)
    assert await store.set_fields("m1", {"valid_until": 5.0})
    current = [x async for x in store.scan(Selection(channel_id="c1", include_superseded=False))]
    assert len(current) == 99


async def test_count_by_scope_counts_each_scope(store) -> None:
    await store.add_many(
        [
            m("c1", "채널 메모 하나"),
            m("c2", "채널 메모 둘"),
            m("u1", "개인 메모", scope="user"),
            m("t1", "팀 메모", scope="team"),
        ]
    )
    assert await store.count_by_scope() == {"channel": 2, "user": 1, "team": 1}
