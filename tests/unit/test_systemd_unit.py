"""The systemd unit: `systemd-analyze verify` accepts it, with the hardening and restarts it promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

UNIT = REPO_ROOT / "systemd" / "mchat-bot.service"


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "LoadCredential=mattermost_token:",
        "User=mchat-bot",
        "StateDirectory=mchat-bot",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ]:
        assert line in text, line
    assert "MCHAT_MATTERMOST_TOKEN=" not in text.replace(
        "# Or an environment file with MCHAT_MATTERMOST_TOKEN=", ""
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # Point ExecStart at this checkout's real entry point: verify checks that it is executable.
    exe = Path(sys.executable).parent / "mchat-bot"
    unit = tmp_path / "mchat-bot.service"
    unit.write_text(
        UNIT.read_text()
        .replace("/opt/mchat-bot/.venv/bin/mchat-bot", str(exe))
        .replace("WorkingDirectory=/opt/mchat-bot", f"WorkingDirectory={tmp_path}")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "mchat-bot" in line  # only findings about our unit, not the host's
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_unit_asks_for_the_hardening_the_daemon_can_live_with() -> None:
    text = UNIT.read_text()
    for line in [
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "ProtectKernelLogs=yes",
        "ProtectClock=yes",
        "RestrictSUIDSGID=yes",
        "ProtectProc=invisible",
        "MemoryDenyWriteExecute=yes",
        "LimitNOFILE=",
        "UMask=0077",
    ]:
        assert line in text, line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    unit = tmp_path / "mchat-bot.service"
    unit.write_text(UNIT.read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for mchat-bot\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


# Run with writable-and-executable memory refused, as MemoryDenyWriteExecute=yes does under systemd
# (PR_SET_MDWE, Linux 6.3+, inherited by what the process starts): the embedders' C engines, numpy and
# the embedded store must still work, or the unit would start a daemon that cannot answer.
MDWE_CODE = """
import asyncio, ctypes, mmap, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("unsupported"); sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("not enforced"); sys.exit(0)
except OSError:
    pass
from mchat_bot.memory.embedder import load_embedder
from mchat_bot.memory.store import Memory, Viewer, new_memory_id, open_store

async def main():
    for name in ("default", "use"):
        with tempfile.TemporaryDirectory() as folder:
            store = open_store(folder, None, load_embedder(name))
            memory = Memory(id=new_memory_id(), text="X부품 불량률 12%", scope="channel",
                            team_id="t1", channel_id="c1", user_id="u1", created_at=1.0)
            await store.add(memory)
            hits = await store.search("X부품 불량률", Viewer("t1", "c1", "u1"), limit=1)
            assert hits and hits[0].memory.id == memory.id, name
            await store.close()
    print("ok")

asyncio.run(main())
"""


def test_the_native_parts_run_with_write_execute_memory_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    out = subprocess.run(
        [sys.executable, "-c", MDWE_CODE], capture_output=True, text=True, timeout=180, env=env, cwd=REPO_ROOT
    )
    if out.stdout.strip() in ("unsupported", "not enforced"):
        pytest.skip(f"this kernel cannot refuse W+X memory ({out.stdout.strip()})")
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
