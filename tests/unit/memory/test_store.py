"""The memory store with the real offline embedder, on both engines: the embedded one (qdrant-edge, tmp
dir) and the Qdrant-server code path (qdrant-client against its local mode, a server stand-in)."""

from __future__ import annotations

import random

from mchat_bot.memory import store as store_module
from mchat_bot.memory.store import (
    EdgeMemoryStore,
    Memory,
    MemoryStore,
    QdrantMemoryStore,
    Viewer,
    new_memory_id,
)
from tests.support.fixtures import store_on


def mem(
    text: str, channel: str = "c1", *, at: float, scope: str = "channel", team: str = "t1", user: str = "u1"
):
    return Memory(
        id=new_memory_id(),
        text=text,
        scope=scope,  # type: ignore[arg-type]
        team_id=team,
        channel_id=channel,
        user_id=user,
        created_at=at,
    )


V = Viewer("t1", "c1", "u9")


def may_see(m: Memory, v: Viewer) -> bool:
    """The visibility rule written out independently of the store (shared/data/README.md)."""
    if m.scope == "channel":
        return m.channel_id == v.channel_id
    if m.scope == "user":
        return m.user_id == v.user_id and m.team_id == v.team_id
    return m.scope == "team" and m.team_id == v.team_id


async def test_remember_then_search_finds_it(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    target = mem("백엔드 주간회의는 매주 월요일 오전 10시, 3층 소회의실에서 합니다.", at=1)
    await store.add(mem("점심 메뉴는 김치찌개로 정했습니다.", at=2))
    await store.add(target)
    await store.add(mem("The staging database password rotates every 90 days.", at=3))
    hits = await store.search("백엔드 회의 몇 시에 해?", V, limit=3)
    assert hits[0].memory.id == target.id
    assert hits[0].memory.text == target.text
    assert hits[0].score > hits[-1].score
    assert await store.count() == 3
    await store.close()


async def test_korean_query_matches_other_particles(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    target = mem("새솔유통은 결제일이 매월 25일이고 담당자는 김지훈 과장입니다.", at=1)
    for i, text in enumerate(
        [
            "새벽 배포는 금요일에 하지 않습니다.",
            "유통 채널 회의록은 위키에 올려 주세요.",
            "결제 모듈 리팩터링은 다음 스프린트에 합니다.",
            target.text,
        ]
    ):
        await store.add(target if text == target.text else mem(text, at=10 + i))
    hits = await store.search("새솔유통 결제일을 알려줘", V, limit=2)
    assert hits[0].memory.id == target.id
    await store.close()


async def test_newer_version_of_a_fact_ranks_first(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    old = mem("운영 DB 서버 주소는 10.0.3.15 입니다.", at=1000)
    new = mem("운영 DB 서버 주소가 10.0.3.27 로 바뀌었습니다.", at=2000)
    await store.add(new)
    await store.add(old)
    await store.add(mem("개발 DB 는 매일 새벽 3시에 초기화됩니다.", at=1500))
    hits = await store.search("운영 DB 서버 주소가 뭐야?", V, limit=3)
    ids = [h.memory.id for h in hits]
    assert ids.index(new.id) < ids.index(old.id)
    await store.close()


async def test_delete_removes_memory(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    keep = mem("회의실 예약은 그룹웨어에서 합니다.", at=1)
    gone = mem("VPN 접속은 OTP 앱으로 인증합니다.", at=2)
    await store.add(keep)
    await store.add(gone)
    assert await store.delete(gone.id) is True
    assert await store.delete(gone.id) is False
    assert await store.get(gone.id) is None
    assert await store.get(keep.id) == keep
    # several at once: the ones that exist, by id (a deleted or unknown id is simply absent)
    assert await store.get_many([keep.id, gone.id, "no-such-id", keep.id]) == {keep.id: keep}
    assert await store.get_many([]) == {}
    hits = await store.search("VPN 인증 방법", V, limit=5)
    assert gone.id not in [h.memory.id for h in hits]
    assert await store.count() == 1
    await store.close()


async def test_memories_persist_across_reopen(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    m = mem("분기 보고서 마감은 4월 5일입니다.", at=1)
    await store.add(m)
    await store.close()
    again = store_on(engine, tmp_path, embedder)
    assert await again.count() == 1
    assert await again.get(m.id) == m
    hits = await again.search("보고서 마감일", V, limit=1)
    assert hits[0].memory == m
    await again.close()


async def test_recent_is_newest_first_and_visible_only(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    mine = [mem(f"메모 {i}", at=100 + i) for i in (3, 1, 4, 2)]
    other = mem("다른 채널 메모", "c2", at=999)
    for m in [*mine, other]:
        await store.add(m)
    got = await store.recent(V, limit=3)
    assert [m.created_at for m in got] == [104, 103, 102]
    assert other.id not in [m.id for m in await store.recent(V, limit=10)]
    await store.close()


TOPICS = [
    "배포 서버 비밀번호는 금고에 있습니다",
    "고객사 미팅은 목요일 오후 2시",
    "The on-call rotation changes every Monday",
    "법인카드 한도는 월 300만원",
    "Redis cache TTL is 15 minutes",
    "신규 입사자 온보딩 문서는 노션에",
]


async def check_isolation(store: MemoryStore, seed: int) -> None:
    """Random memories over teams/channels/users/scopes; every viewer gets exactly what it may see."""
    rng = random.Random(seed)
    teams = ["t1", "t2"]
    chans = {t: [f"{t}-c{i}" for i in range(4)] for t in teams}
    users = [f"u{i}" for i in range(6)]
    mems: list[Memory] = []
    for i in range(60):
        team = rng.choice(teams)
        m = mem(
            f"{rng.choice(TOPICS)} ({i})",
            rng.choice(chans[team]),
            at=1000 + i,
            scope=rng.choice(["channel", "channel", "user", "team"]),
            team=team,
            user=rng.choice(users),
        )
        mems.append(m)
    await store.add_many(mems)  # type: ignore[attr-defined]
    for _ in range(40):
        team = rng.choice(teams)
        viewer = Viewer(team, rng.choice(chans[team]), rng.choice(users))
        visible = {m.id for m in mems if may_see(m, viewer)}
        hits = await store.search(rng.choice(TOPICS), viewer, limit=len(mems))
        got = {h.memory.id for h in hits}
        assert got <= visible, f"invisible memory returned to {viewer}"
        assert got == visible  # the filter is exact, not merely conservative
        recent = await store.recent(viewer, limit=len(mems))
        assert {m.id for m in recent} == visible
    # A DM has no team: only its own channel's memories, never team or personal ones from a team.
    assert await store.search(TOPICS[0], Viewer("", "dm-1", "u1"), limit=10) == []


async def test_no_query_returns_an_invisible_memory_edge(tmp_path, embedder, engine):
    store = EdgeMemoryStore(tmp_path, embedder)
    await check_isolation(store, seed=7)
    await store.close()


async def test_filters_stay_exact_while_the_kept_ones_roll_over(tmp_path, embedder, monkeypatch):
    """The embedded store keeps each viewer's filter built: one kept for another viewer, or an old
    one pushed out, must never decide what a search returns."""
    monkeypatch.setattr(store_module, "FILTER_CACHE", 3)
    store = EdgeMemoryStore(tmp_path, embedder)
    await check_isolation(store, seed=5)
    assert 0 < len(store._filters) <= 3
    await store.close()


async def test_no_query_returns_an_invisible_memory_qdrant_client(embedder):
    from qdrant_client import AsyncQdrantClient

    store = QdrantMemoryStore(AsyncQdrantClient(location=":memory:"), embedder)
    await check_isolation(store, seed=11)
    m = mem("서버 모드에서도 삭제됩니다", at=5000)
    await store.add(m)
    assert await store.get(m.id) == m
    assert await store.delete(m.id) is True
    assert await store.get(m.id) is None
    await store.close()


async def test_team_and_personal_scopes(tmp_path, embedder, engine):
    store = store_on(engine, tmp_path, embedder)
    team_fact = mem("전사 보안 교육은 6월에 있습니다", "c-x", at=1, scope="team", team="t1")
    personal = mem("내 연차는 12일 남았습니다", "c-y", at=2, scope="user", team="t1", user="u9")
    other_person = mem("내 연차는 3일 남았습니다", "c1", at=3, scope="user", team="t1", user="u2")
    other_team = mem("전사 보안 교육은 9월에 있습니다", "c1", at=4, scope="team", team="t2")
    mine_other_team = mem("내 연차는 15일 남았습니다", "c1", at=5, scope="user", team="t2", user="u9")
    await store.add_many([team_fact, personal, other_person, other_team, mine_other_team])  # type: ignore[attr-defined]
    ids = {h.memory.id for h in await store.search("보안 교육 연차", V, limit=10)}
    assert ids == {team_fact.id, personal.id}
    await store.close()


def test_new_memory_id_is_short_unique_and_time_sorted():
    ids = [new_memory_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(len(i) == 26 for i in ids)
    assert ids[0][:8] <= ids[-1][:8]
