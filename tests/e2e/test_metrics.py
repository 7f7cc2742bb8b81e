"""Operator endpoints of the real daemon: /metrics values move with the actions, /healthz, /readyz.

One daemon (a real `mchat-bot run` process) serves the module, against the dev server and the fake
LLM; its HTTP server listens on a free port found in its `http_listening` log line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon, tag
from tests.support.ops import get_json, names, scrape, value, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "openai/demo-model"
FAST = {
    "MCHAT_MATTERMOST_WS_SILENCE_TIMEOUT": "4",
    "MCHAT_MATTERMOST_WS_PING_INTERVAL": "0.5",
    # token counts come from the provider's usage, which the fake LLM sends on non-streamed answers
    "MCHAT_UX_STREAM": "false",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: DevServer, llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    async with running_daemon(dev, llm, tmp_path_factory.mktemp("metrics"), FAST) as daemon:
        yield daemon


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def base(bot: DaemonProcess) -> str:
    return await bot.http_url()


async def test_http_server_runs_without_webhook_tokens_and_rejects_webhooks(base: str) -> None:
    before = await scrape(base)
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(f"{base}/mattermost/outgoing", json={"token": "guess", "text": "hi"})
    assert r.status_code == 401  # no token configured: every webhook is refused
    after = await scrape(base)
    door = "outgoing_webhook"
    assert value(after, "mchat_webhook_requests_total", door=door, status="401") == (
        value(before, "mchat_webhook_requests_total", door=door, status="401") + 1
    )
    assert value(after, "mchat_webhook_errors_total", door=door, reason="unauthorized") == (
        value(before, "mchat_webhook_errors_total", door=door, reason="unauthorized") + 1
    )
    assert value(after, "mchat_webhook_latency_seconds_count", door=door) == (
        value(before, "mchat_webhook_latency_seconds_count", door=door) + 1
    )


async def test_every_metric_family_is_exposed(base: str) -> None:
    # memory counts are read at most every 30 s, and not before the store has opened
    samples = await wait_for(
        lambda: scrape(base),
        lambda s: "mchat_memories" in names(s) and value(s, "mchat_websocket_connected") == 1,
        timeout=30,
    )
    expected = {
        "mchat_messages_processed_total",
        "mchat_ai_responses_total",
        "mchat_memory_saved_total",
        "mchat_websocket_connected",
        "mchat_websocket_reconnects_total",
        "mchat_websocket_events_total",
        "mchat_inbox_depth",
        "mchat_inbox_oldest_age_seconds",
        "mchat_reply_latency_seconds_count",
        "mchat_memory_search_latency_seconds_count",
        "mchat_memories",
    }
    assert expected <= names(samples), expected - names(samples)
    assert value(samples, "mchat_websocket_connected") == 1
    assert value(samples, "mchat_websocket_events_total", event="hello") >= 1
    scopes = {dict(labels).get("scope") for (name, labels) in samples if name == "mchat_memories"}
    assert scopes == {"channel", "user", "team"}, scopes  # memories by scope, not one total
    # the ready check (a DM "help") went through the whole pipeline already
    assert value(samples, "mchat_messages_processed_total", door="websocket", action="help") >= 1
    for (_name, labels), _v in samples.items():
        keys = {k for k, _ in labels}
        assert not keys & {"user_id", "channel_id", "mchat_user_id", "mchat_channel_id", "post_id"}


async def test_remember_and_question_move_the_counters(bot: DaemonProcess, base: str) -> None:
    before = await scrape(base)
    fact = f"라인 {tag()} 점검은 목요일 오전 10시"
    _, saved = await bot.ask("kim", "qa", f"@ai remember {fact}")
    assert "메모리 저장됨" in saved
    _, answer = await bot.ask("kim", "qa", "@ai 라인 점검은 언제야?")
    assert answer
    after = await scrape(base)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mchat_memory_saved_total", scope="channel") == 1
    assert moved("mchat_messages_processed_total", action="remember", outcome="ok") == 1
    assert moved("mchat_messages_processed_total", action="answer", outcome="ok") == 1
    assert moved("mchat_ai_responses_total", model=MODEL, outcome="ok") == 1
    assert moved("mchat_llm_latency_seconds_count", model=MODEL) == 1
    assert moved("mchat_llm_tokens_total", model=MODEL, kind="prompt") > 0
    assert moved("mchat_llm_tokens_total", model=MODEL, kind="completion") > 0
    assert moved("mchat_memory_search_latency_seconds_count") >= 1
    assert moved("mchat_reply_latency_seconds_count", door="websocket") == 2
    assert moved("mchat_reply_latency_seconds_sum", door="websocket") > 0
    assert moved("mchat_websocket_events_total", event="posted") >= 4  # 2 questions + 2 replies


async def test_llm_errors_are_counted_by_model(bot: DaemonProcess, base: str, llm: FakeLLM) -> None:
    before = await scrape(base)
    llm.fail_next(3, status=400)  # not retryable: one try, one error
    _, reply = await bot.ask("lee", "qa", "@ai what is the deploy plan?")
    assert reply
    after = await scrape(base)
    assert value(after, "mchat_llm_errors_total", model=MODEL, kind="fatal") == (
        value(before, "mchat_llm_errors_total", model=MODEL, kind="fatal") + 1
    )
    assert value(after, "mchat_ai_responses_total", model=MODEL, outcome="error") == (
        value(before, "mchat_ai_responses_total", model=MODEL, outcome="error") + 1
    )
    assert value(after, "mchat_messages_processed_total", action="answer", outcome="llm_error") == (
        value(before, "mchat_messages_processed_total", action="answer", outcome="llm_error") + 1
    )
    llm.reset()


async def test_rate_limit_waits_are_counted(bot: DaemonProcess, base: str, dev: DevServer) -> None:
    before = await scrape(base)
    dev.faults.rate_limit(True, per_sec=2, burst=1)
    try:  # four replies at once (four workers) against a burst of one
        posts = [await dev.user_post("park", dev.seed.channels["qa"], f"@ai help {tag()}") for _ in range(4)]
        for post in posts:
            await bot.replies_to(post, timeout=30)
    finally:
        dev.faults.rate_limit(False)
    after = await scrape(base)
    # the bot paces itself to the server's headers (waits "paced", or "server" after a 429) and gives
    # up courtesy calls (typing, reactions) before replies
    waited = sum(
        value(after, "mchat_rate_limit_wait_seconds_count", source=s)
        - value(before, "mchat_rate_limit_wait_seconds_count", source=s)
        for s in ("paced", "server")
    )
    assert waited > 0
    dropped = sum(
        value(after, "mchat_rate_limit_dropped_total", call=c)
        - value(before, "mchat_rate_limit_dropped_total", call=c)
        for c in ("typing", "reaction")
    )
    assert dropped > 0


async def test_healthz_answers(base: str) -> None:
    status, body = await get_json(base, "/healthz")
    assert status == 200 and body["alive"] is True


async def test_readyz_follows_the_socket(base: str, dev: DevServer, bot: DaemonProcess) -> None:
    status, body = await get_json(base, "/readyz")
    assert status == 200, body
    assert body["checks"] == {n: {"ok": True} for n in ("socket", "storage", "memory", "embedder")}
    before = await scrape(base)
    dev.faults.freeze_sockets(True)  # the server goes silent: the bot's watchdog drops the socket
    try:
        status, body = await wait_for(lambda: get_json(base, "/readyz"), lambda r: r[0] == 503, timeout=15)
        assert body["ready"] is False
        assert body["checks"]["socket"]["ok"] is False
        assert "websocket" in body["checks"]["socket"]["reason"]
        assert body["checks"]["storage"] == {"ok": True}
        down = await scrape(base)
        assert value(down, "mchat_websocket_connected") == 0
        status, _ = await get_json(base, "/healthz")
        assert status == 200  # alive, just not ready
    finally:
        dev.faults.freeze_sockets(False)
    await wait_for(lambda: get_json(base, "/readyz"), lambda r: r[0] == 200, timeout=30)
    after = await scrape(base)
    assert value(after, "mchat_websocket_connected") == 1
    assert value(after, "mchat_websocket_reconnects_total") > value(
        before, "mchat_websocket_reconnects_total"
    )
    _, reply = await bot.ask("kim", "qa", "@ai help")  # and it answers again
    assert reply
