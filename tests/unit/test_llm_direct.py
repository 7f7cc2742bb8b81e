"""The direct OpenAI-compatible path of the LLM client (``openai/`` models), over real sockets.

The fake LLM on 127.0.0.1 stands in for OpenAI or an internal endpoint; a tiny aiohttp app records
the headers where the fake does not.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from mchat_bot.config import ConfigError, load_settings
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM, LLMError
from mchat_bot.observe import metrics
from tests.support.paths import REPO_ROOT

KEY = "sk-direct-secret-4711"
ROOT = REPO_ROOT
MESSAGES = [
    {"role": "system", "content": "Memories:\n[1] the build server is ci-7\n    (by kim, 2026-11-25)"},
    {"role": "user", "content": "which build server do we use?"},
]


def make_llm(fake: FakeLLM, model: str = "openai/fake", **kw: object) -> LLM:
    opts: dict[str, object] = {"timeout": 5.0, "retry_base": 0.05}
    opts.update(kw)
    return LLM(model, f"{fake.url}/v1", KEY, **opts)  # type: ignore[arg-type]


async def serve(handler: Any) -> tuple[web.AppRunner, int]:
    """A one-route endpoint on 127.0.0.1 that records what the fake LLM does not (headers, peers)."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


def tokens(model: str, kind: str) -> float:
    value = metrics.REGISTRY.get_sample_value("mchat_llm_tokens_total", {"model": model, "kind": kind})
    return value or 0.0


async def test_answer_and_the_request_it_sends() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        try:
            assert llm.direct
            assert await llm.complete(MESSAGES) == "According to memory [1]: the build server is ci-7"
        finally:
            await llm.aclose()
        sent = fake.requests[0]
        assert sent == {"model": "fake", "messages": MESSAGES, "temperature": 0.2, "max_tokens": 1024}


async def test_bearer_key_sent_and_base_url_joined() -> None:
    seen: list[tuple[str, str]] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization", "")))
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": " hi "}}]})

    runner, port = await serve(completions)
    try:
        with_key = LLM("openai/m", f"http://127.0.0.1:{port}/base/v1/", KEY, timeout=5.0)
        without_key = LLM("openai/m", f"http://127.0.0.1:{port}/v1", "", timeout=5.0)
        assert await with_key.complete(MESSAGES) == "hi"
        assert await without_key.complete(MESSAGES) == "hi"
        await with_key.aclose()
        await without_key.aclose()
    finally:
        await runner.cleanup()
    assert seen == [("/base/v1/chat/completions", f"Bearer {KEY}"), ("/v1/chat/completions", "")]


async def test_streaming_chunks_arrive_in_order() -> None:
    async with FakeLLM() as fake:
        fake.reply_with("one two three four")
        fake.stream_delay(0.01)
        llm = make_llm(fake)
        seen: list[str] = []
        try:
            answer = await llm.complete_streaming(MESSAGES, seen.append)
        finally:
            await llm.aclose()
        assert answer == "one two three four"
        assert seen == ["one ", "one two ", "one two three ", "one two three four"]
        assert fake.requests[0]["stream"] is True
        assert fake.requests[0]["model"] == "fake"


async def test_answers_reuse_one_connection() -> None:
    """A streamed answer is read to its end, so the next call does not open a new TCP connection."""
    ports: list[int] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(int(peer[1]) if peer else -1)
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"delta": {"content": "ok"}}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    runner, port = await serve(completions)
    llm = LLM("openai/m", f"http://127.0.0.1:{port}/v1", KEY, timeout=5.0)
    try:
        for _ in range(3):
            assert await llm.complete_streaming(MESSAGES, lambda _text: None) == "ok"
            assert await llm.complete(MESSAGES) == "ok"
    finally:
        await llm.aclose()
        await runner.cleanup()
    assert len(ports) == 6
    assert len(set(ports)) == 1, f"one keep-alive connection expected, got ports {ports}"


async def test_429_then_success_is_retried_plain_and_streaming() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        try:
            fake.fail_next(1, status=429)
            started = time.monotonic()
            assert (await llm.complete(MESSAGES)).startswith("According to memory [1]")
            assert time.monotonic() - started < 2.0  # the policy's jittered wait, capped at 8 x retry_base
            assert len(fake.requests) == 2
            fake.fail_next(1, status=429)
            fake.fail_next(1, status=502)
            assert (await llm.complete_streaming(MESSAGES, lambda _t: None)).startswith("According")
            assert len(fake.requests) == 5
        finally:
            await llm.aclose()


async def test_400_is_not_retried_and_gives_llm_error() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        try:
            fake.fail_next(1, status=400)
            with pytest.raises(LLMError, match=r"BadRequestError \(status 400\)"):
                await llm.complete(MESSAGES)
            assert len(fake.requests) == 1
            fake.fail_next(1, status=400)
            with pytest.raises(LLMError, match="400"):
                await llm.complete_streaming(MESSAGES, lambda _t: None)
            assert len(fake.requests) == 2
            fake.fail_next(5, status=503)
            with pytest.raises(LLMError, match=r"ServiceUnavailableError \(status 503\)"):
                await llm.complete(MESSAGES)
            assert len(fake.requests) == 5  # max_tries=3
        finally:
            await llm.aclose()


async def test_timeout_gives_llm_error() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake, timeout=0.3)
        try:
            fake.delay(3.0)
            started = time.monotonic()
            with pytest.raises(LLMError, match=r"timed out after 0\.3s"):
                await llm.complete(MESSAGES)
            assert time.monotonic() - started < 1.5
            assert len(fake.requests) == 1  # a timeout is not retried
            fake.delay(0)
            fake.stream_delay(1.0)  # the first chunk comes, then nothing for longer than the timeout
            with pytest.raises(LLMError):
                await llm.complete_streaming(MESSAGES, lambda _t: None)
            assert time.monotonic() - started < 3.0
        finally:
            await llm.aclose()


async def test_usage_tokens_reach_metrics() -> None:
    model = "openai/fake-usage"
    async with FakeLLM() as fake:
        fake.reply_with("five words in this answer")
        llm = make_llm(fake, model=model)
        before = tokens(model, "prompt"), tokens(model, "completion")
        try:
            await llm.complete(MESSAGES)
        finally:
            await llm.aclose()
    prompt_words = sum(len(m["content"].split()) for m in MESSAGES)
    assert tokens(model, "prompt") - before[0] == prompt_words
    assert tokens(model, "completion") - before[1] == 5
    latency = metrics.REGISTRY.get_sample_value("mchat_llm_latency_seconds_count", {"model": model})
    assert latency == 1


async def test_api_key_never_in_logs_errors_or_repr() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake)
        try:
            with structlog.testing.capture_logs() as logs:
                await llm.warm_up()
                await llm.complete(MESSAGES)
                fake.fail_next(3, status=500)
                with pytest.raises(LLMError) as info:
                    await llm.complete(MESSAGES)
            events = [entry["event"] for entry in logs]
            assert "llm.completed" in events and "llm.retry" in events and "llm.failed" in events
            assert KEY not in repr(logs)
            assert KEY not in str(info.value) and KEY not in repr(info.value)
            assert KEY not in repr(llm)
            assert KEY not in repr(llm.__dict__.get("_http"))
        finally:
            await llm.aclose()


async def test_openai_model_never_imports_litellm() -> None:
    """A daemon whose model is openai/<name> pays neither litellm's import time nor its memory."""
    async with FakeLLM() as fake:
        script = textwrap.dedent(
            f"""
            import asyncio, sys
            import mchat_bot.app.parts  # everything the daemon imports
            from mchat_bot.llm import LLM

            async def main():
                hi = [{{"role": "user", "content": "hi"}}]
                llm = LLM("openai/fake", "{fake.url}/v1", "k", timeout=5.0)
                await llm.warm_up()
                print("=>", await llm.complete(hi))
                print("=>", await llm.complete_streaming(hi, lambda t: None))
                await llm.aclose()
                print("=>", "litellm" in sys.modules)

            asyncio.run(main())
            """
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    results = [line[3:] for line in out.decode().splitlines() if line.startswith("=> ")]
    assert results == ["I have no memory about that.", "I have no memory about that.", "False"]


async def test_client_litellm_still_goes_through_litellm() -> None:
    async with FakeLLM() as fake:
        llm = make_llm(fake, client="litellm")
        assert not llm.direct
        fake.reply_with("via litellm")
        assert await llm.complete(MESSAGES) == "via litellm"
        chunks: list[str] = []
        assert await llm.complete_streaming(MESSAGES, chunks.append) == "via litellm"
        assert chunks[-1] == "via litellm"
        assert "litellm" in sys.modules
        fake.fail_next(1, status=400)
        with pytest.raises(LLMError, match="400"):
            await llm.complete(MESSAGES)
        assert fake.requests[0]["model"] == "fake"


def test_other_providers_use_litellm_and_the_setting_is_checked(tmp_path: Path) -> None:
    assert not LLM("anthropic/claude-x").direct
    assert not LLM("gpt-4o-mini").direct  # a bare name is litellm's to resolve
    assert LLM("openai/gpt-4o-mini").direct
    with pytest.raises(ValueError, match="client"):
        LLM("openai/x", client="direct")
    config = tmp_path / "config.toml"
    config.write_text('[mattermost]\nurl = "http://127.0.0.1:1"\n[llm]\nclient = "httpx"\n')
    with pytest.raises(ConfigError, match=r"llm\.client"):
        load_settings(config, env={"MCHAT_MATTERMOST_TOKEN": "t"})
    config.write_text('[mattermost]\nurl = "http://127.0.0.1:1"\n[llm]\nclient = "litellm"\n')
    assert load_settings(config, env={"MCHAT_MATTERMOST_TOKEN": "t"}).llm.client == "litellm"
