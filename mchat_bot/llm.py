"""The chat-completion client: a direct OpenAI-compatible transport or litellm, behind a timeout and
our own small retry policy.

Models named ``openai/<name>`` (OpenAI itself, and the internal OpenAI-compatible endpoints reached
with ``api_base``) go straight over one pooled ``aiohttp.ClientSession``: litellm costs ~5 ms of CPU,
a ~160 MB import and 2-3 s of start-up per daemon for the same request (and httpx ~0.4 ms of CPU per
request against aiohttp's ~0.05 ms). Every other provider goes
through litellm, imported lazily in a thread (``warm_up`` starts that at boot) and only then;
``client="litellm"`` sends ``openai/`` models there too. Retries are ours, not litellm's or the
OpenAI SDK's, so one policy holds on both paths: 429, 5xx and connection errors are retried
(``max_tries`` in all, waits growing by a factor 2); anything else, and a try that runs past
``timeout``, ends the call with :class:`LLMError`.

Several deployments (``llm.model`` and ``llm.api_base`` may each be a list; :mod:`mchat_bot.llm_pool`)
share the load: the direct path picks them in turn and fails over at once to another when a try fails
retryably (that one cools down); the litellm path gives them to litellm's Router, with its retries
off (ours apply) and its cooldowns on. A timeout still ends the call, and cools that deployment.

Every call's messages pass :func:`mask_messages` first, the one seam between the bot and the model: with
``mask_sensitive`` (the default) the sensitive-data filter masks them, since the model may be an
outside provider; and a prompt holding a placeholder tells the model what it means.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import ModuleType
from typing import Any

import aiohttp
import orjson
import structlog

from mchat_bot.llm_pool import Deployment, DeploymentPool, deployments_of
from mchat_bot.net.idle import IdleTimeout
from mchat_bot.net.retry import RetryPolicy, is_transient
from mchat_bot.observe import metrics
from mchat_bot.redaction import PLACEHOLDER, redact

log = structlog.get_logger(__name__)

CLIENTS = ("auto", "litellm")
OPENAI_BASE = "https://api.openai.com/v1"
_DIRECT_PREFIX = "openai/"
_DRAIN_LIMIT = 65_536  # characters read after [DONE] to keep the connection; beyond, close it
_POOL_SIZE = 32  # connections to the model endpoint at most (kept alive 30 s)
_MAX_ERROR_BODY = 64 * 1024  # an error answer is read (to free the connection), never kept whole
_MASK_INLINE_CHARS = 4000  # longer prompts are masked in a thread (a few ms per 16k characters)
_ROUTER_GROUP = "mchat"  # the one model group litellm's Router balances

PLACEHOLDER_NOTE = (
    "Some values are hidden from you and replaced by placeholders such as [REDACTED:phone] (kinds: "
    "rrn = resident registration number, phone, email, card, password, api_key). Never guess, invent "
    "or reconstruct a hidden value; when the answer needs one, say that it is hidden, and keep the "
    "placeholder as it is if you quote it."
)

_litellm: ModuleType | None = None
_import_lock = threading.Lock()

# litellm's names for HTTP statuses, so the direct path gives the same LLMError texts and log lines
_STATUS_NAMES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "Timeout",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class LLMError(Exception):
    """The model gave no usable answer (after retries, on timeout, or on a non-retryable error)."""


class _TransportError(Exception):
    """A failed try on the direct path, named like litellm's exception for the same failure."""

    def __init__(self, name: str, status_code: int | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.status_code = status_code


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


def _name_of(exc: BaseException) -> str:
    return exc.name if isinstance(exc, _TransportError) else type(exc).__name__


_RETRYABLE_NAMES = frozenset({"APIConnectionError", "ServiceUnavailableError", "InternalServerError"})


def _retryable(exc: BaseException) -> bool:
    """The shared predicate, plus litellm's connection errors that carry no status."""
    if _status_of(exc) is None and _name_of(exc) in _RETRYABLE_NAMES:
        return True
    return is_transient(exc)


def _describe(exc: BaseException) -> str:
    status = _status_of(exc)
    return f"{_name_of(exc)} (status {status})" if status else _name_of(exc)


def mask_messages(messages: list[dict[str, str]], mask: bool = True) -> tuple[list[dict[str, str]], int]:
    """The messages as they may leave: each text masked (when ``mask``), and the placeholder note in
    the system prompt whenever a placeholder is in them (stored memories hold some even unmasked).

    Returns the messages and the number of values masked; the input is not changed.
    """
    out: list[dict[str, str]] = []
    found = 0
    for message in messages:
        content = message.get("content")
        if mask and isinstance(content, str):
            result = redact(content)
            if result.found:
                found += len(result.findings)
                message = {**message, "content": result.text}
        out.append(message)
    if any(isinstance(m.get("content"), str) and PLACEHOLDER.search(m["content"]) for m in out):
        if out and out[0].get("role") == "system":
            if PLACEHOLDER_NOTE not in out[0]["content"]:
                out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{PLACEHOLDER_NOTE}"}
        else:
            out.insert(0, {"role": "system", "content": PLACEHOLDER_NOTE})
    return out, found


def _status_error(status: int) -> _TransportError:
    name = _STATUS_NAMES.get(status, "APIError")
    return _TransportError(name, status)


class LLM:
    """One configured model; ``await llm.complete(messages)`` returns the answer text."""

    def __init__(
        self,
        model: str | Sequence[str],
        api_base: str | Sequence[str] = "",
        api_key: str = "",
        timeout: float = 60.0,
        max_tries: int = 3,
        *,
        retry_base: float = 1.0,
        temperature: float | None = 0.2,
        max_tokens: int | None = 1024,
        client: str = "auto",
        mask_sensitive: bool = True,
        cooldown: float = 30.0,
    ) -> None:
        deployments = deployments_of(model, api_base)
        if not deployments:
            raise ValueError("LLM model name is empty")
        if client not in CLIENTS:
            raise ValueError(f"LLM client must be one of {', '.join(CLIENTS)}, got {client!r}")
        self.pool = DeploymentPool(deployments, cooldown)
        self.model = deployments[0].model  # the name in logs and metrics
        self.api_base = deployments[0].api_base
        self._api_key = api_key  # never logged, never in repr
        self.timeout = timeout
        # one try more per extra deployment: each gets its chance before the policy gives up
        self.max_tries = max(1, max_tries) + len(deployments) - 1
        self.retry_base = retry_base
        self.policy = RetryPolicy(
            first_delay=retry_base, max_delay=8 * retry_base, tries=self.max_tries, retryable=_retryable
        )
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.direct = client == "auto" and all(d.model.startswith(_DIRECT_PREFIX) for d in deployments)
        self.mask_sensitive = mask_sensitive
        self._warm: asyncio.Task[ModuleType] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._router: Any = None

    def __repr__(self) -> str:
        names = ", ".join(map(str, self.pool.deployments))
        return f"LLM(model={self.model!r}, api_base={self.api_base!r}, deployments=[{names}])"

    async def warm_up(self) -> None:
        """Import litellm in a worker thread (or open the direct client) before the first question."""
        if self.direct:
            self._client()
        else:
            await self._module()

    async def aclose(self) -> None:
        """Close the direct path's connection pool (litellm keeps its own clients)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def _module(self) -> ModuleType:
        if _litellm is not None:
            return _litellm
        if self._warm is None:
            self._warm = asyncio.create_task(asyncio.to_thread(_import_litellm))
        return await asyncio.shield(self._warm)

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The acompletion arguments shared by the plain and the streaming call (one deployment;
        several go through the Router, which holds their model, base and key)."""
        kwargs: dict[str, Any] = {
            "model": self.model if self._router is None else _ROUTER_GROUP,
            "messages": messages,
            "timeout": self.timeout,
            "num_retries": 0,
            "max_retries": 0,  # the OpenAI SDK would retry on its own otherwise
        }
        if self._router is None:
            if self.api_base:
                kwargs["api_base"] = self.api_base
            if self._api_key:
                kwargs["api_key"] = self._api_key
        return kwargs | self._sampling()

    async def _litellm(self) -> Any:
        """What the litellm path calls ``acompletion`` on: litellm itself, or a Router over the
        deployments (made once, after the import)."""
        litellm = await self._module()
        if len(self.pool) == 1:
            return litellm
        if self._router is None:
            model_list = []
            for dep in self.pool.deployments:
                params: dict[str, Any] = {"model": dep.model}
                if dep.api_base:
                    params["api_base"] = dep.api_base
                if self._api_key:
                    params["api_key"] = self._api_key
                model_list.append({"model_name": _ROUTER_GROUP, "litellm_params": params})
            self._router = litellm.Router(
                model_list=model_list,
                num_retries=0,  # ours: one policy for every retry
                allowed_fails=0,  # a failed deployment cools down at once
                cooldown_time=self.pool.cooldown,
                routing_strategy="simple-shuffle",
            )
            log.info(
                "llm.transport", model=self.model, transport="litellm-router", deployments=len(self.pool)
            )
        return self._router

    def _sampling(self) -> dict[str, Any]:
        """temperature and max_tokens when set: the same on both paths."""
        out: dict[str, Any] = {}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        return out

    # --- the direct OpenAI-compatible path --------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        """One pooled session per LLM, made on first use (inside the running loop, as aiohttp needs)."""
        if self._http is None:
            # like litellm/the OpenAI SDK: the environment fills in what the config leaves empty
            key = self._api_key or os.environ.get("OPENAI_API_KEY", "")
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._http = aiohttp.ClientSession(
                headers=headers,
                # total: the callers' asyncio.timeout bounds each try and each streamed chunk
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=min(10.0, self.timeout), sock_read=self.timeout
                ),
                connector=aiohttp.TCPConnector(limit=_POOL_SIZE, keepalive_timeout=30.0),
            )
            log.info("llm.transport", model=self.model, transport="direct")
        return self._http

    @staticmethod
    def _url(dep: Deployment) -> str:
        # like litellm/the OpenAI SDK: the environment fills in what the config leaves empty
        env = os.environ.get
        base = dep.api_base or env("OPENAI_BASE_URL") or env("OPENAI_API_BASE") or OPENAI_BASE
        return base.rstrip("/") + "/chat/completions"

    def _body(self, messages: list[dict[str, str]], dep: Deployment, stream: bool = False) -> bytes:
        """The JSON body: the fields ``_request`` gives litellm, with the ``openai/`` prefix dropped."""
        body: dict[str, Any] = {"model": dep.model[len(_DIRECT_PREFIX) :], "messages": messages}
        body |= self._sampling()
        if stream:
            body["stream"] = True
        return orjson.dumps(body)  # UTF-8, non-ASCII as is (what json.dumps(ensure_ascii=False) gave)

    async def _send(self, body: bytes, dep: Deployment) -> aiohttp.ClientResponse:
        """POST /chat/completions, body unread; a non-2xx answer or a broken connection raises a
        named error."""
        http = self._client()
        try:
            response = await http.post(self._url(dep), data=body, allow_redirects=False)
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise _TransportError("APIConnectionError") from exc
        if response.status >= 300:
            try:
                await response.content.read(_MAX_ERROR_BODY)  # the start of it, for nothing but reuse
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            finally:
                response.release()
            raise _status_error(response.status)
        return response

    async def _post(self, messages: list[dict[str, str]], dep: Deployment) -> dict[str, Any]:
        response = await self._send(self._body(messages, dep), dep)
        try:
            raw = await response.read()
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise _TransportError("APIConnectionError") from exc
        finally:
            response.release()
        try:
            data = orjson.loads(raw)
        except ValueError as exc:
            raise _TransportError("APIError") from exc
        if not isinstance(data, dict):
            raise _TransportError("APIError")
        return data

    async def _open_stream(self, messages: list[dict[str, str]], dep: Deployment) -> _SSE:
        return _SSE(await self._send(self._body(messages, dep, stream=True), dep))

    def _failed(self, dep: Deployment | None, exc: BaseException, tried: list[Deployment]) -> None:
        """A try on ``dep`` (the direct path's pick) failed: cool it down if the failure is its own."""
        if dep is not None and (_retryable(exc) or isinstance(exc, TimeoutError)):
            self.pool.failed(dep)
            tried.append(dep)
            if len(self.pool) > 1:
                log.info("llm.failover", deployment=str(dep), error=_describe(exc))

    def _wait(self, exc: BaseException, delays: Any, tried: list[Deployment], attempt: int) -> float:
        """No wait when another deployment can take the retry at once, else the policy's."""
        if self.direct and self.pool.has_untried(tried):
            return 0.0
        if not self.direct and len(self.pool) > 1 and attempt < len(self.pool):
            return 0.0  # the Router has put the failed one aside
        return self.policy.wait_after(exc, delays)

    # --- the calls ---------------------------------------------------------------------------------

    async def _outgoing(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """:func:`mask_messages` for this model (long prompts off the event loop)."""
        size = sum(len(m.get("content") or "") for m in messages)
        if self.mask_sensitive and size > _MASK_INLINE_CHARS:
            out, found = await asyncio.to_thread(mask_messages, messages, True)
        else:
            out, found = mask_messages(messages, self.mask_sensitive)
        if found:
            log.debug("llm.masked", model=self.model, values=found)
        return out

    async def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to ``messages`` (OpenAI chat format); raises LLMError."""
        messages = await self._outgoing(messages)
        if self.direct:
            litellm: Any = None
            kwargs: dict[str, Any] = {}
        else:
            litellm = await self._litellm()
            kwargs = self._request(messages)

        last = "no attempt"
        delays = self.policy.delays()
        tried: list[Deployment] = []
        for attempt in range(1, self.max_tries + 1):
            started = time.monotonic()
            dep = self.pool.pick(tried) if self.direct else None
            try:
                async with asyncio.timeout(self.timeout):
                    if dep is not None:
                        response: Any = await self._post(messages, dep)
                    else:
                        response = await litellm.acompletion(**kwargs)
            except TimeoutError as exc:
                self._failed(dep, exc, tried)
                metrics.observe_llm_error(self.model, "timeout", final=True)
                log.warning("llm.timeout", model=self.model, attempt=attempt, timeout=self.timeout)
                raise LLMError(f"LLM timed out after {self.timeout:g}s") from exc
            except Exception as exc:
                last = _describe(exc)
                self._failed(dep, exc, tried)
                if "Timeout" in _name_of(exc):
                    metrics.observe_llm_error(self.model, "timeout", final=True)
                    log.warning("llm.timeout", model=self.model, attempt=attempt, timeout=self.timeout)
                    raise LLMError(f"LLM timed out after {self.timeout:g}s") from exc
                final = self.policy.gives_up(exc, attempt)
                metrics.observe_llm_error(self.model, "retryable" if _retryable(exc) else "fatal", final)
                if final:
                    log.warning("llm.failed", model=self.model, attempt=attempt, error=last)
                    raise LLMError(f"LLM call failed: {last}") from exc
                wait = self._wait(exc, delays, tried, attempt)
                log.info("llm.retry", model=self.model, attempt=attempt, error=last, wait=round(wait, 3))
                await asyncio.sleep(wait)
                continue
            if dep is not None:
                self.pool.succeeded(dep)
            seconds = time.monotonic() - started
            try:
                text = _content(response)
            except LLMError:
                metrics.observe_llm_error(self.model, "empty", final=True)
                raise
            metrics.observe_llm(self.model, seconds, response)
            log.debug(  # the "handled" line and the LLM metrics carry it at info
                "llm.completed",
                model=self.model,
                attempt=attempt,
                seconds=round(seconds, 3),
                chars=len(text),
            )
            return text
        raise LLMError(f"LLM call failed: {last}")  # unreachable: the loop returns or raises

    # --- streaming ---------------------------------------------------------------------------------

    async def complete_streaming(self, messages: list[dict[str, str]], on_text: Callable[[str], None]) -> str:
        """Like :meth:`complete` with ``stream=True``: ``on_text(text so far)`` after every chunk.

        Tries are retried only before the first chunk arrives: after it, the asker already sees part
        of this answer, so an error ends the call (LLMError). No chunk for ``timeout`` s is a timeout.
        """
        messages = await self._outgoing(messages)
        if self.direct:
            litellm: Any = None
            kwargs: dict[str, Any] = {}
        else:
            litellm = await self._litellm()
            kwargs = self._request(messages) | {"stream": True}
        last = "no attempt"
        delays = self.policy.delays()
        tried: list[Deployment] = []
        for attempt in range(1, self.max_tries + 1):
            started = time.monotonic()
            dep = self.pool.pick(tried) if self.direct else None
            so_far = ""
            usage: Any = None  # the provider's token counts, when a chunk carries them (metrics)
            stream: Any = None
            try:
                async with asyncio.timeout(self.timeout):
                    if dep is not None:
                        stream = await self._open_stream(messages, dep)
                    else:
                        stream = await litellm.acompletion(**kwargs)
                async with IdleTimeout(self.timeout) as idle:  # no chunk for `timeout` s: a timeout
                    async for chunk in stream:
                        idle.touch()
                        delta = _delta(chunk)
                        usage = _field(chunk, "usage") or usage
                        if delta:
                            so_far += delta
                            on_text(so_far)
            except TimeoutError as exc:
                self._failed(dep, exc, tried)
                metrics.observe_llm_error(self.model, "timeout", final=True)
                log.warning(
                    "llm.timeout", model=self.model, attempt=attempt, timeout=self.timeout, stream=True
                )
                raise LLMError(f"LLM timed out after {self.timeout:g}s") from exc
            except Exception as exc:
                last = _describe(exc)
                self._failed(dep, exc, tried)
                if so_far or self.policy.gives_up(exc, attempt) or "Timeout" in last:
                    metrics.observe_llm_error(self.model, "retryable" if _retryable(exc) else "fatal", True)
                    log.warning("llm.failed", model=self.model, attempt=attempt, error=last, stream=True)
                    raise LLMError(f"LLM call failed: {last}") from exc
                metrics.observe_llm_error(self.model, "retryable", final=False)
                wait = self._wait(exc, delays, tried, attempt)
                log.info(
                    "llm.retry",
                    model=self.model,
                    attempt=attempt,
                    error=last,
                    wait=round(wait, 3),
                    stream=True,
                )
                await asyncio.sleep(wait)
                continue
            finally:
                if isinstance(stream, _SSE):
                    await stream.aclose()
            if dep is not None:
                self.pool.succeeded(dep)
            text = so_far.strip()
            if not text:
                metrics.observe_llm_error(self.model, "empty", final=True)
                raise LLMError("LLM returned an empty answer")
            metrics.observe_llm(self.model, time.monotonic() - started, {"usage": usage})
            log.debug(
                "llm.completed",
                model=self.model,
                attempt=attempt,
                seconds=round(time.monotonic() - started, 3),
                chars=len(text),
                stream=True,
            )
            return text
        raise LLMError(f"LLM call failed: {last}")


class _SSE:
    """The chunks of a streamed answer: the JSON of each ``data:`` line up to ``[DONE]``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._chunks = self._read()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks

    async def _read(self) -> AsyncIterator[dict[str, Any]]:
        done = False
        after_done = 0
        try:
            async for line in self._response.content:  # one line at a time, as bytes
                if done:
                    # Read on to the end of the body so the connection goes back to the pool: a
                    # response closed half-read costs a new TCP connection for every answer.
                    after_done += len(line)
                    if after_done > _DRAIN_LIMIT:
                        return
                    continue
                if not line.startswith(b"data:"):
                    continue  # blank separators, ": keep-alive" comments, event:/id: fields
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                try:
                    chunk = orjson.loads(data)  # the UTF-8 bytes as they came: no decode, no copy
                except orjson.JSONDecodeError as exc:
                    raise _TransportError("APIError") from exc
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise _TransportError("APIError")  # an error reported inside the stream
                if isinstance(chunk, dict):
                    yield chunk
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise _TransportError("APIConnectionError") from exc

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]
        self._response.release()  # back to the pool if read to the end, else the connection closes


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _first_choice(obj: Any) -> Any:
    choices = _field(obj, "choices")
    return choices[0] if choices else None


def _delta(chunk: Any) -> str:
    """The text of one streamed chunk ("" for role-only and final chunks)."""
    try:
        content = _field(_field(_first_choice(chunk), "delta"), "content")
    except (AttributeError, IndexError, KeyError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _content(response: Any) -> str:
    try:
        choice = _first_choice(response)
        if choice is None:
            raise LLMError("LLM returned no choices")
        content = _field(_field(choice, "message"), "content")
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise LLMError("LLM returned no choices") from exc
    if not isinstance(content, str) or not content.strip():
        raise LLMError("LLM returned an empty answer")
    return content.strip()
