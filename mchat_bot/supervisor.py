"""Supervised background tasks and the systemd notify protocol.

A part that crashes is restarted after a delay from the one retry policy (full jitter, capped)
instead of taking the daemon down, again and again: a part never dies for good. A part that returns
normally is finished. Cancellation always wins, so shutdown is prompt.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from mchat_bot.net.retry import Backoff, RetryPolicy

log = structlog.get_logger(__name__)

HEALTHY_RUN_S = 60.0  # a part that ran this long before crashing starts its backoff afresh


@dataclass(slots=True)
class PartState:
    name: str
    restarts: int = 0
    running: bool = False
    last_error: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs each part in its own task and restarts it when it crashes."""

    def __init__(self, *, max_backoff: float = 30.0, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy(first_delay=0.5, max_delay=max_backoff, tries=None)
        self.parts: dict[str, PartState] = {}

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        state = PartState(name)
        state.task = asyncio.create_task(self._keep(state, factory), name=f"part:{name}")
        self.parts[name] = state

    async def _keep(self, state: PartState, factory: Callable[[], Awaitable[None]]) -> None:
        delays: Backoff = self.policy.backoff()
        while True:
            started = time.monotonic()
            state.running = True
            try:
                await factory()
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as exc:  # a crashed part must not take the daemon down
                state.running = False
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started > HEALTHY_RUN_S:
                    delays.reset()
                delay = delays.next()
                log.error(
                    "part_crashed",
                    part=state.name,
                    error=state.last_error[:300],
                    restarts=state.restarts,
                    restart_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            state.running = False
            log.info("part_finished", part=state.name)
            return

    def healthy(self) -> bool:
        return all(p.running for p in self.parts.values())

    async def stop(self, names: list[str] | None = None) -> None:
        """Cancel the named parts (all by default) and wait until they are gone."""
        targets = [self.parts[n] for n in (names or list(self.parts)) if n in self.parts]
        tasks = [p.task for p in targets if p.task is not None and not p.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def sd_notify(state: str) -> bool:
    """Send a notification to systemd (Type=notify); a no-op outside systemd.

    Written by hand (a dozen lines) rather than adding the unmaintained sdnotify package.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """Half the WatchdogSec systemd asked for, in seconds, or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.5)
    except ValueError:
        return None
