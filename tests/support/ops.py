"""Helpers for the operator tests: scrape the daemon's /metrics into numbers, poll /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{base}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


async def get_json(base: str, path: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{base}{path}")
    return r.status_code, r.json()


async def wait_for(
    probe: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0, every: float = 0.2
) -> Any:
    """Call the async ``probe`` until ``ok(result)``; the last result, or AssertionError on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if ok(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(every)
