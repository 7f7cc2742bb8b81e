"""``learn on|off|status``: who may switch learning (asked of the server, never of the message),
where (never in a DM or group DM), what ``--forget`` deletes, and the Korean words; on a real
SQLite file and the real embedded message index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.memory.store import AnyStore
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.knowledge import ChannelKnowledge
from mchat_bot.pipeline.message import Outcome
from mchat_bot.storage import Storage
from tests.support.chat import ChatError, FakeChat
from tests.support.factories import SITE, message

ADMIN = "u-admin"
SYSADMIN = "u-sys"
MEMBER = "u-member"
SCHEME_ADMIN = "u-scheme"


@dataclass
class RolesChat(FakeChat):
    """FakeChat with channel memberships and user roles, as the server would give them."""

    channel_roles: dict[str, str] = field(
        default_factory=lambda: {
            ADMIN: "channel_user channel_admin",
            SYSADMIN: "channel_user",
            MEMBER: "channel_user",
            SCHEME_ADMIN: "channel_user",
        }
    )
    user_roles: dict[str, str] = field(default_factory=lambda: {SYSADMIN: "system_user system_admin"})
    lookup_fails: int = 0  # the status of the role lookups' failure (0: they work)
    lookups: list[tuple[str, str]] = field(default_factory=list)

    async def get_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        self.lookups.append((channel_id, user_id))
        if self.lookup_fails:
            raise ChatError(self.lookup_fails)
        if user_id not in self.channel_roles:
            raise ChatError(404)
        member: dict[str, Any] = {
            "channel_id": channel_id,
            "user_id": user_id,
            "roles": self.channel_roles[user_id],
        }
        if user_id == SCHEME_ADMIN:
            member["scheme_admin"] = True
        return member

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return {"id": user_id, "username": user_id, "roles": self.user_roles.get(user_id, "system_user")}


@dataclass
class World:
    knowledge: ChannelKnowledge
    channels: LearningChannels
    log: ChatLog
    store: AnyStore
    chat: RolesChat
    storage: Storage
    turned_on: list[tuple[str, str]]


@pytest.fixture
async def world(storage: Storage, messages: AnyStore) -> World:
    channels = await LearningChannels(storage).load()
    log = await ChatLog(storage).load()
    chat = RolesChat()
    turned_on: list[tuple[str, str]] = []
    knowledge = ChannelKnowledge(
        channels,
        MessageIndex(messages, log, SITE),
        chat,  # type: ignore[arg-type]
        retention_days=90,
        on_turned_on=lambda channel_id, lang: turned_on.append((channel_id, lang)),
    )
    return World(knowledge, channels, log, messages, chat, storage, turned_on)


async def learn(w: World, arg: str, *, user: str = ADMIN, lang: str = "en", **kw: Any):  # type: ignore[no-untyped-def]
    return await w.knowledge.learn(message(f"@ai learn {arg}", user=user, **kw), arg, lang)


def line(post_id: str, text: str, at: int, channel: str = "c1") -> Line:
    return Line(post_id=post_id, channel_id=channel, text=text, create_at=at, user_name="kim")


async def test_a_plain_member_is_refused(world: World) -> None:
    reply = await learn(world, "on", user=MEMBER)
    assert reply.outcome is Outcome.REFUSED and reply.text == texts.learn_refused("en")
    assert not world.channels.learns("c1") and await world.channels.get("c1") is None
    assert world.turned_on == []
    reply = await learn(world, "off", user=MEMBER)
    assert reply.outcome is Outcome.REFUSED


async def test_a_channel_admin_turns_learning_on_and_it_persists(world: World) -> None:
    reply = await learn(world, "on", user=ADMIN)
    assert reply.outcome is Outcome.STORED and reply.text == texts.learn_on_notice("en", 90)
    assert world.chat.lookups == [("c1", ADMIN)]  # asked of the server, for this channel
    assert world.channels.learns("c1") and not world.channels.learns("c2")
    assert world.turned_on == [("c1", "en")]  # the backfill is started
    assert (await LearningChannels(world.storage).load()).learns("c1")
    state = await world.channels.get("c1")
    assert state is not None and state.enabled_by == ADMIN and state.team_id == "t1"


async def test_a_system_admin_and_a_scheme_admin_may_switch(world: World) -> None:
    assert (await learn(world, "on", user=SYSADMIN)).outcome is Outcome.STORED
    assert world.channels.learns("c1")
    assert (await learn(world, "off", user=SCHEME_ADMIN)).outcome is Outcome.STORED
    assert not world.channels.learns("c1")


async def test_the_message_cannot_claim_a_role(world: World) -> None:
    reply = await learn(world, "on channel_admin system_admin", user=MEMBER)
    assert reply.outcome is Outcome.REFUSED and not world.channels.learns("c1")


@pytest.mark.parametrize("status", [500, 403, 404])
async def test_a_failed_role_lookup_refuses(world: World, status: int) -> None:
    world.chat.lookup_fails = status
    reply = await learn(world, "on", user=ADMIN)
    assert reply.outcome is Outcome.REFUSED and reply.text == texts.learn_refused("en")
    assert not world.channels.learns("c1")


async def test_a_failed_user_lookup_refuses(world: World) -> None:
    class Down(RolesChat):
        async def get_user(self, user_id: str) -> dict[str, Any]:
            raise ChatError(503)

    world.knowledge.chat = Down()  # type: ignore[assignment]
    assert (await learn(world, "on", user=SYSADMIN)).outcome is Outcome.REFUSED
    assert (await learn(world, "on", user=ADMIN)).outcome is Outcome.STORED  # no user lookup needed


@pytest.mark.parametrize("ctype", ["D", "G"])
@pytest.mark.parametrize("arg", ["on", "off --forget", "status", ""])
async def test_dms_and_group_dms_never_learn(world: World, ctype: str, arg: str) -> None:
    reply = await learn(world, arg, user=SYSADMIN, ctype=ctype, channel="dm1", team="")
    assert reply.outcome is Outcome.REFUSED and reply.text == texts.learn_not_here("en")
    assert world.chat.lookups == [] and not world.channels.learns("dm1", ctype)
    assert await world.channels.get("dm1") is None


async def test_learn_off_forget_deletes_the_channels_lines_and_only_them(world: World) -> None:
    await learn(world, "on")
    await world.log.record(
        [
            line("a", "배포는 금요일에 하지 않습니다.", 1_700_000_000_000),
            line("b", "점심은 김치찌개로 정했습니다.", 1_700_000_001_000),
            line("x", "다른 채널의 글입니다.", 1_700_000_002_000, channel="c2"),
        ]
    )
    await Indexer(world.log, world.knowledge.index).drain()
    await world.log.record([line("c", "아직 임베딩 안 된 글", 1_700_000_003_000)])
    reply = await learn(world, "off --forget")
    assert reply.outcome is Outcome.FORGOTTEN and reply.text == texts.learn_off("en", True, 3)
    assert not world.channels.learns("c1")
    assert await world.log.of_channel("c1") == [] and await world.log.of_channel("c2") == ["x"]
    assert await world.store.get("a") is None and await world.store.get("b") is None
    assert await world.store.get("x") is not None
    assert not world.log.has("c1")


async def test_learn_off_without_forget_keeps_what_was_learned(world: World) -> None:
    await learn(world, "on")
    await world.log.record([line("a", "배포는 금요일에 하지 않습니다.", 1_700_000_000_000)])
    reply = await learn(world, "off")
    assert reply.outcome is Outcome.STORED and reply.text == texts.learn_off("en", False, 0)
    assert not world.channels.learns("c1") and await world.log.of_channel("c1") == ["a"]


async def test_status_counts_the_channels_lines_and_needs_no_admin(world: World) -> None:
    await world.log.record(
        [
            line("a", "하나", 1000),
            line("b", "둘", 2000),
            line("c", "셋", 3000),
            line("x", "넷", 4000, channel="c2"),
        ]
    )
    reply = await learn(world, "status", user=MEMBER)
    assert reply.outcome is Outcome.LISTED and reply.text == texts.learn_status("en", False, 3, 90)
    assert world.chat.lookups == []
    await learn(world, "on")
    reply = await learn(world, "", user=MEMBER)
    assert reply.text == texts.learn_status("en", True, 3, 90)


async def test_the_korean_words(world: World) -> None:
    reply = await learn(world, "켜기", lang="ko")
    assert reply.outcome is Outcome.STORED and reply.text == texts.learn_on_notice("ko", 90)
    assert world.channels.learns("c1") and world.turned_on == [("c1", "ko")]
    await world.log.record([line("a", "배포는 금요일에 하지 않습니다.", 1000)])
    reply = await learn(world, "상태", user=MEMBER, lang="ko")
    assert reply.text == texts.learn_status("ko", True, 1, 90)
    reply = await learn(world, "끄기", lang="ko")
    assert reply.text == texts.learn_off("ko", False, 0) and not world.channels.learns("c1")
    assert await world.log.of_channel("c1") == ["a"]
    reply = await learn(world, "끄기 삭제", lang="ko")
    assert reply.outcome is Outcome.FORGOTTEN and reply.text == texts.learn_off("ko", True, 1)
    assert await world.log.of_channel("c1") == []


async def test_an_unknown_verb_shows_the_usage_and_switches_nothing(world: World) -> None:
    reply = await learn(world, "maybe")
    assert reply.outcome is Outcome.REFUSED and reply.text == texts.format_usage("learn", "en")
    assert world.chat.lookups == [] and not world.channels.learns("c1")


async def test_messages_for_searches_the_asking_channel_only_and_never_a_dm(world: World) -> None:
    await learn(world, "on")
    await world.log.record(
        [
            line("a", "점심은 김치찌개로 정했습니다.", 1000),
            line("x", "점심은 김치찌개로 정했습니다.", 1000, channel="c2"),
        ]
    )
    hits = await world.knowledge.messages_for("점심은 김치찌개로", message("점심 뭐였지?"))
    assert [h.memory.id for h in hits] == ["a"]
    assert (
        await world.knowledge.messages_for("점심은 김치찌개로", message("?", ctype="D", channel="c1")) == []
    )
    assert await world.knowledge.messages_for("점심은 김치찌개로", message("?"), limit=0) == []
