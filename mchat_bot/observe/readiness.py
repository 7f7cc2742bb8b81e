"""What /readyz asks: each part the daemon builds adds its check; absent means still starting.

Apart from the HTTP endpoints (``health``) so the daemon can keep it from its first moment
without importing the web framework, which it loads only after its socket is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

CHECK_TIMEOUT = 2.0
PARTS = ("socket", "storage", "memory")  # always asked ("starting" until given); others when given
Check = Callable[[], Awaitable[str | None]]  # None = fine, else the reason it is not


@dataclass(slots=True)
class Readiness:
    """The parts /readyz asks; filled in by the daemon as it builds them (absent = not ready)."""

    checks: dict[str, Check] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    timeout: float = CHECK_TIMEOUT

    async def report(self) -> tuple[bool, dict[str, Any]]:
        names = (*PARTS, *(n for n in self.checks if n not in PARTS))
        results = await asyncio.gather(*(self._run(n) for n in names))
        checks = {
            n: ({"ok": True} if r is None else {"ok": False, "reason": r})
            for n, r in zip(names, results, strict=True)
        }
        ready = all(r is None for r in results)
        return ready, {"ready": ready, "checks": checks}

    async def _run(self, name: str) -> str | None:
        check = self.checks.get(name)
        if check is None:
            return "starting"
        try:
            async with asyncio.timeout(self.timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc)[:200]}"


def socket_check(authenticated: asyncio.Event) -> Check:
    async def check() -> str | None:
        return None if authenticated.is_set() else "websocket not connected/authenticated"

    return check


def storage_check(storage: Any) -> Check:
    async def check() -> str | None:
        row = await storage.fetchone("SELECT 1")
        return None if row is not None and row[0] == 1 else "storage gave no answer"

    return check


def memory_check(store: Any) -> Check:
    async def check() -> str | None:
        await store.count()
        return None

    return check
