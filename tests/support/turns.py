"""Messages and a waiting helper for the pipeline's unit tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.router import BotIdentity

BOT = BotIdentity(user_id="bot1", username="memorybot", aliases=("@ai",))


def message(
    post_id: str, text: str = "@ai hello", *, root: str = "", door: str = "websocket", at: int = 0
) -> IncomingMessage:
    return IncomingMessage(
        post_id=post_id,
        channel_id="c1",
        channel_type="O",
        channel_name="qa",
        team_id="t1",
        user_id="u1",
        user_name="kim",
        message=text,
        root_id=root,
        create_at=at,
        door=door,
    )


async def until(cond: Callable[[], Any], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
