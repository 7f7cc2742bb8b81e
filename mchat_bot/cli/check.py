"""`mchat-bot check`: try every outside dependency once and say in plain words what is wrong."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import websockets

from mchat_bot.config import Settings
from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.mattermost.rest import MattermostError, MattermostUnavailable, RestClient
from mchat_bot.net.http import LazySession, timeouts
from mchat_bot.storage import StorageUnavailable, storage_for

CHECK_TIMEOUT_S = 10.0


class Finding(Exception):
    """A problem, in words an operator can act on."""


async def _mattermost(settings: Settings) -> str:
    rest = RestClient(settings.mattermost.url, settings.mattermost.token.get(), timeout=5.0, max_tries=1)
    try:
        me = await rest.get_me()
    except MattermostError as exc:
        if exc.status == 401:
            raise Finding("the server refused the token (401): create a new bot access token") from None
        raise Finding(f"users/me answered {exc.status} {exc.error_id}") from None
    except MattermostUnavailable as exc:
        raise Finding(f"cannot reach {settings.mattermost.url}: {exc}") from None
    finally:
        await rest.aclose()
    kind = "a bot account" if me.get("is_bot") else "NOT a bot account (use a bot for production)"
    return f"signed in as @{me.get('username')} ({kind})"


async def _websocket(settings: Settings) -> str:
    url = settings.mattermost.url.replace("http", "ws", 1) + "/api/v4/websocket"
    headers = {"Authorization": f"Bearer {settings.mattermost.token.get()}"}
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5, max_size=2**24) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        raise Finding(f"the WebSocket at {url} failed: {type(exc).__name__}: {exc}") from None
    if frame.get("event") != "hello":
        raise Finding(f"the WebSocket answered {frame.get('event')!r} instead of hello: is the token valid?")
    version = frame.get("data", {}).get("server_version", "?")
    return f"WebSocket authenticated (server {'.'.join(version.split('.')[:3])})"


async def _llm(settings: Settings) -> str:
    if not settings.llm.model:
        return "no LLM configured: questions are answered by quoting the best memories"
    from mchat_bot.llm import LLM, LLMError
    from mchat_bot.llm_pool import deployments_of

    # every deployment on its own: a pool that works only because it fails over is a finding too
    answered: list[str] = []
    for dep in deployments_of(settings.llm.model, settings.llm.api_base):
        llm = LLM(
            dep.model,
            dep.api_base,
            settings.llm.api_key.get(),
            timeout=min(settings.llm.timeout, 30.0),
            max_tries=1,
            client=settings.llm.client,
            mask_sensitive=settings.llm.mask_sensitive,
        )
        try:
            answer = await llm.complete([{"role": "user", "content": "Reply with the word OK."}])
        except LLMError as exc:
            raise Finding(f"the LLM {dep} failed: {exc}") from None
        finally:
            await llm.aclose()
        answered.append(f"{dep} ({len(answer)} characters)")
    return f"LLM {', '.join(answered)} answered"


async def _writable(path: Path, what: str) -> str:
    target = path if path.suffix == "" else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Finding(f"{what} folder {target} cannot be created: {exc.strerror}") from None
    if not os.access(target, os.W_OK):
        raise Finding(f"{what} folder {target} is not writable by this user")
    return f"{what} at {path} is writable"


async def _memory(settings: Settings) -> str:
    if not settings.memory.url:
        return await _writable(settings.memory.path, "memory store")
    headers = {"api-key": settings.memory.api_key.get()} if settings.memory.api_key else {}
    session = LazySession(settings.memory.url, timeout=timeouts(5.0), headers=headers)
    try:
        async with session.get().get(
            settings.memory.url.rstrip("/") + "/collections", proxy=session.proxy, allow_redirects=False
        ) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Finding(f"cannot reach the Qdrant server at {settings.memory.url}: {exc}") from None
    finally:
        await session.aclose()
    if status != 200:
        raise Finding(f"the Qdrant server answered {status}")
    return f"Qdrant server at {settings.memory.url} answers"


async def _storage(settings: Settings) -> str:
    """Which storage the daemon will use; PostgreSQL is connected to (and migrated) and asked."""
    if not settings.storage.url:
        return "SQLite: " + await _writable(settings.storage.path, "storage")
    storage = storage_for(settings.storage)
    try:
        async with storage:
            row = await storage.fetchone("SHOW server_version")
            version = await storage.schema_version()
    except StorageUnavailable as exc:
        raise Finding(f"PostgreSQL: {exc}") from None
    except Exception as exc:  # refused login, missing database: the driver's words, never the URL
        raise Finding(f"PostgreSQL at {storage.where}: {type(exc).__name__}: {exc}") from None
    return f"PostgreSQL {row[0] if row else '?'} at {storage.where} answers (schema version {version})"


async def _knowledge(settings: Settings) -> str:
    """Channel knowledge: which channels the operator lists, and the backlog (a check never fails on it)."""
    if not settings.storage.url and not settings.storage.path.exists():
        return "no state yet (nothing learned)"
    async with storage_for(settings.storage) as storage:
        kept, backlog = await ChatLog(storage).sizes()
    listed = ", ".join(settings.knowledge.channels) or "none listed"
    return (
        f"learning channels in the settings: {listed}; {kept} messages kept, {backlog} waiting to be embedded"
    )


def deployment_mode(settings: Settings) -> str:
    """Which of the two deployments the settings describe, in the words of the README."""
    if not settings.storage.url:
        memory = f"Qdrant server at {settings.memory.url}" if settings.memory.url else "embedded memory store"
        return f"single daemon: SQLite state + {memory}"
    if settings.memory.url:
        return f"several daemons: shared PostgreSQL state + Qdrant server at {settings.memory.url}"
    return (
        "several daemons on shared PostgreSQL state, each with its own embedded memory store"
        " (memory.allow_embedded_with_shared_state: for tests and development only; memories are"
        " not shared)"
    )


async def run_checks(settings: Settings) -> int:
    checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("Mattermost REST", lambda: _mattermost(settings)),
        ("Mattermost WebSocket", lambda: _websocket(settings)),
        ("LLM", lambda: _llm(settings)),
        ("memory", lambda: _memory(settings)),
        ("storage", lambda: _storage(settings)),
        ("knowledge", lambda: _knowledge(settings)),
    ]
    problems = 0
    print(f"✓ settings: valid (server {settings.mattermost.url})")
    print(f"✓ mode: {deployment_mode(settings)}")
    for name, check in checks:
        try:
            detail = await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S * 3)
        except Finding as exc:
            problems += 1
            print(f"✗ {name}: {exc}")
        except TimeoutError:
            problems += 1
            print(f"✗ {name}: no answer within {CHECK_TIMEOUT_S * 3:.0f} s")
        else:
            print(f"✓ {name}: {detail}")
    print("all good" if not problems else f"{problems} problem(s) found")
    return 1 if problems else 0
