"""Loading the slow parts once the socket is up, and telling /readyz when they are loaded.

A mention that arrives meanwhile waits in the durable inbox and its worker loads the model
itself (the embedder loads once, under its lock), so nothing is answered with a "still loading".
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from mchat_bot.llm import LLM
    from mchat_bot.memory.embedder import Embedder

log = structlog.get_logger(__name__)


class WarmUp:
    """The embedding model (and litellm, for a model that needs it) loaded off the event loop."""

    def __init__(self, embedder: Embedder, llm: LLM | None, started: float) -> None:
        self.embedder = embedder
        self.llm = llm
        self.started = started
        self.loaded = asyncio.Event()
        self.error = ""

    async def run(self) -> None:
        try:
            await asyncio.to_thread(self.embedder.embed_query, "warm up")
            self.loaded.set()
            if self.llm is not None:
                await self.llm.warm_up()
        except Exception as exc:  # the first real request (or /readyz) loads them again, and reports
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("warm_up_failed", error=self.error)
        # Everything alive now (modules, the web app, models, settings) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it. Those walks paused the
        # socket reader for tens of ms, long enough at 5,000 events/s for the server to drop us.
        gc.collect()
        gc.freeze()
        log.info(
            "warmed_up",
            since_start_s=round(time.monotonic() - self.started, 3),
            frozen=gc.get_freeze_count(),
        )

    async def check(self) -> str | None:
        """For /readyz: ready once a query can be embedded; after a failed load, try again."""
        if self.loaded.is_set():
            return None
        if not self.error:
            return "loading the embedding model"
        await asyncio.to_thread(self.embedder.embed_query, "warm up")  # raises the reason, or:
        self.loaded.set()
        self.error = ""
        return None
