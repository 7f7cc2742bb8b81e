"""The relevance cut through the real daemon: an unrelated memory is never listed or quoted, and a
question nothing answers gets "I have no memory about that", with the fake LLM and without any LLM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.pipeline.handlers import NO_MEMORIES_NOTE
from tests.support.daemon import DaemonProcess, running_daemon, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

FREEZE = "The release freeze for line 3 starts on December 1."


async def remember_both(bot: DaemonProcess, channel: str) -> str:
    """The demo's two memories in `channel`; returns the defect one (with a unique part name)."""
    defect = f"X{tag()}부품 불량률 12%"
    for text in (defect, FREEZE):
        _, saved = await bot.ask("kim", channel, f"@ai remember {text}")
        assert "메모리 저장됨" in saved or "Memory saved" in saved, saved
    return defect


async def test_search_and_forget_leave_out_the_unrelated_memory(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    async with running_daemon(dev, llm, tmp_path) as bot:
        defect = await remember_both(bot, "qa")
        _, search = await bot.ask("lee", "qa", "@ai search 불량률")
        assert defect in search and "release freeze" not in search, search
        _, candidates = await bot.ask("kim", "qa", f"@ai forget {defect.split()[0]}")
        assert defect in candidates and "release freeze" not in candidates, candidates
        _, nothing = await bot.ask("lee", "qa", "@ai search cafeteria menu")
        assert "No memories match" in nothing and "release freeze" not in nothing, nothing


async def test_no_memory_answer_with_the_llm_says_so_in_the_prompt(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    async with running_daemon(dev, llm, tmp_path) as bot:
        await remember_both(bot, "qa-private")
        llm.requests.clear()
        _, answer = await bot.ask("lee", "qa-private", "@ai what is on the cafeteria menu today?")
        assert answer == "I have no memory about that.", answer
        [request] = [r for r in llm.requests if "cafeteria" in str(r["messages"][-1])]
        system = request["messages"][0]["content"]
        assert NO_MEMORIES_NOTE in system and "release freeze" not in system, system
        # a question the memories do answer still reaches the prompt with its memory
        _, answered = await bot.ask("kim", "qa-private", "@ai when does the release freeze start?")
        assert "December 1" in answered, answered


async def test_no_memory_answer_without_an_llm(dev: DevServer, llm: FakeLLM, tmp_path: Path) -> None:
    async with running_daemon(dev, llm, tmp_path, env={"MCHAT_LLM_MODEL": ""}) as bot:
        defect = await remember_both(bot, "town-square")
        llm.requests.clear()
        _, ko = await bot.ask("lee", "town-square", "@ai 오늘 점심 메뉴 뭐야?")
        assert ko.startswith("그에 관한 메모리가 없습니다."), ko
        _, en = await bot.ask("lee", "town-square", "@ai what is on the cafeteria menu today?")
        assert en.startswith("I have no memory about that."), en
        assert "release freeze" not in ko + en and defect not in ko + en
        _, quoted = await bot.ask("kim", "town-square", f"@ai {defect.split()[0]} 불량률 어때?")
        assert defect in quoted and "release freeze" not in quoted, quoted
        assert not llm.requests  # no model was asked
