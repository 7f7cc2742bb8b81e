"""Prometheus metrics: one registry, every metric object, and small helpers to observe them.

Labels stay low-cardinality: doors, actions, outcomes, model names, event types (capped), never user
or channel ids. Values that live elsewhere (socket state, inbox depth, memory counts) are read at
scrape time by :class:`LiveCollector`, so nothing has to remember to update a gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0)

# --- the seed's six ---------------------------------------------------------------------------
WEBHOOK_REQUESTS = Counter(
    "mchat_webhook_requests_total",
    "HTTP requests to the webhook/slash endpoints, by door and status code.",
    ["door", "status"],
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "mchat_webhook_latency_seconds",
    "Time to answer a webhook/slash request (includes waiting for an inline answer).",
    ["door"],
    buckets=_SLOW,
    registry=REGISTRY,
)
WEBHOOK_ERRORS = Counter(
    "mchat_webhook_errors_total",
    "Webhook/slash requests answered with an error, by door and reason.",
    ["door", "reason"],
    registry=REGISTRY,
)
MESSAGES_PROCESSED = Counter(
    "mchat_messages_processed_total",
    "Messages addressed to the bot that were handled, by door, action and outcome.",
    ["door", "action", "outcome"],
    registry=REGISTRY,
)
AI_RESPONSES = Counter(
    "mchat_ai_responses_total",
    "LLM answers, by model and outcome (ok | error).",
    ["model", "outcome"],
    registry=REGISTRY,
)
MEMORY_SAVED = Counter(
    "mchat_memory_saved_total",
    "Memories stored, by scope.",
    ["scope"],
    registry=REGISTRY,
)

# --- running it -------------------------------------------------------------------------------
EVENTS_RECEIVED = Counter(
    "mchat_websocket_events_total",
    "WebSocket events received, by event type.",
    ["event"],
    registry=REGISTRY,
)
REPLY_LATENCY = Histogram(
    "mchat_reply_latency_seconds",
    "From the asking post's create_at to the whole reply being posted, by door.",
    ["door"],
    buckets=_SLOW,
    registry=REGISTRY,
)
HANDLE_LATENCY = Histogram(
    "mchat_handle_latency_seconds",
    "Time to compute a reply (memory + LLM), by action.",
    ["action"],
    buckets=_SLOW,
    registry=REGISTRY,
)
LLM_LATENCY = Histogram(
    "mchat_llm_latency_seconds",
    "One successful LLM completion call, by model.",
    ["model"],
    buckets=_SLOW,
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "mchat_llm_tokens_total",
    "Tokens used as reported by the provider (litellm usage), by model and kind (prompt | completion).",
    ["model", "kind"],
    registry=REGISTRY,
)
LLM_ERRORS = Counter(
    "mchat_llm_errors_total",
    "LLM call failures (each try), by model and kind (timeout | retryable | fatal).",
    ["model", "kind"],
    registry=REGISTRY,
)
MEMORY_SEARCH_LATENCY = Histogram(
    "mchat_memory_search_latency_seconds",
    "One memory search (embedding + engine query + rerank).",
    buckets=_FAST,
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Histogram(
    "mchat_rate_limit_wait_seconds",
    "Waits caused by rate limits: source=paced (to the server's X-RateLimit-*), cap (the operator's "
    "or the safety cap) or server (a 429's Retry-After, and the requests held behind it).",
    ["source"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
RATE_LIMIT_DROPPED = Counter(
    "mchat_rate_limit_dropped_total",
    "Courtesy calls and stream edits not sent because the rate budget was short, by call "
    "(typing, reaction, post = the channel greeting, edit, other).",
    ["call"],
    registry=REGISTRY,
)
AUDIT_WRITE_ERRORS = Counter(
    "mchat_audit_write_errors_total",
    "Audit rows that could not be written.",
    registry=REGISTRY,
)

_MAX_EVENT_TYPES = 64
_event_types: set[str] = set()


def event_type(event: object) -> str:
    """A bounded label for a gateway event: hello, posted, the server's event name, else ``other``."""
    name = getattr(event, "event", None)
    label = name if isinstance(name, str) and name else type(event).__name__.lower()
    if label in _event_types:
        return label
    if len(_event_types) >= _MAX_EVENT_TYPES or not label.replace("_", "").isalnum():
        return "other"
    _event_types.add(label)
    return label


def counting_events(on_event: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """Wrap the gateway's ``on_event`` so every delivered event is counted by type."""

    counters: dict[str, Any] = {}  # label -> child: .labels() costs more than the increment

    async def on(event: Any) -> None:
        label = event_type(event)
        counter = counters.get(label)
        if counter is None:
            counter = counters[label] = EVENTS_RECEIVED.labels(event=label)
        counter.inc()
        await on_event(event)

    return on


def observe_reply(door: str, create_at_ms: int, now: float | None = None) -> float:
    """Reply latency from the asking post's time (ms); returns the seconds observed."""
    seconds = max(0.0, (now if now is not None else time.time()) - create_at_ms / 1000.0)
    REPLY_LATENCY.labels(door=door or "websocket").observe(seconds)
    return seconds


def observe_llm(model: str, seconds: float, response: Any) -> None:
    """A successful completion: latency, tokens from ``response.usage`` (when the provider says)."""
    LLM_LATENCY.labels(model=model).observe(seconds)
    AI_RESPONSES.labels(model=model, outcome="ok").inc()
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, dict):
        usage = response.get("usage")
    for kind in ("prompt", "completion"):
        value = (
            usage.get(f"{kind}_tokens") if isinstance(usage, dict) else getattr(usage, f"{kind}_tokens", 0)
        )
        if isinstance(value, int) and value > 0:
            LLM_TOKENS.labels(model=model, kind=kind).inc(value)


def observe_llm_error(model: str, kind: str, final: bool) -> None:
    LLM_ERRORS.labels(model=model, kind=kind).inc()
    if final:
        AI_RESPONSES.labels(model=model, outcome="error").inc()


def observe_wait(source: str, seconds: float) -> None:
    if seconds > 0:
        RATE_LIMIT_WAIT.labels(source=source).observe(seconds)


def observe_drop(call: str) -> None:
    RATE_LIMIT_DROPPED.labels(call=call).inc()


def prime(model: str = "", doors: Iterable[str] = ("websocket",)) -> None:
    """Create the usual label sets at 0, so dashboards and rate() see a series from the start."""
    for scope in ("channel", "user", "team"):
        MEMORY_SAVED.labels(scope=scope)
    for door in doors:
        REPLY_LATENCY.labels(door=door)
    if model:
        for outcome in ("ok", "error"):
            AI_RESPONSES.labels(model=model, outcome=outcome)
        LLM_LATENCY.labels(model=model)
    for source in ("paced", "cap", "server"):
        RATE_LIMIT_WAIT.labels(source=source)
    for call in ("typing", "reaction", "post", "edit"):
        RATE_LIMIT_DROPPED.labels(call=call)


# --- read at scrape time ------------------------------------------------------------------------


class GatewayLike(Protocol):
    authenticated: asyncio.Event
    stats: Any


class InboxLike(Protocol):
    async def depth(self) -> int: ...
    async def oldest_age(self) -> float: ...


class LiveCollector(Collector):
    """Gauges read from the running parts; :meth:`refresh` does the async reads before a scrape.

    Memory counts can cost a scan on a big store, so they are refreshed at most every
    ``memory_every`` seconds; the inbox queries use the ``(state, create_at)`` index.
    """

    def __init__(self, *, memory_every: float = 30.0, timeout: float = 2.0) -> None:
        self.gateway: GatewayLike | None = None
        self.inbox: InboxLike | None = None
        self.memory_counts: Callable[[], Awaitable[dict[str, int]]] | None = None
        # channel knowledge: (lines kept, lines waiting to be embedded)
        self.knowledge_sizes: Callable[[], Awaitable[tuple[int, int]]] | None = None
        self._knowledge = (0, 0)
        self.memory_every = memory_every
        self.timeout = timeout
        self._depth = 0
        self._age = 0.0
        self._memories: dict[str, int] = {}
        self._memories_at = 0.0

    async def refresh(self) -> None:
        if self.inbox is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    self._depth = await self.inbox.depth()
                    self._age = await self.inbox.oldest_age()
        if self.knowledge_sizes is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    self._knowledge = await self.knowledge_sizes()
        now = time.monotonic()
        if self.memory_counts is not None and now - self._memories_at >= self.memory_every:
            try:
                async with asyncio.timeout(self.timeout * 2):
                    self._memories = await self.memory_counts()
                self._memories_at = now
            except Exception as exc:  # a slow store must not break the scrape
                log.warning("metrics.memory_count_failed", error=type(exc).__name__)

    def collect(self) -> Iterable[Metric]:
        connected = GaugeMetricFamily(
            "mchat_websocket_connected", "1 while the WebSocket is connected and authenticated."
        )
        connects = CounterMetricFamily("mchat_websocket_connects", "WebSocket connections opened.")
        reconnects = CounterMetricFamily(
            "mchat_websocket_reconnects", "WebSocket connections opened after the first one."
        )
        gaps = CounterMetricFamily("mchat_websocket_gaps", "Event gaps caught up over REST.")
        gw = self.gateway
        stats = gw.stats if gw is not None else None
        connected.add_metric([], 1.0 if gw is not None and gw.authenticated.is_set() else 0.0)
        n = int(getattr(stats, "connects", 0))
        connects.add_metric([], n)
        reconnects.add_metric([], max(0, n - 1))
        gaps.add_metric([], int(getattr(stats, "gaps", 0)))
        yield from (connected, connects, reconnects, gaps)
        depth = GaugeMetricFamily("mchat_inbox_depth", "Inbox items not finished (pending or claimed).")
        depth.add_metric([], self._depth)
        age = GaugeMetricFamily(
            "mchat_inbox_oldest_age_seconds", "Age of the oldest unfinished inbox item (0 when empty)."
        )
        age.add_metric([], self._age)
        yield from (depth, age)
        memories = GaugeMetricFamily("mchat_memories", "Memories stored, by scope.", labels=["scope"])
        for scope, count in sorted(self._memories.items()):
            memories.add_metric([scope], count)
        yield memories
        lines = GaugeMetricFamily("mchat_knowledge_messages", "Messages of learning channels kept.")
        lines.add_metric([], self._knowledge[0])
        backlog = GaugeMetricFamily(
            "mchat_knowledge_backlog", "Messages of learning channels not embedded yet (found by keywords)."
        )
        backlog.add_metric([], self._knowledge[1])
        yield from (lines, backlog)


LIVE = LiveCollector()
REGISTRY.register(LIVE)


async def scrape() -> bytes:
    """The text exposition of every metric (after reading the live values)."""
    await LIVE.refresh()
    return generate_latest(REGISTRY)
