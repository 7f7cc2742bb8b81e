"""A timeout on silence: no progress for ``seconds`` ends the block with ``TimeoutError``.

A streamed answer arrives in hundreds of chunks; ``asyncio.timeout`` around each read schedules and
cancels a timer per chunk. Here progress is a clock reading (``touch``) and one timer is armed per
``seconds``: when it fires early (there was progress since) it re-arms for the last progress plus
``seconds``, so the deadline is exactly the same.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class IdleTimeout:
    """``async with IdleTimeout(30) as idle: ... idle.touch() ...``; raises ``TimeoutError`` once
    ``seconds`` pass without a ``touch`` (counting from entering the block)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timeout = asyncio.timeout(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0

    async def __aenter__(self) -> IdleTimeout:
        self._loop = asyncio.get_running_loop()
        await self._timeout.__aenter__()
        self._last = self._loop.time()
        self._handle = self._loop.call_at(self._last + self.seconds, self._check)
        return self

    def touch(self) -> None:
        """Something arrived: the silence starts again from now."""
        if self._loop is not None:
            self._last = self._loop.time()

    def _check(self) -> None:
        assert self._loop is not None
        deadline = self._last + self.seconds
        if self._loop.time() >= deadline:
            self._handle = None
            self._timeout.reschedule(self._loop.time())  # expires now: the block's task is cancelled
        else:
            self._handle = self._loop.call_at(deadline, self._check)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._timeout.__aexit__(exc_type, exc, tb)  # an expiry becomes TimeoutError here
