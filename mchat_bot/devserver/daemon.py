"""The daemon as a child process, driven through the dev server: the harness of the tests, the demo
and the benchmarks.

`mchat-bot run` starts with a temporary config exactly as an operator would run it; its replies are
read back from the dev server by the markers the bot puts in their props. The one thing of the
daemon this imports is the streaming "still writing" marker, which tells a finished reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

from mchat_bot.devserver.server import DevServer
from mchat_bot.pipeline.steps.streaming import MARKER as STREAMING_MARKER

REPLY_TIMEOUT_S = 60.0


def write_config(folder: Path, url: str, llm_url: str) -> Path:
    """A config file for the demo and the tests: everything under `folder`, the token from the env."""
    config = folder / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [mattermost]
            url = "{url}"
            aliases = ["@ai"]
            [llm]
            model = "openai/demo-model"
            api_base = "{llm_url}/v1"
            timeout = 10.0
            [memory]
            path = "qdrant"
            [storage]
            path = "mchat_bot.sqlite3"
            """
        ),
        encoding="utf-8",
    )
    return config


async def start_daemon(
    config: Path, token: str, log_path: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start `mchat-bot run` as a child process; `env` adds MCHAT_* overrides.

    The HTTP server listens on a free port (``http.listen`` port 0) unless `env` says otherwise;
    the daemon logs the port it bound in its ``http_listening`` line (see :func:`http_port`).
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    defaults = {"MCHAT_HTTP_LISTEN": "127.0.0.1:0", "MCHAT_LLM_API_KEY": "demo-key-not-secret"}
    env = base | defaults | (env or {}) | {"MCHAT_MATTERMOST_TOKEN": token}
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mchat_bot",
            "run",
            "--config",
            str(config),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )


def http_port(log_text: str) -> int | None:
    """The port the daemon's HTTP server bound, from the last ``http_listening`` line of its log."""
    port = None
    for line in log_text.splitlines():
        if '"http_listening"' in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                port = int(json.loads(line)["port"])
    return port


async def stop_daemon(proc: asyncio.subprocess.Process, timeout: float = 20.0) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1


async def replies_to(
    dev: DevServer, post: dict[str, Any], *, count: int = 1, timeout: float = REPLY_TIMEOUT_S
) -> list[dict[str, Any]]:
    """The bot's finished replies to `post`, found by the marker it puts in props, oldest first.

    A streamed reply counts once its last edit has removed the "still writing" marker.
    """
    bot_id = dev.seed.bot.id
    replies = await dev.wait_for_posts(
        lambda p: (
            p.get("user_id") == bot_id
            and p.get("root_id") == (post.get("root_id") or post["id"])
            and p.get("props", {}).get("mchat_reply_to") == post["id"]
            and not str(p.get("message", "")).endswith(STREAMING_MARKER)
        ),
        count=count,
        timeout=timeout,
    )
    return sorted(replies, key=lambda p: p["create_at"])


async def wait_ready(dev: DevServer, proc: asyncio.subprocess.Process, timeout: float = 90.0) -> None:
    """Ready = the bot answers a DM. On a first start, posts made before its socket was up are
    (rightly) never answered, so ask again every few seconds until one is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        post = await dev.user_post("kim", dev.seed.dm["kim"], "help")
        try:
            await replies_to(dev, post, timeout=3.0)
            return
        except TimeoutError:
            if proc.returncode is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}") from None
            if asyncio.get_running_loop().time() > deadline:
                raise
