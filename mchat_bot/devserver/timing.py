"""Measurement hooks for the benchmark (bench/): when events left the server and when replies came back.

All times are `time.monotonic()` on this machine, so another local process (the load generator, the
bench runner) can compare them with its own clock. Only two small dicts grow, one entry per post, and
a bounded list of loop-lag samples; `clear()` (control API) empties them between runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopLag:
    """How late this server's event loop wakes a task that sleeps `every` s: the bench reads it per
    phase, so a reader sees when the dev server (one Python loop) is the limit rather than the bot.

    Started by the first bench call (`start()` is idempotent), so servers nobody measures run no task.
    """

    every: float = 0.01
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=100_000))
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            due = time.monotonic() + self.every
            await asyncio.sleep(self.every)
            now = time.monotonic()
            self.samples.append((now, now - due))

    def to_json(self) -> dict[str, Any]:
        """`samples`: [monotonic wake-up, lateness s] since the last clear."""
        return {"every_s": self.every, "samples": list(self.samples)}


@dataclass
class Timings:
    """`posted_sent[user_id][post_id]`: the `posted` event for that post was written to that user's socket.

    `reply_at[asking_post_id]`: the first POST /posts whose `props.mchat_reply_to` names the asking post
    arrived. `auth_at[user_id]`: each time a socket of that user authenticated.
    """

    posted_sent: dict[str, dict[str, float]] = field(default_factory=dict)
    reply_at: dict[str, float] = field(default_factory=dict)
    auth_at: dict[str, list[float]] = field(default_factory=dict)
    loop_lag: LoopLag = field(default_factory=LoopLag)

    def on_sent(self, user_id: str, post_id: str) -> None:
        self.posted_sent.setdefault(user_id, {}).setdefault(post_id, time.monotonic())

    def on_reply(self, props: dict[str, Any], received_at: float) -> None:
        asked = props.get("mchat_reply_to")
        if isinstance(asked, str) and asked:
            self.reply_at.setdefault(asked, received_at)

    def on_auth(self, user_id: str) -> None:
        self.auth_at.setdefault(user_id, []).append(time.monotonic())

    def clear(self) -> None:
        self.posted_sent.clear()
        self.reply_at.clear()
        self.auth_at.clear()
        self.loop_lag.samples.clear()

    def to_json(self, user_id: str = "") -> dict[str, Any]:
        sent = self.posted_sent.get(user_id, {}) if user_id else self.posted_sent
        return {"posted_sent": sent, "reply_at": self.reply_at, "auth_at": self.auth_at}
