"""Run the shared Mattermost conformance checker against the dev server (it must report no failures)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT


def _check_py() -> Path | None:
    env = os.environ.get("MCHAT_CONFORMANCE")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "conformance" / "check.py")
    for c in candidates:
        if c.is_dir():
            c = c / "check.py"
        if c.is_file():
            return c
    return None


CHECK = _check_py()
pytestmark = pytest.mark.skipif(
    CHECK is None,
    reason="conformance checker not found (set MCHAT_CONFORMANCE or ../shared/conformance/check.py)",
)


async def _run_check(dev: DevServer) -> tuple[int, str]:
    s = dev.seed
    args = [
        str(CHECK),
        "--url",
        dev.url,
        "--bot-token",
        s.bot.token,
        "--user-token",
        s.users["kim"].token,
        "--channel",
        s.channels["qa"],
        "--private-channel",
        s.channels["qa-private"],
        "--dm-channel",
        s.dm["kim"],
    ]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        raise
    return proc.returncode or 0, out.decode()


@pytest.mark.timeout(100)
async def test_conformance_default_settings() -> None:
    async with DevServer(port=0) as dev:
        rc, out = await _run_check(dev)
    assert rc == 0, out
    assert "0 failed" in out, out


@pytest.mark.timeout(100)
async def test_conformance_with_rate_limit_headers() -> None:
    """With the limiter on (generous), every check including `ratelimit_headers` must pass."""
    async with DevServer(port=0) as dev:
        dev.faults.rate_limit(True, per_sec=1000, burst=1000)
        rc, out = await _run_check(dev)
    assert rc == 0, out
    assert "PASS ratelimit_headers" in out, out
