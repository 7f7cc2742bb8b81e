"""The chat-completion client: litellm behind a timeout and our own small retry policy.

litellm takes seconds to import, so it is imported lazily in a thread (``warm_up`` starts that in
the background at boot). Retries are ours, not litellm's or the OpenAI SDK's, so one policy holds:
429, 5xx and connection errors are retried (``max_tries`` in all, waits growing by a factor 2);
anything else, and a try that runs past ``timeout``, ends the call with :class:`LLMError`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import structlog

from mchat_bot import metrics

log = structlog.get_logger(__name__)


_litellm: ModuleType | None = None
_import_lock = threading.Lock()


class LLMError(Exception):
    """The model gave no usable answer (after retries, on timeout, or on a non-retryable error)."""


def _import_litellm() -> ModuleType:
    global _litellm
    with _import_lock:
        if _litellm is None:
            # The bundled cost map: no network fetch at import (servers here have no internet).
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _litellm = litellm
        return _litellm


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retryable(exc: BaseException) -> bool:
    status = _status_of(exc)
    if status is not None:
        return status == 429 or 500 <= status <= 599
    name = type(exc).__name__
    return name in {"APIConnectionError", "ServiceUnavailableError", "InternalServerError"} or isinstance(
        exc, (ConnectionError, OSError)
    )


class LLM:
    """One configured model; ``await llm.complete(messages)`` returns the answer text."""

    def __init__(
        self,
        model: str,
        api_base: str = "",
        api_key: str = "",
        timeout: float = 60.0,
        max_tries: int = 3,
        *,
        retry_base: float = 1.0,
        temperature: float | None = 0.2,
        max_tokens: int | None = 1024,
    ) -> None:
        if not model:
            raise ValueError("LLM model name is empty")
        self.model = model
        self.api_base = api_base
        self._api_key = api_key  # never logged, never in repr
        self.timeout = timeout
        self.max_tries = max(1, max_tries)
        self.retry_base = retry_base
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._warm: asyncio.Task[ModuleType] | None = None

    def __repr__(self) -> str:
        return f"LLM(model={self.model!r}, api_base={self.api_base!r})"

    async def warm_up(self) -> None:
        """Import litellm in a worker thread so the first question does not pay for it."""
        await self._module()

    async def _module(self) -> ModuleType:
        if _litellm is not None:
            return _litellm
        if self._warm is None:
            self._warm = asyncio.create_task(asyncio.to_thread(_import_litellm))
        return await asyncio.shield(self._warm)

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The acompletion arguments shared by the plain and the streaming call."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "timeout": self.timeout,
            "num_retries": 0,
            "max_retries": 0,  # the OpenAI SDK would retry on its own otherwise
        }
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        return kwargs

    async def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to ``messages`` (OpenAI chat format); raises LLMError."""
        litellm = await self._module()
        kwargs = self._request(messages)

        last = "no attempt"
        for attempt in range(1, self.max_tries + 1):
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    response = await litellm.acompletion(**kwargs)
            except TimeoutError as exc:
                metrics.observe_llm_error(self.model, "timeout", final=True)
                log.warning("llm.timeout", model=self.model, attempt=attempt, timeout=self.timeout)
                raise LLMError(f"LLM timed out after {self.timeout:g}s") from exc
            except Exception as exc:
                status = _status_of(exc)
                last = f"{type(exc).__name__} (status {status})" if status else type(exc).__name__
                if "Timeout" in type(exc).__name__:
                    metrics.observe_llm_error(self.model, "timeout", final=True)
                    log.warning("llm.timeout", model=self.model, attempt=attempt, timeout=self.timeout)
                    raise LLMError(f"LLM timed out after {self.timeout:g}s") from exc
                final = not _retryable(exc) or attempt == self.max_tries
                metrics.observe_llm_error(self.model, "retryable" if _retryable(exc) else "fatal", final)
                if final:
                    log.warning("llm.failed", model=self.model, attempt=attempt, error=last)
                    raise LLMError(f"LLM call failed: {last}") from exc
                wait = self.retry_base * (2 ** (attempt - 1))
                log.info("llm.retry", model=self.model, attempt=attempt, error=last, wait=wait)
                await asyncio.sleep(wait)
                continue
            seconds = time.monotonic() - started
            try:
                text = _content(response)
            except LLMError:
                metrics.observe_llm_error(self.model, "empty", final=True)
                raise
            metrics.observe_llm(self.model, seconds, response)
            log.info(
                "llm.completed",
                model=self.model,
                attempt=attempt,
                seconds=round(seconds, 3),
                chars=len(text),
            )
            return text
        raise LLMError(f"LLM call failed: {last}")  # unreachable: the loop returns or raises

    # --- issue 7 (user extras): streaming ---------------------------------------------------------

    async def complete_streaming(self, messages: list[dict[str, str]], on_text: Callable[[str], None]) -> str:
        """Like :meth:`complete` with ``stream=True``: ``on_text(text so far)`` after every chunk.

        Tries are retried only before the first chunk arrives: after it, the asker already sees part
        of this answer, so an error ends the call (LLMError). No chunk for ``timeout`` s is a timeout.
        """
        litellm = await self._module()
        kwargs = self._request(messages) | {"stream": True}
        last = "no attempt"
        for attempt in range(1, self.max_tries + 1):
            started = time.monotonic()
            pieces: list[str] = []
            usage: Any = None  # the provider's token counts, when a chunk carries them (metrics)
            try:
                async with asyncio.timeout(self.timeout):
                    stream = await litellm.acompletion(**kwargs)
                iterator = stream.__aiter__()
                while True:
                    try:
                        async with asyncio.timeout(self.timeout):
                            chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    delta = _delta(chunk)
                    usage = getattr(chunk, "usage", None) or usage
                    if delta:
                        pieces.append(delta)
                        on_text("".join(pieces))
            except TimeoutError as exc:
                metrics.observe_llm_error(self.model, "timeout", final=True)
                log.warning(
                    "llm.timeout", model=self.model, attempt=attempt, timeout=self.timeout, stream=True
                )
                raise LLMError(f"LLM timed out after {self.timeout:g}s") from exc
            except Exception as exc:
                status = _status_of(exc)
                last = f"{type(exc).__name__} (status {status})" if status else type(exc).__name__
                if pieces or not _retryable(exc) or attempt == self.max_tries or "Timeout" in last:
                    metrics.observe_llm_error(self.model, "retryable" if _retryable(exc) else "fatal", True)
                    log.warning("llm.failed", model=self.model, attempt=attempt, error=last, stream=True)
                    raise LLMError(f"LLM call failed: {last}") from exc
                metrics.observe_llm_error(self.model, "retryable", final=False)
                wait = self.retry_base * (2 ** (attempt - 1))
                log.info("llm.retry", model=self.model, attempt=attempt, error=last, wait=wait, stream=True)
                await asyncio.sleep(wait)
                continue
            text = "".join(pieces).strip()
            if not text:
                metrics.observe_llm_error(self.model, "empty", final=True)
                raise LLMError("LLM returned an empty answer")
            metrics.observe_llm(self.model, time.monotonic() - started, {"usage": usage})
            log.info(
                "llm.completed",
                model=self.model,
                attempt=attempt,
                seconds=round(time.monotonic() - started, 3),
                chars=len(text),
                stream=True,
            )
            return text
        raise LLMError(f"LLM call failed: {last}")


def _delta(chunk: Any) -> str:
    """The text of one streamed chunk ("" for role-only and final chunks)."""
    try:
        content = chunk.choices[0].delta.content
    except (AttributeError, IndexError, KeyError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _content(response: Any) -> str:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise LLMError("LLM returned no choices") from exc
    if not isinstance(content, str) or not content.strip():
        raise LLMError("LLM returned an empty answer")
    return content.strip()
