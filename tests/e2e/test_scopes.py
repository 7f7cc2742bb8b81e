"""Scopes through the real daemon (`mchat-bot run` against the dev server and the fake LLM).

A personal memory made in one channel follows its author: in a shared channel it is withheld from the
public reply and shown to the author alone (her DM here), in her DM it is found, and another user
never gets it, in either channel.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: DevServer, llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    async with running_daemon(dev, llm, tmp_path_factory.mktemp("scopes")) as daemon:
        yield daemon


async def test_personal_memory_follows_its_author_across_channels(bot: DaemonProcess, dev: DevServer) -> None:
    secret = f"사물함 비밀번호는 파란 포스터 뒤 {uuid.uuid4().hex[:6]}"
    _, saved = await bot.ask("kim", "qa", f"@ai remember 개인: {secret}")
    assert "메모리 저장됨" in saved and "개인" in saved, saved
    # the author, in another shared channel: withheld from the reply there, sent to her alone
    _, found = await bot.ask("kim", "qa-private", "@ai search 사물함 비밀번호")
    assert secret not in found and "🔒" in found, found
    await dev.wait_for_posts(
        lambda p: (
            p["channel_id"] == dev.seed.dm["kim"]
            and p["props"].get("mchat_private") is True
            and secret in p["message"]
        )
    )
    # and in her DM, where she is the only reader, the search shows it
    _, found_dm = await bot.ask("kim", "dm", "search 사물함 비밀번호")
    assert secret in found_dm, found_dm
    # another user, in the same two channels: not there, and not in an answer either
    for channel in ("qa", "qa-private"):
        _, other = await bot.ask("lee", channel, "@ai search 사물함 비밀번호")
        assert secret not in other, (channel, other)
        _, answer = await bot.ask("lee", channel, "@ai 사물함 비밀번호 뭐였지?")
        assert secret not in answer, (channel, answer)


async def test_team_memory_refused_in_a_private_channel(bot: DaemonProcess) -> None:
    _, reply = await bot.ask("kim", "qa-private", "@ai remember 팀: 비공개 일정 유출 금지")
    assert "저장하지 않았습니다" in reply, reply
    _, search = await bot.ask("kim", "qa-private", "@ai search 비공개 일정")
    assert "유출 금지" not in search
