"""`mchat-bot demo`: the dev server, the fake LLM and the real daemon, and a short conversation.

The daemon runs as its own process with a temporary config, exactly as `mchat-bot run` would;
the script posts as users through the dev server and prints each answer from the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.pipeline.steps.streaming import MARKER as STREAMING_MARKER

REPLY_TIMEOUT_S = 60.0
SCRIPT: list[tuple[str, str, str]] = [
    ("kim", "qa", "@ai remember X부품 불량률 12%"),
    ("kim", "qa", "@ai remember The release freeze for line 3 starts on December 1."),
    ("lee", "qa", "@ai search 불량률"),
    ("kim", "qa", "@ai 오늘 X부품 불량률 어때?"),
    ("lee", "qa", "@ai when does the release freeze start?"),
    ("kim", "qa", "@ai forget X부품"),
]


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


async def ask(dev: DevServer, user: str, channel_id: str, text: str) -> list[dict[str, Any]]:
    return await replies_to(dev, await dev.user_post(user, channel_id, text))


def _show(name: str, text: str, indent: str = "") -> None:
    lines = text.splitlines() or [""]
    print(f"{indent}{name}: {lines[0]}")
    pad = " " * (len(indent) + len(name) + 2)
    for line in lines[1:]:
        print(f"{pad}{line}")


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="mchat-demo-") as tmp:
        folder = Path(tmp)
        async with DevServer() as dev, FakeLLM() as llm:
            config = write_config(folder, dev.url, llm.url)
            log_path = folder / "daemon.log"
            proc = await start_daemon(config, dev.seed.bot.token, log_path)
            try:
                print(f"dev server {dev.url}, fake LLM {llm.url}, daemon pid {proc.pid}")
                await wait_ready(dev, proc)
                print("the daemon is up and answering\n")
                print("#품질검사 (qa)")
                for user, channel, text in SCRIPT:
                    if text.endswith("forget X부품"):
                        replies = await ask(dev, user, dev.seed.channels[channel], text)
                        _show(user, text)
                        _show("AI Memory Bot", replies[0]["message"], "  └ ")
                        ids = re.findall(r"`([0-9A-Za-z]{6,})`", replies[0]["message"])
                        if not ids:
                            break
                        text = f"@ai 삭제 {ids[0]}"
                    replies = await ask(dev, user, dev.seed.channels[channel], text)
                    _show(user, text)
                    _show("AI Memory Bot", replies[0]["message"], "  └ ")
                    print()
            except (TimeoutError, RuntimeError):
                print("the daemon did not answer in time; its log:", file=sys.stderr)
                print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
                await stop_daemon(proc)
                return 1
            code = await stop_daemon(proc)
            print(f"daemon stopped with exit code {code}")
            return 0 if code == 0 else 1
