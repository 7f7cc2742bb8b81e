"""Late answers say so, over real sockets: a mention posted while the daemon was stopped is answered
by the catch-up after its restart, and that answer starts with the offline note; a mention answered
at once has none. ``ux.late_after`` is 2 s here so that the outage can be short."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.pipeline import texts
from tests.support.daemon import DaemonProcess, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

KO_NOTE_START = texts.late_note("ko", 10).split("(")[0]
EN_NOTE_START = texts.late_note("en", 10).split("(")[0]


async def test_an_answer_caught_up_after_an_outage_starts_with_the_note(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    bot = DaemonProcess(dev, llm, tmp_path, {"MCHAT_UX_LATE_AFTER": "2"})
    await bot.start()
    word = tag()
    _, prompt = await bot.ask("kim", "qa", f"@ai {word} 오늘 일정은?")
    assert prompt and "⏰" not in prompt  # answered at once: no note
    assert await bot.stop() == 0

    qa = dev.seed.channels["qa"]
    ko = await dev.user_post("kim", qa, f"@ai {word} 내일 일정은?")
    en = await dev.user_post("lee", qa, f"@ai {word} what is on tomorrow?")
    await asyncio.sleep(3.0)  # past ux.late_after while the bot is away
    await bot.start()
    [ko_reply] = await bot.replies_to(ko, timeout=60)
    [en_reply] = await bot.replies_to(en, timeout=60)
    first_line, _, rest = ko_reply["message"].partition("\n\n")
    assert first_line.startswith(KO_NOTE_START) and "⏰" not in rest
    assert en_reply["message"].startswith(EN_NOTE_START) and en_reply["message"].count("⏰") == 1
    assert '"reply.late"' in bot.log_tail(20000)

    _, again = await bot.ask("kim", "qa", f"@ai {word} 모레 일정은?")
    assert again and "⏰" not in again  # caught up: prompt answers are plain again
    assert await bot.stop() == 0


async def test_an_answer_that_waited_behind_others_says_so_not_that_the_bot_was_away(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    """One worker and a model taking 1.5 s: the second of two questions posted together waits past
    ux.late_after (1 s) in the inbox, though the socket brought it at once."""
    bot = DaemonProcess(dev, llm, tmp_path, {"MCHAT_UX_LATE_AFTER": "1", "MCHAT_BOT_WORKERS": "1"})
    await bot.start()
    llm.delay(1.5)
    try:
        word = tag()
        qa = dev.seed.channels["qa"]
        first = await dev.user_post("kim", qa, f"@ai {word} what is on today?")
        second = await dev.user_post("lee", qa, f"@ai {word} what is on tomorrow?")
        [first_reply] = await bot.replies_to(first, timeout=30)
        [second_reply] = await bot.replies_to(second, timeout=30)
    finally:
        llm.delay(0)
        assert await bot.stop() == 0
    assert "⏰" not in first_reply["message"]  # its turn started at once
    assert second_reply["message"].startswith(texts.late_note("en", 10, away=False).split("(")[0]), (
        second_reply
    )
    assert "offline" not in second_reply["message"]
