"""The learner on a real SQLite file: which posts are knowledge, and the socket's lines gathered and
written in batches without losing any (the oldest unwritten one holds the socket cursor back)."""

from __future__ import annotations

import asyncio

import pytest

from mchat_bot.knowledge import learner as learner_module
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog, Line
from mchat_bot.storage import Storage

BOT = "bot-id"


@pytest.fixture
async def learner(storage: Storage) -> Learner:
    channels = await LearningChannels(storage, ["c1"]).load()
    woken: list[int] = []
    found = Learner(channels, await ChatLog(storage).load(), BOT, wake=lambda: woken.append(1))
    found.woken = woken  # type: ignore[attr-defined]
    return found


def line(post_id: str, at: int) -> Line:
    return Line(post_id=post_id, channel_id="c1", text=f"line {post_id}", create_at=at, user_name="kim")


def test_only_a_persons_post_in_a_learning_channel_is_knowledge(learner: Learner) -> None:
    assert learner.wants("c1", "O", "u-kim", "", automated=False)
    assert not learner.wants("c2", "O", "u-kim", "", automated=False)  # not a learning channel
    assert not learner.wants("c1", "O", BOT, "", automated=False)  # the bot's own answers
    assert not learner.wants("c1", "O", "u-kim", "system_join_channel", automated=False)
    assert not learner.wants("c1", "O", "u-ci", "", automated=True)  # bot and webhook posts
    assert not learner.wants("c1", "D", "u-kim", "", automated=False)  # never a DM


async def test_gathered_lines_are_written_together_and_hold_the_cursor_until_then(learner: Learner) -> None:
    await learner.gather([line("a", 2000)])
    await learner.gather([line("b", 1000)])
    assert learner.unwritten_since() == 1000  # the oldest: a restart's catch-up starts there
    assert await learner.lines.size() == 0  # nothing written yet
    await learner.flush()
    assert await learner.lines.size() == 2 and learner.unwritten_since() is None
    assert learner.woken  # type: ignore[attr-defined]


async def test_many_gathered_lines_are_written_at_once(learner: Learner) -> None:
    await learner.gather([line(f"p{i}", 1000 + i) for i in range(learner_module.FLUSH_LINES)])
    assert await learner.lines.size() == learner_module.FLUSH_LINES and learner.unwritten_since() is None


async def test_lines_stay_gathered_when_the_write_fails(learner: Learner, storage: Storage) -> None:
    await learner.gather([line("a", 1000)])
    await storage.close()  # every statement now raises
    with pytest.raises(RuntimeError):
        await learner.flush()
    assert learner.unwritten_since() == 1000  # still held: written by the next flush, or re-read


async def test_run_writes_what_the_socket_gathered(learner: Learner) -> None:
    task = asyncio.create_task(learner.run())
    try:
        await learner.gather([line("a", 1000)])
        async with asyncio.timeout(5):
            while await learner.lines.size() == 0:  # noqa: ASYNC110 (a condition on the database)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert learner.unwritten_since() is None
