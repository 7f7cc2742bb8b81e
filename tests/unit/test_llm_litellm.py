"""The litellm client against the OpenAI-compatible fake LLM, over real sockets."""

from __future__ import annotations

import json
import socket
import time

import aiohttp
import pytest
import structlog

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM, LLMError

MESSAGES_KO = [
    {"role": "system", "content": "Memories:\n[1] X부품 불량률 12%\n    (by 김과장, 2026-11-25)"},
    {"role": "user", "content": "오늘 X부품 불량률 어때?"},
]


def make_llm(fake: FakeLLM, **kw: object) -> LLM:
    opts: dict[str, object] = {"timeout": 5.0, "retry_base": 0.05}
    opts.update(kw)
    return LLM("openai/fake", f"{fake.url}/v1", "sk-secret-test-key", **opts)  # type: ignore[arg-type]


async def test_answer_cites_memory_from_the_prompt_in_the_users_language() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        await llm.warm_up()
        answer = await llm.complete(MESSAGES_KO)
        assert answer == "저장된 메모리 [1]에 따르면: X부품 불량률 12%"
        english = await llm.complete(
            [{"role": "system", "content": "Memories:\n(none)"}, {"role": "user", "content": "status?"}]
        )
        assert english == "I have no memory about that."
        sent = fake.requests[0]
        assert sent["model"] == "fake"
        assert "[1] X부품 불량률 12%" in sent["messages"][0]["content"]


async def test_retries_on_500_and_429_then_succeeds() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        fake.fail_next(1, status=500)
        fake.fail_next(1, status=429)
        started = time.monotonic()
        assert (await llm.complete(MESSAGES_KO)).startswith("저장된 메모리 [1]")
        assert len(fake.requests) == 3
        assert time.monotonic() - started < 2.0  # the policy's jittered waits, capped at 8 x retry_base


async def test_gives_up_after_max_tries() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake, max_tries=3)
        fake.fail_next(5, status=503)
        with pytest.raises(LLMError, match="503"):
            await llm.complete(MESSAGES_KO)
        assert len(fake.requests) == 3


async def test_client_error_is_not_retried() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        fake.fail_next(1, status=400)
        with pytest.raises(LLMError):
            await llm.complete(MESSAGES_KO)
        assert len(fake.requests) == 1


async def test_timeout_raises_llm_error_quickly() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake, timeout=0.5)
        fake.delay(3.0)
        started = time.monotonic()
        with pytest.raises(LLMError, match="timed out"):
            await llm.complete(MESSAGES_KO)
        assert time.monotonic() - started < 2.0


async def test_connection_refused_is_retried_then_llm_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = LLM("openai/fake", f"http://127.0.0.1:{port}/v1", "k", timeout=2.0, retry_base=0.01)
    with pytest.raises(LLMError):
        await llm.complete(MESSAGES_KO)


async def test_api_key_never_logged_or_shown() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        fake.fail_next(3, status=500)
        with structlog.testing.capture_logs() as logs, pytest.raises(LLMError) as info:
            await llm.complete(MESSAGES_KO)
        assert "sk-secret-test-key" not in repr(logs)
        assert "sk-secret-test-key" not in str(info.value)
        assert "sk-secret-test-key" not in repr(llm)


async def test_fake_llm_streaming_models_and_switches() -> None:
    async with FakeLLM() as fake, aiohttp.ClientSession() as http:
        async with http.get(f"{fake.url}/v1/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "fake"
        fake.reply_with(lambda messages: f"echo {len(messages)}")
        body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{fake.url}/v1/chat/completions", json=body) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = (await resp.read()).decode()
        events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
        assert text == "echo 1"
        fake.reply_with("fixed")
        async with http.post(f"{fake.url}/v1/chat/completions", json={"messages": []}) as resp:
            assert (await resp.json())["choices"][0]["message"]["content"] == "fixed"
        async with http.post(f"{fake.url}/v1/chat/completions", data=b"{not json") as resp:
            assert resp.status == 400
        assert len(fake.requests) == 2
