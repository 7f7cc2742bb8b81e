"""Channel knowledge follows the channel: an edit of a learned post is learned again, a deletion
forgotten, a deleted channel dropped and turned off; only those three events are queued. On a
real SQLite file and the real embedded message index."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.index import MessageIndex
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.mattermost.events import OtherEvent
from mchat_bot.memory.store import AnyStore
from mchat_bot.pipeline.listeners.knowledge import CHANNEL_GONE, KnowledgeFollower
from mchat_bot.storage import Storage

SITE = "http://mm.local:8065"
AT = 1_700_000_000_000
CARD = "4111111111111111"


@dataclass
class World:
    follower: KnowledgeFollower
    log: ChatLog
    channels: LearningChannels
    store: AnyStore
    storage: Storage
    wakes: list[int]


@pytest.fixture
async def world(storage: Storage, messages: AnyStore) -> World:
    channels = await LearningChannels(storage, ["*"]).load()
    log = await ChatLog(storage).load()
    wakes: list[int] = []
    learner = Learner(channels, log, "bot1", lambda: wakes.append(1))
    follower = KnowledgeFollower(learner, MessageIndex(messages, log, SITE))
    return World(follower, log, channels, messages, storage, wakes)


def line(post_id: str, text: str, at: int = AT, channel: str = "c1") -> Line:
    return Line(post_id=post_id, channel_id=channel, text=text, create_at=at, team_id="t1", user_name="kim")


def post(post_id: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": post_id,
        "create_at": AT,
        "update_at": AT + 5000,
        "edit_at": AT + 5000,
        "user_id": "u-kim",
        "channel_id": "c1",
        "root_id": "",
        "message": message,
        "type": "",
        **extra,
    }


def post_event(kind: str, p: dict[str, Any]) -> OtherEvent:
    return OtherEvent(
        seq=3, event=kind, data={"post": json.dumps(p)}, broadcast={"channel_id": p["channel_id"]}
    )


def queued(f: KnowledgeFollower) -> list[tuple[str, str, str]]:
    out = []
    while not f.queue.empty():
        out.append(f.queue.get_nowait())
    return out


async def test_an_edit_of_a_learned_post_is_learned_again(world: World) -> None:
    await world.log.record([line("p1", "회의는 3층에서 합니다")])
    await Indexer(world.log, world.follower.index).drain()
    assert await world.log.backlog_size() == 0
    await world.follower.apply("post_edited", "p1", f"회의는 5층으로 옮겼습니다. 카드 {CARD}")
    kept = await world.log.get("p1")
    assert kept is not None and kept.version == 2
    assert kept.text == "회의는 5층으로 옮겼습니다. 카드 [REDACTED:card]"  # masked like any line
    assert (kept.team_id, kept.user_name, kept.create_at) == ("t1", "kim", AT)  # the rest kept
    assert [x.post_id for x in await world.log.backlog(10)] == ["p1"]
    assert world.wakes == [1] and world.follower.relearned == 1
    await Indexer(world.log, world.follower.index).drain()
    indexed = await world.store.get("p1")
    assert indexed is not None and indexed.body == kept.text


async def test_an_edit_to_the_same_text_is_not_learned_again(world: World) -> None:
    await world.log.record([line("p1", "회의는 3층에서 합니다")])
    await world.follower.apply("post_edited", "p1", "회의는 3층에서 합니다")
    kept = await world.log.get("p1")
    assert kept is not None and kept.version == 1
    assert world.wakes == [] and world.follower.relearned == 0


async def test_an_edit_of_an_unknown_post_learns_nothing(world: World) -> None:
    await world.follower.apply("post_edited", "never-learned", "새로 쓴 글")
    assert await world.log.get("never-learned") is None and await world.log.size() == 0
    assert world.wakes == [] and world.follower.relearned == 0
    assert not world.log.has("c1")


async def test_a_deletion_forgets_the_line_in_the_log_and_the_index(world: World) -> None:
    await world.log.record([line("p1", "회의는 3층에서 합니다"), line("p2", "점심은 김치찌개", AT + 1)])
    await Indexer(world.log, world.follower.index).drain()
    await world.follower.apply("post_deleted", "p1", "")
    assert await world.log.get("p1") is None and await world.store.get("p1") is None
    assert await world.log.get("p2") is not None and await world.store.get("p2") is not None
    assert world.follower.forgotten == 1
    await world.follower.apply("post_deleted", "never-learned", "")  # costs nothing
    assert world.follower.forgotten == 1


async def test_a_deleted_channel_is_dropped_and_stops_learning_even_over_star(world: World) -> None:
    await world.log.record([line("p1", "회의는 3층에서 합니다"), line("q1", "다른 채널", channel="c2")])
    await Indexer(world.log, world.follower.index).drain()
    assert world.channels.learns("c1")  # by the operator's "*"
    await world.follower.apply(CHANNEL_GONE, "c1", "")
    assert await world.log.of_channel("c1") == [] and not world.log.has("c1")
    assert await world.store.get("p1") is None and await world.store.get("q1") is not None
    assert not world.channels.learns("c1") and world.channels.learns("c2")
    assert not (await LearningChannels(world.storage, ["*"]).load()).learns("c1")  # after a restart too


async def test_on_event_queues_edits_deletions_and_deleted_channels_only(world: World) -> None:
    f = world.follower
    await f.on_event(post_event("post_edited", post("p1", "고친 글")))
    await f.on_event(post_event("post_deleted", post("p2", "지운 글")))
    await f.on_event(OtherEvent(seq=4, event=CHANNEL_GONE, data={"channel_id": "c9", "delete_at": AT}))
    await f.on_event(OtherEvent(seq=5, event=CHANNEL_GONE, data={}, broadcast={"channel_id": "c8"}))
    assert queued(f) == [
        ("post_edited", "p1", "고친 글"),
        ("post_deleted", "p2", "지운 글"),
        (CHANNEL_GONE, "c9", ""),
        (CHANNEL_GONE, "c8", ""),
    ]


async def test_on_event_ignores_everything_else(world: World) -> None:
    f = world.follower
    for event in [
        OtherEvent(seq=1, event="typing", data={"parent_id": ""}, broadcast={"channel_id": "c1"}),
        OtherEvent(seq=2, event="reaction_added", data={"reaction": "{}"}),
        post_event("ephemeral_message", post("p1", "임시")),
        post_event("post_edited", post("p2", "이전 판", original_id="p1")),  # an old version, not the post
        OtherEvent(seq=3, event="post_edited", data={"post": "{broken"}),
        OtherEvent(seq=4, event="post_deleted", data={}),  # no post
        OtherEvent(seq=5, event=CHANNEL_GONE, data={}),  # no channel id
        OtherEvent(seq=6, event=CHANNEL_GONE, data={"channel_id": 7}),
        OtherEvent(seq=7, event="channel_updated", data={"channel_id": "c1"}),
        # never channel knowledge: the bot's own streamed answer, another bot's, a webhook's, a system message
        post_event("post_edited", post("p3", "답변을 쓰는 중…", user_id="bot1")),
        post_event("post_edited", post("p4", "CI passed", props={"from_bot": "true"})),
        post_event("post_deleted", post("p5", "alert", props={"from_webhook": "true"})),
        post_event("post_edited", post("p6", "kim joined", type="system_join_channel")),
        "not an event",
    ]:
        await f.on_event(event)
    assert queued(f) == []
