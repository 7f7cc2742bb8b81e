"""The relevance cut: on made-up scores (the rule itself) and on the real store (the demo's case)."""

from __future__ import annotations

from mchat_bot.config import MemorySettings
from mchat_bot.memory.relevance import DEFAULT_MIN_RELEVANCE, KEYWORD_WEIGHT, Relevance, coverage, keywords
from mchat_bot.memory.store import EdgeMemoryStore, Hit, Memory, Viewer

V = Viewer("t1", "c1", "u1")


def hit(text: str, score: float) -> Hit:
    return Hit(Memory(id=text[:8], text=text, channel_id="c1", team_id="t1"), score)


def test_keyword_coverage_is_the_share_of_the_query_keywords_found() -> None:
    q = keywords("X부품 불량률 어때?")
    assert coverage(q, "X부품 불량률 12%") == len(q & keywords("X부품 불량률")) / len(q)
    assert coverage(q, "The release freeze for line 3 starts on December 1.") == 0.0
    assert coverage(frozenset(), "anything") == 0.0
    assert coverage(keywords("when is the release freeze?"), "release freeze: Dec 1") == 1.0


def test_a_near_but_unrelated_memory_is_cut_and_a_matching_one_kept() -> None:
    cut = Relevance()
    unrelated = hit("The release freeze for line 3 starts on December 1.", 0.80)
    related = hit("X부품 불량률 12%", 0.80)
    kept = cut.keep("불량률", [unrelated, related])
    assert kept == [related]  # unchanged: the shown score is still the cosine
    assert cut.score("불량률", related) == 0.80 + KEYWORD_WEIGHT
    assert cut.score("불량률", unrelated) == 0.80


def test_a_close_paraphrase_passes_on_its_cosine_alone() -> None:
    paraphrase = hit("늦게까지 야근하면 택시비 지원됩니다", DEFAULT_MIN_RELEVANCE + 0.01)
    assert Relevance().keep("밤늦게 퇴근할 때 교통비?", [paraphrase]) == [paraphrase]


def test_order_is_kept_and_zero_turns_the_cut_off() -> None:
    hits = [hit("alpha beta", 0.90), hit("gamma", 0.10), hit("alpha", 0.85)]
    assert Relevance().keep("alpha", hits) == [hits[0], hits[2]]
    assert Relevance(0).keep("alpha", hits) == hits


def test_the_settings_default_is_the_measured_threshold() -> None:
    assert MemorySettings().min_relevance == DEFAULT_MIN_RELEVANCE


async def test_on_the_real_store_the_demo_search_keeps_only_the_real_hit(store: EdgeMemoryStore) -> None:
    defect = Memory(id="m-defect", text="X부품 불량률 12%", channel_id="c1", team_id="t1")
    freeze = Memory(
        id="m-freeze", text="The release freeze for line 3 starts on December 1.", channel_id="c1"
    )
    await store.add_many([defect, freeze])
    found = await store.search("불량률", V, limit=5)
    assert {h.memory.id for h in found} == {"m-defect", "m-freeze"}  # the engine returns its nearest
    assert [h.memory.id for h in Relevance().keep("불량률", found)] == ["m-defect"]
    for question in ("X부품 얼마나 불량이야?", "when does the release freeze start?"):
        assert Relevance().keep(question, await store.search(question, V)), question
    unrelated = await store.search("what is on the cafeteria menu today?", V)
    assert unrelated and not Relevance().keep("what is on the cafeteria menu today?", unrelated)
