"""LLM pools: several deployments balanced in turn, a failing one left out for its cooldown and the
call failed over at once, on the direct path and through litellm's Router, over real sockets."""

from __future__ import annotations

import socket
import time

import pytest

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM, LLMError
from mchat_bot.llm_pool import Deployment, DeploymentPool, deployments_of

ASK = [{"role": "user", "content": "status?"}]


def dead_base() -> str:
    """A 127.0.0.1 port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_every_model_at_every_base() -> None:
    assert deployments_of("openai/a") == [Deployment("openai/a")]
    assert deployments_of(["openai/a", "openai/b"], ["http://x/v1", " "]) == [
        Deployment("openai/a", "http://x/v1"),
        Deployment("openai/b", "http://x/v1"),
    ]
    assert len(deployments_of(["a", "b"], ["http://x", "http://y", "http://z"])) == 6
    assert deployments_of(["", " "]) == []


def test_round_robin_skips_a_cooling_deployment_until_it_recovers() -> None:
    now = [0.0]
    a, b, c = Deployment("a"), Deployment("b"), Deployment("c")
    pool = DeploymentPool([a, b, c], cooldown=30, clock=lambda: now[0])
    assert [pool.pick() for _ in range(4)] == [a, b, c, a]
    pool.failed(b)
    assert [pool.pick() for _ in range(4)] == [c, a, c, a]
    assert pool.pick(tried=[c]) == a and not pool.has_untried([a, c])
    now[0] = 31.0
    assert b in {pool.pick() for _ in range(3)}


def test_all_cooling_gives_the_one_that_recovers_first() -> None:
    now = [0.0]
    a, b = Deployment("a"), Deployment("b")
    pool = DeploymentPool([a, b], cooldown=30, clock=lambda: now[0])
    pool.failed(b)
    now[0] = 5.0
    pool.failed(a)
    assert pool.pick() == b


async def test_direct_path_balances_and_fails_over_at_once() -> None:
    async with FakeLLM() as first, FakeLLM() as second:
        llm = LLM("openai/fake", [f"{first.url}/v1", f"{second.url}/v1"], timeout=5, retry_base=1.0)
        try:
            for _ in range(4):
                await llm.complete(ASK)
            assert len(first.requests) == len(second.requests) == 2  # in turn
            first.fail_next(1, status=503)
            started = time.monotonic()
            for _ in range(4):
                await llm.complete(ASK)
            # the failed try moved to the other server with no wait (the policy's would be ~1 s)...
            assert time.monotonic() - started < 0.8
            # ...and the failing server is left out for its cooldown: every later call went there
            assert len(first.requests) == 3 and len(second.requests) == 2 + 4
        finally:
            await llm.aclose()


async def test_direct_path_survives_a_dead_endpoint_and_streams_from_the_other() -> None:
    async with FakeLLM() as alive:
        llm = LLM("openai/fake", [dead_base(), f"{alive.url}/v1"], timeout=5, retry_base=1.0)
        try:
            seen: list[str] = []
            text = await llm.complete_streaming(ASK, seen.append)
            assert text and seen and len(alive.requests) == 1
            assert await llm.complete(ASK) and len(alive.requests) == 2
        finally:
            await llm.aclose()


async def test_direct_path_gives_up_when_every_deployment_fails() -> None:
    async with FakeLLM() as first, FakeLLM() as second:
        first.fail_next(5, status=500)
        second.fail_next(5, status=500)
        llm = LLM("openai/fake", [f"{first.url}/v1", f"{second.url}/v1"], max_tries=2, retry_base=0.01)
        try:
            with pytest.raises(LLMError, match="500"):
                await llm.complete(ASK)
            assert len(first.requests) + len(second.requests) == 3  # max_tries + one per extra deployment
        finally:
            await llm.aclose()


async def test_litellm_router_fails_over_from_a_dead_deployment() -> None:
    async with FakeLLM() as alive:
        llm = LLM(
            "openai/fake", [dead_base(), f"{alive.url}/v1"], "k", timeout=5, retry_base=1.0, client="litellm"
        )
        await llm.warm_up()  # importing litellm is slow under load and is not what is timed here
        started = time.monotonic()
        for _ in range(3):
            assert await llm.complete(ASK)
        assert len(alive.requests) == 3
        assert llm._router is not None  # the Router, not litellm itself, was called
        assert time.monotonic() - started < 20  # no policy waits stacked up behind the dead one
