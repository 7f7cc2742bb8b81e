"""The systemd unit: `systemd-analyze verify` accepts it, and it asks for what issue 4 requires."""

from __future__ import annotations

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
