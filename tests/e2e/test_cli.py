"""The command line as an operator meets it: settings errors, `check`, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mchat_bot.config import load_settings
from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess
from tests.support.fixtures import create_database
from tests.support.postgres import PostgresCluster

GOOD = """
[mattermost]
url = "http://127.0.0.1:1"
[storage]
path = "state/db.sqlite3"
"""


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mchat_bot", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("body", "env", "key"),
    [
        (GOOD + "\n[llm]\nmodle = 'x'\n", {"MCHAT_MATTERMOST_TOKEN": "t0ken-value"}, "llm.modle"),
        (GOOD + "\n[bot]\nworkers = 'four'\n", {"MCHAT_MATTERMOST_TOKEN": "t0ken-value"}, "bot.workers"),
        (GOOD, {}, "mattermost.token"),
        ("[mattermost]\ntoken = 'abc'\n", {}, "mattermost.url"),
        (GOOD, {"MCHAT_MATTERMOST_TOKEN": "t0ken-value", "MCHAT_BOT_WORKERS": "many"}, "bot.workers"),
        (GOOD + "\n[nonsense]\n", {"MCHAT_MATTERMOST_TOKEN": "t0ken-value"}, "[nonsense]"),
        (
            GOOD + "\n[http]\nallow_from = ['not-a-cidr']\n",
            {"MCHAT_MATTERMOST_TOKEN": "t0ken-value"},
            "http.allow_from",
        ),
        (GOOD + "\n[llm]\ntimeout = nan\n", {"MCHAT_MATTERMOST_TOKEN": "t0ken-value"}, "llm.timeout"),
        (
            GOOD + "\n[http]\nmax_body_bytes = -1\n",
            {"MCHAT_MATTERMOST_TOKEN": "t0ken-value"},
            "http.max_body_bytes",
        ),
        (
            GOOD,
            {"MCHAT_MATTERMOST_TOKEN": "t0ken-value", "MCHAT_WEBHOOKS_RESPONSE_BUDGET": "inf"},
            "webhooks.response_budget",
        ),
        (  # several daemons on PostgreSQL, an embedded memory store each: refused
            GOOD,
            {"MCHAT_MATTERMOST_TOKEN": "t0ken-value", "MCHAT_STORAGE_URL": "postgresql://bot@127.0.0.1:1/x"},
            "memory.url",
        ),
    ],
)
def test_settings_errors_exit_2_and_name_the_key(
    tmp_path: Path, body: str, env: dict[str, str], key: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(body)
    result = run_cli("run", "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert "t0ken-value" not in result.stderr + result.stdout
    assert not (tmp_path / "state").exists(), "nothing may start on a settings error"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(GOOD)
    settings = load_settings(config, env={"MCHAT_MATTERMOST_TOKEN": "abc"})
    assert settings.storage.path == tmp_path / "conf" / "state" / "db.sqlite3"
    assert "abc" not in repr(settings)


@pytest_asyncio.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer() as server:
        yield server


async def test_check_reports_a_working_setup_and_a_bad_token(dev: DevServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[mattermost]\nurl = "{dev.url}"\n[memory]\npath = "q"\n[storage]\npath = "s.db"\n')
    ok = await asyncio.to_thread(
        run_cli, "check", "--config", str(config), env={"MCHAT_MATTERMOST_TOKEN": dev.seed.bot.token}
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ Mattermost REST" in ok.stdout and "@memorybot" in ok.stdout
    assert "✓ Mattermost WebSocket" in ok.stdout
    assert "✓ mode: single daemon: SQLite state + embedded memory store" in ok.stdout
    bad = await asyncio.to_thread(
        run_cli, "check", "--config", str(config), env={"MCHAT_MATTERMOST_TOKEN": "wrong-token-123"}
    )
    assert bad.returncode == 1
    assert "refused the token" in bad.stdout
    assert "wrong-token-123" not in bad.stdout + bad.stderr


async def test_check_names_postgres_and_tests_it(
    dev: DevServer, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster, "mchat_check")
    config = tmp_path / "config.toml"
    config.write_text(f'[mattermost]\nurl = "{dev.url}"\n[memory]\npath = "q"\n')
    env = {"MCHAT_MATTERMOST_TOKEN": dev.seed.bot.token, "MCHAT_STORAGE_URL": url}
    refused = await asyncio.to_thread(run_cli, "check", "--config", str(config), env=env)
    assert refused.returncode == 2 and "memory.url" in refused.stderr  # no shared memory store
    env["MCHAT_MEMORY_ALLOW_EMBEDDED_WITH_SHARED_STATE"] = "true"
    ok = await asyncio.to_thread(run_cli, "check", "--config", str(config), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ mode: several daemons on shared PostgreSQL state, each with its own embedded" in ok.stdout
    assert "✓ storage: PostgreSQL" in ok.stdout and f"127.0.0.1:{pg_cluster.port}/mchat_check" in ok.stdout
    assert pg_cluster.password not in ok.stdout + ok.stderr
    wrong = url.replace(pg_cluster.password, "not-the-password")
    bad = await asyncio.to_thread(
        run_cli, "check", "--config", str(config), env={**env, "MCHAT_STORAGE_URL": wrong}
    )
    assert bad.returncode == 1 and "✗ storage: PostgreSQL" in bad.stdout
    assert "password authentication failed" in bad.stdout  # the server's words
    assert "not-the-password" not in bad.stdout + bad.stderr


async def test_sigterm_stops_the_daemon_with_exit_0(dev: DevServer, tmp_path: Path) -> None:
    async with FakeLLM() as llm:
        daemon = DaemonProcess(dev, llm, tmp_path)
        await daemon.start()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.proc.wait(), timeout=20)
        assert code == 0, daemon.log_tail()
        assert dev.seed.bot.token not in daemon.log_tail(10**7)
