"""The event loop's own error reports are counted, not written once per occurrence."""

from __future__ import annotations

import asyncio
import io
import json

from mchat_bot.observe.logging import configure_logging, quiet_loop_errors


async def test_a_repeated_loop_error_is_one_line_with_a_count() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    loop = asyncio.get_running_loop()
    quiet_loop_errors(loop, every=60)
    try:
        for _ in range(1000):
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many")}
            )
        loop.call_exception_handler({"message": "Task exception was never retrieved"})
    finally:
        loop.set_exception_handler(None)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    errors = [line for line in lines if line.get("event") == "loop.error"]
    assert [(e["message"][:22], e["count"]) for e in errors] == [
        ("socket.accept() out of", 1),
        ("Task exception was nev", 1),
    ]
    assert errors[0]["error"] == "OSError"
