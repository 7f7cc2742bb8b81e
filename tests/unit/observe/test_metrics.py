"""The metrics module without a daemon: label caps, LLM usage parsing, the dashboard's metric names."""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from mchat_bot.mattermost.events import OtherEvent
from mchat_bot.observe import metrics
from tests.support.paths import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "mchat-bot.json"


def exposed_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_event_type_labels_are_bounded() -> None:
    assert metrics.event_type(OtherEvent(seq=1, event="typing", data={}, broadcast={})) == "typing"
    assert metrics.event_type(SimpleNamespace(event="bad name!")) == "other"
    for i in range(200):  # a server inventing event names cannot grow the series without bound
        metrics.event_type(SimpleNamespace(event=f"made_up_{i}"))
    assert len(metrics._event_types) <= metrics._MAX_EVENT_TYPES
    assert metrics.event_type(SimpleNamespace(event="made_up_199")) == "other"


def test_llm_usage_is_read_from_objects_and_dicts() -> None:
    model = "unit/model"
    before = metrics.LLM_TOKENS.labels(model=model, kind="prompt")._value.get()
    metrics.observe_llm(
        model, 0.2, SimpleNamespace(usage=SimpleNamespace(prompt_tokens=11, completion_tokens=3))
    )
    metrics.observe_llm(model, 0.2, {"usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    metrics.observe_llm(model, 0.2, SimpleNamespace(usage=None))  # a provider without usage
    assert metrics.LLM_TOKENS.labels(model=model, kind="prompt")._value.get() - before == 16
    assert metrics.AI_RESPONSES.labels(model=model, outcome="ok")._value.get() >= 3


def test_a_failing_inbox_does_not_break_the_scrape() -> None:
    class Broken:
        async def depth(self) -> int:
            raise RuntimeError("database is locked")

        async def oldest_age(self) -> float:
            return 0.0

    live = metrics.LiveCollector()
    live.inbox = Broken()

    async def counts() -> dict[str, int]:
        return {"channel": 4, "user": 1}

    live.memory_counts = counts
    asyncio.run(live.refresh())
    got = {(m.name, tuple(s.labels.items())): s.value for m in live.collect() for s in m.samples}
    assert got[("mchat_inbox_depth", ())] == 0
    assert got[("mchat_memories", (("scope", "channel"),))] == 4
    assert got[("mchat_websocket_connected", ())] == 0  # no gateway yet: not connected


def test_every_dashboard_query_uses_an_exposed_metric() -> None:
    metrics.prime("openai/demo-model", doors=("websocket", "slash", "outgoing_webhook"))
    metrics.WEBHOOK_REQUESTS.labels(door="slash", status="200").inc(0)
    metrics.WEBHOOK_ERRORS.labels(door="slash", reason="unauthorized").inc(0)
    metrics.WEBHOOK_LATENCY.labels(door="slash")
    metrics.MESSAGES_PROCESSED.labels(door="websocket", action="help", outcome="ok").inc(0)
    metrics.LLM_TOKENS.labels(model="openai/demo-model", kind="prompt").inc(0)
    metrics.LLM_ERRORS.labels(model="openai/demo-model", kind="timeout").inc(0)
    metrics.EVENTS_RECEIVED.labels(event="posted").inc(0)
    metrics.LIVE._memories = {"channel": 0}
    exposed = exposed_names(asyncio.run(metrics.scrape()).decode())
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bmchat_[a-z_]+", target["expr"])
    }
    assert len(used) >= 15
    assert used <= exposed, used - exposed
