"""An OpenAI-compatible fake LLM on a real socket, for tests and the demo.

Deterministic by default: it answers in the language of the last user message and cites the
first memory it finds in the system prompt (a line starting with ``[1]``), so an end-to-end test
can check that retrieval reached the prompt. Switches inject faults: ``fail_next``, ``delay``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvloop
from aiohttp import web

Replier = Callable[[list[dict[str, Any]]], str]

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_FIRST_MEMORY = re.compile(r"^\s*\[1\]\s*(.+?)\s*$", re.MULTILINE)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}]
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


SUMMARY_ROLE = "You summarise a team's chat"  # how the bot's summary prompts begin
_CITED = re.compile(r"\[(\d{1,6})\]")


def summary_reply(system: str, user: str) -> str:
    """A summary that cites a few of the numbers it was given (first, middle, last, evenly), in
    the language the prompt asks for, plus one number that was never given: the bot must drop it."""
    numbers = sorted({int(n) for n in _CITED.findall(user)})
    if not numbers:
        return "-"
    picks = sorted({numbers[round(i * (len(numbers) - 1) / 4)] for i in range(5)})
    korean = "in Korean" in system
    heads = (
        ("결정 사항", "열린 질문", "할 일", "언급된 수치")
        if korean
        else (
            "Decisions",
            "Open questions",
            "Action items",
            "Figures mentioned",
        )
    )
    out = []
    for i, n in enumerate(picks):
        out.append(f"### {heads[i % len(heads)]}\n- {'요점' if korean else 'Point'} {i + 1} [{n}]")
    out.append(f"- {'기타' if korean else 'Other'} [{numbers[-1] + 50}]")
    return "\n".join(out)


def default_reply(messages: list[dict[str, Any]]) -> str:
    """Cite memory [1] of the system prompt in the user's language, or say it has no memory about it;
    a summary prompt gets :func:`summary_reply`."""
    system_text = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    if system_text.startswith(SUMMARY_ROLE):
        user_text = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "user")
        return summary_reply(system_text, user_text)
    last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    korean = bool(_HANGUL.search(last_user))
    system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    m = _FIRST_MEMORY.search(system)
    if not m:  # no memory in the prompt: what the system prompt asks a model to say then
        return "그에 관한 메모리가 없습니다." if korean else "I have no memory about that."
    memory = m.group(1)
    return f"저장된 메모리 [1]에 따르면: {memory}" if korean else f"According to memory [1]: {memory}"


class FakeLLM:
    """``async with FakeLLM() as fake:`` serves ``fake.url``; requests land in ``fake.requests``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, model: str = "fake") -> None:
        self.host = host
        self.port = port
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.prompt_chars = 0  # characters of every message received (tokens: see prompt_tokens)
        self._fail: list[int] = []  # statuses for the next requests
        self._delay = 0.0
        self._chunk_delay = 0.0  # seconds between streamed chunks (streaming tests)
        self._replier: Replier = default_reply
        self._runner: web.AppRunner | None = None

    # --- switches ---------------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next ``n`` completion requests get an OpenAI-style error with ``status``."""
        self._fail.extend([status] * n)

    def delay(self, seconds: float) -> None:
        """Wait this long before every completion answer (0 to stop)."""
        self._delay = max(0.0, seconds)

    def stream_delay(self, seconds: float) -> None:
        """Wait this long between the chunks of a streamed answer (0 to stop)."""
        self._chunk_delay = max(0.0, seconds)

    def reply_with(self, reply: str | Replier | None) -> None:
        """A fixed text, a function of the messages, or None for the default reply."""
        if reply is None:
            self._replier = default_reply
        elif isinstance(reply, str):
            text = reply
            self._replier = lambda _messages: text
        else:
            self._replier = reply

    @property
    def prompt_tokens(self) -> int:
        """Tokens received, estimated as the bot estimates them (characters / 3, per message)."""
        return sum(
            -(-len(_text_of(m.get("content"))) // 3) for body in self.requests for m in body["messages"]
        )

    def reset(self) -> None:
        self.requests.clear()
        self.prompt_chars = 0
        self._fail.clear()
        self._delay = 0.0
        self._chunk_delay = 0.0
        self._replier = default_reply

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- handlers ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "invalid JSON body", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is required", "invalid_request_error")
        self.requests.append(body)
        self.prompt_chars += sum(len(_text_of(m.get("content"))) for m in body["messages"])
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._fail:
            status = self._fail.pop(0)
            kind = "rate_limit_error" if status == 429 else "server_error"
            return _error(status, f"injected failure {status}", kind)
        text = self._replier(body["messages"])
        model = str(body.get("model") or self.model)
        if body.get("stream"):
            return await self._stream(request, model, text)
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in body["messages"])
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text.split()),
                    "total_tokens": prompt_tokens + len(text.split()),
                },
            }
        )

    async def _stream(self, request: web.Request, model: str, text: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, str], finish: str | None) -> bytes:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

        await resp.write(chunk({"role": "assistant", "content": ""}, None))
        for piece in re.findall(r"\S+\s*|\s+", text):
            await resp.write(chunk({"content": piece}, None))
            if self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
        await resp.write(chunk({}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}, status=status
    )


async def _serve(host: str, port: int) -> None:
    async with FakeLLM(host, port) as fake:
        print(f"fake LLM listening on {fake.url}/v1 (model: openai/fake)", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible fake LLM for tests and the demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args.host, args.port))  # as the daemon and the dev server run


if __name__ == "__main__":
    main()
