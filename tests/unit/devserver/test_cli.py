"""`python -m mchat_bot.devserver`: fixed tokens, seed printed and written as JSON, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cli_runs_with_fixed_tokens_and_stops_on_sigterm(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mchat_bot.devserver",
        "--port",
        str(port),
        "--bot-token",
        "bot-token-1",
        "--user-token",
        "kim=kim-token-1",
        "--seed-file",
        str(seed_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(200):
            if seed_file.exists() and seed_file.stat().st_size:
                break
            await asyncio.sleep(0.05)
        seed = json.loads(seed_file.read_text("utf-8"))
        assert seed["url"] == f"http://127.0.0.1:{port}"
        assert seed["bot"]["token"] == "bot-token-1" and seed["users"]["kim"]["token"] == "kim-token-1"
        async with httpx.AsyncClient(base_url=seed["url"], timeout=5, trust_env=False) as http:
            me = await http.get("/api/v4/users/me", headers={"Authorization": "Bearer bot-token-1"})
            assert me.json()["id"] == seed["bot"]["id"] and me.json()["is_bot"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    text = out.decode()
    assert "bot-token-1" in text and seed["channels"]["qa"] in text
