"""What leaves for the LLM is masked: the question, the thread and the recalled memories, over real
sockets (the dev server, the real daemon, the fake LLM recording every request it receives).

With ``llm.mask_sensitive = false`` the same values do reach the model, so the test can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import PLACEHOLDER_NOTE
from tests.support.daemon import DaemonProcess, running_daemon, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

PHONE = "010-4821-9375"  # in the thread's first post
RRN = "900101-1234567"  # in the thread's first post
OFFICE = "02-555-0199"  # in a remember: stored masked, recalled as a placeholder
EMAIL = "jiyoung.park@factory-example.co.kr"  # in the question


async def ask_in_a_thread(dev: DevServer, daemon: DaemonProcess, word: str) -> str:
    """A thread holding values, a memory made in it, a question holding one; the LLM traffic back."""
    qa = dev.seed.channels["qa"]
    root = await dev.user_post("kim", qa, f"{word} 박지영 대리 연락처 {PHONE}, 주민번호 {RRN}")
    _, saved = await daemon.ask(
        "kim", "qa", f"@ai remember {word} 박지영 대리 사무실 {OFFICE}", root_id=root["id"]
    )
    assert OFFICE not in saved
    _, answer = await daemon.ask(
        "lee", "qa", f"@ai {word} 박지영 대리에게 {EMAIL} 로 연락해도 돼?", root_id=root["id"]
    )
    assert answer
    sent = [r for r in daemon.llm.requests if word in json.dumps(r, ensure_ascii=False)]
    assert sent, "no LLM request carried the question"
    return json.dumps(sent, ensure_ascii=False)


async def test_question_thread_and_memories_reach_the_llm_masked(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    async with running_daemon(dev, llm, tmp_path) as daemon:
        sent = await ask_in_a_thread(dev, daemon, tag())
    for value in (PHONE, RRN, EMAIL, OFFICE, PHONE.replace("-", ""), RRN.replace("-", "")):
        assert value not in sent
    assert "[REDACTED:phone]" in sent and "[REDACTED:rrn]" in sent and "[REDACTED:email]" in sent
    assert json.dumps(PLACEHOLDER_NOTE, ensure_ascii=False)[1:-1] in sent


async def test_with_masking_off_the_values_reach_the_llm(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    async with running_daemon(dev, llm, tmp_path, {"MCHAT_LLM_MASK_SENSITIVE": "false"}) as daemon:
        sent = await ask_in_a_thread(dev, daemon, tag())
    assert PHONE in sent and RRN in sent and EMAIL in sent
    # the memory itself was stored masked: its placeholder is still explained to the model
    assert "[REDACTED:phone]" in sent and json.dumps(PLACEHOLDER_NOTE, ensure_ascii=False)[1:-1] in sent
