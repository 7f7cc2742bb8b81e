"""`my memories` and `export`: the asker's own memories (authored, or personal to them), in the DM only."""

from __future__ import annotations

import json

from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.message import Outcome
from mchat_bot.pipeline.router import Command, Question, parse_request
from mchat_bot.pipeline.self_service import SelfService, by_scope, own_memories
from mchat_bot.pipeline.steps.audit import audit_outcome
from mchat_bot.pipeline.texts import short_id
from tests.support.chat import FakeChat
from tests.support.factories import BOT, KIM, SITE, answer, in_dm, mem, seed


def handlers(store, chat: FakeChat | None = None, per_scope: int = 50) -> Handlers:
    return Handlers(store, None, BOT, SITE, self_service=SelfService(store, chat, per_scope=per_scope))


def test_routing_two_word_command_and_questions() -> None:
    assert parse_request("my memories", "en") == Command("my_memories", "", "en")
    assert parse_request("My memories?", "en") == Command("my_memories", "", "en")
    assert parse_request("내 메모리", "ko") == Command("my_memories", "", "ko")
    assert parse_request("내 메모리 보여줘", "ko") == Command("my_memories", "", "ko")
    assert parse_request("export", "en") == Command("export", "", "en")
    assert parse_request("내보내기", "ko") == Command("export", "", "ko")
    assert isinstance(parse_request("my memories of the launch, what were they?", "en"), Question)
    assert isinstance(parse_request("my name is kim, what is yours?", "en"), Question)
    assert isinstance(parse_request("export the report to PDF?", "en"), Question)


async def test_own_memories_are_authored_or_personal_never_someone_elses(store) -> None:
    made = await seed(store)
    current = {m.id for m in await own_memories(store, KIM, current_only=True)}
    assert current == {made[k].id for k in ("kim_personal", "kim_channel", "kim_team", "kim_left")}
    everything = {m.id for m in await own_memories(store, KIM, current_only=False)}
    assert everything == current | {made["kim_old"].id}
    groups = by_scope(await own_memories(store, KIM, current_only=True))
    assert [len(groups[s]) for s in ("user", "channel", "team")] == [1, 2, 1]


async def test_my_memories_in_the_dm_lists_by_scope_with_ids(store) -> None:
    made = await seed(store)
    reply = await in_dm(handlers(store), "my memories")
    assert reply.outcome is Outcome.LISTED
    text = reply.text
    for key in ("kim_personal", "kim_channel", "kim_team", "kim_left"):
        assert short_id(made[key].id) in text and made[key].text in text
    for key in ("lee_channel", "lee_personal", "lee_team", "kim_old"):
        assert short_id(made[key].id) not in text and made[key].text not in text
    assert text.index("Personal") < text.index("Channel") < text.index("Team")
    assert set(reply.memory_ids) == {
        made[k].id for k in ("kim_personal", "kim_channel", "kim_team", "kim_left")
    }
    assert audit_outcome("my_memories", reply) == "ok"


async def test_my_memories_in_korean_and_for_someone_with_none(store) -> None:
    await seed(store)
    ko = await in_dm(handlers(store), "내 메모리")
    assert "내 메모리" in ko.text and "개인" in ko.text
    nobody = await in_dm(handlers(store), "my memories", user="u_new")
    assert "no memories" in nobody.text and not nobody.memory_ids


async def test_my_memories_caps_each_scope_and_counts_the_rest(store) -> None:
    await store.add_many([mem(f"kim note number {i}", "user", KIM, created_at=1000.0 + i) for i in range(5)])
    reply = await in_dm(handlers(store, per_scope=2), "my memories")
    assert "kim note number 4" in reply.text and "kim note number 3" in reply.text  # newest first
    assert "kim note number 2" not in reply.text
    assert "and 3 more" in reply.text
    assert len(reply.memory_ids) == 2


async def test_in_a_channel_both_point_to_the_dm_and_show_nothing(store) -> None:
    made = await seed(store)
    chat = FakeChat()
    h = handlers(store, chat)
    for text in ("@ai my memories", "@ai export", "@ai 내 메모리", "@ai 내보내기"):
        reply = await answer(h, text, channel="c1", user=KIM, name=KIM, ctype="O")
        assert reply.outcome is Outcome.REFUSED and not reply.memory_ids
        assert "DM" in reply.text or "direct message" in reply.text
        assert made["kim_personal"].text not in reply.text + reply.private
        assert audit_outcome("export", reply) == "refused"
    assert not chat.files and not chat.posts


async def test_export_posts_a_jsonl_file_of_every_version_in_the_dm(store) -> None:
    made = await seed(store)
    chat = FakeChat()
    reply = await in_dm(handlers(store, chat), "export")
    assert reply.outcome is Outcome.LISTED and len(reply.file_ids) == 1  # the writer posts it
    assert audit_outcome("export", reply) == "ok"
    assert not chat.posts  # nothing posted by the handler itself
    assert (await chat.get_file_info(reply.file_ids[0]))["channel_id"] == f"dm_{KIM}"
    assert "5" in reply.text and "1 earlier" in reply.text
    data = await chat.get_file(reply.file_ids[0], 1 << 20)
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    mine = {made[k].id for k in ("kim_personal", "kim_channel", "kim_team", "kim_left", "kim_old")}
    assert {r["id"] for r in rows} == mine == set(reply.memory_ids)
    old = next(r for r in rows if r["id"] == made["kim_old"].id)
    assert old["superseded_by"] == made["kim_channel"].id and old["valid_until"]
    assert all(r["user_id"] == KIM for r in rows)


async def test_export_rows_are_what_memory_import_reads(store) -> None:
    from mchat_bot.cli.memory import from_json

    made = await seed(store)
    chat = FakeChat()
    reply = await in_dm(handlers(store, chat), "내보내기")
    assert "내보냈습니다" in reply.text
    data = await chat.get_file(reply.file_ids[0], 1 << 20)
    back = [from_json(json.loads(line), n) for n, line in enumerate(data.decode().splitlines(), 1)]
    by_id = {m.id: m for m in back}
    for key in ("kim_personal", "kim_channel", "kim_old"):
        orig = made[key]
        got = by_id[orig.id]
        assert (got.text, got.scope, got.channel_id, got.user_id) == (
            orig.text,
            orig.scope,
            orig.channel_id,
            orig.user_id,
        )


async def test_export_with_nothing_to_export_posts_no_file(store) -> None:
    chat = FakeChat()
    reply = await in_dm(handlers(store, chat), "export", user="u_new")
    assert reply.outcome is Outcome.NOTHING_FOUND and reply.text
    assert not chat.files and not chat.posts
