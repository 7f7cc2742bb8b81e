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
