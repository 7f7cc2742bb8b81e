"""Start-up: the socket comes up before the memory store and the embedding model are loaded.

A question that is already waiting when the daemon starts (so it reaches the daemon before its
model is loaded) is answered from the memories once the model is there, not with an apology, and
/readyz says ready only once the model is loaded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def readyz_until_ready(
    daemon: DaemonProcess, timeout: float = 60.0
) -> list[tuple[int, dict[str, Any], str]]:
    """Every /readyz answer from the first one on, with the daemon's log as it stood at that answer."""
    base = await daemon.http_url()
    seen: list[tuple[int, dict[str, Any], str]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            async with http.get(f"{base}/readyz") as resp:
                seen.append((resp.status, await resp.json(), daemon.log_path.read_text(errors="replace")))
            if resp.status == 200:
                return seen
            await asyncio.sleep(0.02)
    raise AssertionError(f"/readyz never said ready: {seen[-1][:2] if seen else 'no answer'}")


async def test_a_question_waiting_at_start_is_answered_from_memory_and_readyz_waits_for_the_model(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    daemon = DaemonProcess(dev, llm, tmp_path)
    await daemon.start()
    fact = f"Y부품 납기 3주 ({tag()})"
    _, saved = await daemon.ask("kim", "qa", f"@ai remember {fact}")
    assert "메모리 저장됨" in saved
    assert await daemon.stop() == 0

    question = await dev.user_post("kim", dev.seed.channels["qa"], "@ai Y부품 납기 얼마나 걸려?")
    before = len(llm.requests)
    await daemon.start(wait_ready=False)  # a fresh process: its model is not loaded yet
    seen = await readyz_until_ready(daemon)
    replies = await daemon.replies_to(question)
    answer = "".join(r["message"] for r in replies)
    code = await daemon.stop()

    assert len(replies) == 1 and "[1]" in answer, answer  # answered from the memory, citing it
    prompts = [str(r) for r in llm.requests[before:]]
    assert any(fact in p for p in prompts), "the memory did not reach the LLM prompt"
    for status, body, log in seen:
        embedder = body["checks"].get("embedder", {"ok": False, "reason": "starting"})
        if status == 200:  # ready only with the model loaded
            assert embedder == {"ok": True} and log.count('"embedder_loaded"') == 2, body
        else:
            assert body["ready"] is False and not all(c["ok"] for c in body["checks"].values())
            if not embedder["ok"]:
                assert embedder["reason"] in ("starting", "loading the embedding model"), body
    assert code == 0, daemon.log_tail()
