"""Runs the real daemon as a child process against a DevServer and a FakeLLM, for the e2e tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.daemon import (
    http_port,
    replies_to,
    start_daemon,
    stop_daemon,
    wait_ready,
    write_config,
)
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.pipeline.message import IncomingMessage

READY_TIMEOUT_S = 90.0


def tag() -> str:
    """A short unique word, so that tests sharing a daemon never see each other's memories."""
    return uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STARTED: list[asyncio.subprocess.Process] = []  # every daemon a test started; conftest kills leftovers


class DaemonProcess:
    """One `mchat-bot run` process; `ask` posts as a user and returns the bot's replies in the thread."""

    def __init__(self, dev: DevServer, llm: FakeLLM, folder: Path, env: dict[str, str] | None = None) -> None:
        self.dev = dev
        self.llm = llm
        self.folder = folder
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = folder / "daemon.log"
        self._log_start = 0  # where this start's lines begin in daemon.log (restarts append)

    async def start(self, *, wait_ready: bool = True) -> None:
        config = write_config(self.folder, self.dev.url, self.llm.url)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = await start_daemon(config, self.dev.seed.bot.token, self.log_path, self.env)
        STARTED.append(self.proc)
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        assert self.proc is not None
        try:
            await wait_ready(self.dev, self.proc, READY_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"daemon not ready ({exc}); log:\n{self.log_tail()}") from None

    async def http_url(self, timeout: float = 30.0) -> str:
        """http://127.0.0.1:<port> of this start's HTTP server (read from its http_listening line)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            text = self.log_path.read_bytes()[self._log_start :].decode(errors="replace")
            port = http_port(text)
            if port:
                return f"http://127.0.0.1:{port}"
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"daemon exited; log:\n{self.log_tail()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no http_listening line; log:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        assert self.proc is not None
        return await stop_daemon(self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def bot_posts(self, predicate: Callable[[dict[str, Any]], bool] = lambda p: True) -> list[dict[str, Any]]:
        return [p for p in self.dev.posts_by(self.dev.seed.bot.id) if predicate(p)]

    async def replies_to(
        self, post: dict[str, Any], *, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        return await replies_to(self.dev, post, count=count, timeout=timeout)

    async def ask(
        self, user: str, channel: str, text: str, *, root_id: str = "", timeout: float = 30.0
    ) -> tuple[dict[str, Any], str]:
        """Post `text` as `user` in `channel` (a seed channel name or 'dm') and return (post, reply text)."""
        channel_id = self.dev.seed.dm[user] if channel == "dm" else self.dev.seed.channels[channel]
        post = await self.dev.user_post(user, channel_id, text, root_id=root_id)
        replies = await self.replies_to(post, timeout=timeout)
        return post, "".join(r["message"] for r in replies)


@contextlib.asynccontextmanager
async def running_daemon(
    dev: DevServer, llm: FakeLLM, folder: Path, env: dict[str, str] | None = None
) -> AsyncIterator[DaemonProcess]:
    """A started, ready daemon; stopped afterwards, and it must exit cleanly (code 0)."""
    daemon = DaemonProcess(dev, llm, folder, env)
    await daemon.start()
    yield daemon
    code = await daemon.stop()
    assert code == 0, daemon.log_tail()


def message_in_qa(post: dict[str, Any], dev: DevServer) -> IncomingMessage:
    """The pipeline's message for a post kim made in the seed's #qa (for tests that drive parts directly)."""
    return IncomingMessage(
        post_id=post["id"],
        channel_id=post["channel_id"],
        channel_type="O",
        channel_name="qa",
        team_id=dev.seed.team_id,
        user_id=post["user_id"],
        user_name="kim",
        message=post["message"],
        create_at=post["create_at"],
    )


def shared_state_daemons(
    dev: DevServer, llm: FakeLLM, folder: Path, url: str, n: int, *, lease: float = 3.0
) -> list[DaemonProcess]:
    """``n`` daemons on one PostgreSQL (active-active), each in its own folder under a name of its
    own (``d0``, ``d1``, …) with a short claim lease. No Qdrant server can run here, so each keeps an
    embedded memory store (``memory.allow_embedded_with_shared_state``)."""
    group = []
    for i in range(n):
        home = folder / f"d{i}"
        home.mkdir(parents=True)
        env = {
            "MCHAT_STORAGE_URL": url,
            "MCHAT_MEMORY_ALLOW_EMBEDDED_WITH_SHARED_STATE": "true",
            "MCHAT_BOT_INSTANCE_ID": f"d{i}",
            "MCHAT_BOT_CLAIM_LEASE": str(lease),
            "MCHAT_BOT_WORKERS": "8",
            "MCHAT_MATTERMOST_SAFETY_RATE_PER_SEC": "1000",
        }
        group.append(DaemonProcess(dev, llm, home, env))
    return group
