"""The reader rule through the real daemon: what is posted in a channel, every member of it may see.

Kim keeps a personal memory in her DM with the bot, then asks about it where Lee reads too: the
answer, a search and the memory list in the channel (every version of every post, streamed edits
included) never hold it; Kim alone is shown it (an ephemeral post when the bot may make one, else
her DM). A group DM with Lee follows the same rule, and so does a team memory in a channel where a
guest reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: DevServer, llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    async with running_daemon(dev, llm, tmp_path_factory.mktemp("readers")) as daemon:
        yield daemon


@pytest.fixture
def bot_is_admin(dev: DevServer) -> Iterator[None]:
    """The bot may create ephemeral posts (Mattermost gives that only to system admins)."""
    dev.seed.bot.roles = "system_admin system_user"
    yield
    dev.seed.bot.roles = "system_user"


def every_version(dev: DevServer, channel_id: str) -> list[str]:
    """Every message ever shown in the channel: live posts, deleted ones and each edit's old text."""
    return [p["message"] for p in dev.store.posts.values() if p["channel_id"] == channel_id]


async def dm_posts_about(dev: DevServer, secret: str, timeout: float = 15.0) -> list[str]:
    """What the bot sent Kim in her DM for her eyes only, holding ``secret`` (waits for the first)."""
    posts = await dev.wait_for_posts(
        lambda p: (
            p["channel_id"] == dev.seed.dm["kim"]
            and p["user_id"] == dev.seed.bot.id
            and p["props"].get("mchat_private") is True
            and secret in p["message"]
        ),
        timeout=timeout,
    )
    return [p["message"] for p in posts]


async def remember_personal(bot: DaemonProcess, secret: str) -> None:
    _, saved = await bot.ask("kim", "dm", f"remember --me my locker code is {secret}")
    assert "Memory saved" in saved and secret in saved, saved


async def test_the_personal_part_is_ephemeral_when_the_bot_may_post_so(
    bot: DaemonProcess, dev: DevServer, bot_is_admin: None
) -> None:
    # first in the module: after a 403 the bot tries ephemeral posts again only minutes later
    secret = f"EP{tag()}"
    await remember_personal(bot, secret)
    qa = dev.seed.channels["qa"]
    kim = dev.seed.users["kim"].id
    post, search = await bot.ask("kim", "qa", "@ai search locker code")
    assert secret not in search
    shown = await dev.integrations.wait_ephemeral(lambda e: secret in e["message"])
    assert (shown["to_user_id"], shown["channel_id"], shown["root_id"]) == (kim, qa, post["id"])
    assert not [m for m in every_version(dev, qa) if secret in m]
    assert not dev.posts.find(lambda p: p["props"].get("mchat_private") is True)  # no DM was needed


async def test_a_personal_memory_is_never_posted_in_a_shared_channel(
    bot: DaemonProcess, dev: DevServer
) -> None:
    secret = f"LK{tag()}"
    await remember_personal(bot, secret)
    qa = dev.seed.channels["qa"]
    _, answer = await bot.ask("kim", "qa", "@ai what is my locker code?")
    _, search = await bot.ask("kim", "qa", "@ai search locker code")
    _, listed = await bot.ask("kim", "qa", "@ai memories")
    for reply in (answer, search, listed):
        assert secret not in reply and "🔒" in reply, reply
    assert not [m for m in every_version(dev, qa) if secret in m]
    # the bot may not make ephemeral posts here: Kim got it in her DM, with a link to her question
    sent = await dm_posts_about(dev, secret)
    assert any("/_redirect/pl/" in m for m in sent), sent
    # and in her DM, where she is the only reader, the answer uses it directly
    _, in_dm = await bot.ask("kim", "dm", "what is my locker code?")
    assert secret in in_dm, in_dm


async def test_a_streamed_answer_never_shows_it_either(
    bot: DaemonProcess, dev: DevServer, llm: FakeLLM
) -> None:
    secret = f"ST{tag()}"
    await remember_personal(bot, secret)
    word = tag()
    _, saved = await bot.ask("kim", "qa", f"@ai remember the {word} locker room is on floor 2")
    assert "Memory saved" in saved
    llm.stream_delay(0.15)  # long enough to be streamed into the thread as edits
    try:
        post, answer = await bot.ask("kim", "qa", f"@ai where is the {word} locker code?")
    finally:
        llm.stream_delay(0)
    assert "floor 2" in answer and secret not in answer, answer
    edits = [p for p in dev.store.posts.values() if p["original_id"] and p["root_id"] == post["id"]]
    assert edits, "the answer was not streamed"
    assert not [m for m in every_version(dev, dev.seed.channels["qa"]) if secret in m]
    prompts = [str(r) for r in llm.requests if word in str(r)]
    assert prompts and not [p for p in prompts if secret in p]  # the model never saw it here
    await dm_posts_about(dev, secret)


async def test_a_group_dm_is_a_shared_channel(bot: DaemonProcess, dev: DevServer) -> None:
    secret = f"GM{tag()}"
    await remember_personal(bot, secret)
    post = await dev.user_post("kim", dev.seed.gm, "@ai search locker code")
    [reply] = await bot.replies_to(post)
    assert secret not in reply["message"]
    assert not [m for m in every_version(dev, dev.seed.gm) if secret in m]
    await dm_posts_about(dev, secret)


async def test_a_guest_in_the_channel_keeps_team_memories_out(bot: DaemonProcess, dev: DevServer) -> None:
    fact = f"release freeze code TF{tag()}"
    _, saved = await bot.ask("kim", "qa", f"@ai remember --team {fact}")
    assert "Memory saved" in saved, saved
    lee = dev.seed.users["lee"]
    lee.roles = "system_guest"
    try:
        # qa-private has Lee in it, now a guest: the team memory is not posted there
        _, there = await bot.ask("kim", "qa-private", "@ai search release freeze code")
        assert fact not in there and "🔒" in there, there
        # and Lee, a guest, does not get team memories at all, not even privately
        _, lee_sees = await bot.ask("lee", "qa-private", "@ai search release freeze code")
        assert fact not in lee_sees
        await asyncio.sleep(0.2)
        assert not [m for m in every_version(dev, dev.seed.channels["qa-private"]) if fact in m]
    finally:
        lee.roles = "system_user"
    await dm_posts_about(dev, fact)  # Kim, a full member, was shown it alone
