"""structlog JSON-lines logging with a redaction processor.

Redaction runs last before rendering, on every value of every event, so a secret that slips
into an exception message or a URL is still masked: the known secret values from the settings,
`Bearer <token>` forms, `token=`/`api_key=` style assignments, and everything the memory filter
(:mod:`mchat_bot.redaction`) finds: phone numbers, e-mail addresses, card numbers, 주민등록번호,
passwords and token shapes, as ``[REDACTED:<kind>]``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from mchat_bot.redaction import lowered, redact

REDACTED = "[REDACTED]"
_PATTERNS = [
    re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)\b(authorization)[\"']?\s*[:=]\s*[\"']?[^\"',}\s]+(\s+[A-Za-z0-9._\-]{8,})?"),
    re.compile(r"(?i)\b(access_token|api_key|apikey|password|secret|token)=([^&\s\"']+)"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
]
# A value none of the patterns above can match without one of these words is left to the memory filter.
_PATTERN_WORDS = ("bearer", "token", "authorization", "api_key", "apikey", "password", "secret", "sk-")
# Fields the processors add themselves (never a caller's data): nothing to mask in them.
_OWN_FIELDS = frozenset({"timestamp", "level", "service"})


class Redactor:
    """Masks secrets anywhere in a log event; the secret list can grow once settings are loaded."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            if s and len(s) >= 4 and s not in self._secrets:
                self._secrets.append(s)
        self._secrets.sort(key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        low = lowered(value)
        if any(word in low for word in _PATTERN_WORDS):
            for pattern in _PATTERNS:
                value = pattern.sub(lambda m: f"{m.group(1)} {REDACTED}" if m.lastindex else REDACTED, value)
        # personal data too (phone, e-mail, card, 주민등록번호, passwords, token shapes)
        return redact(value).text

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: REDACTED if _secret_key(k) else self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            if key not in _OWN_FIELDS:
                event[key] = REDACTED if _secret_key(key) else self.value(event[key])
        return event


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in {"token", "api_key", "authorization", "password", "secret"}


REDACTOR = Redactor()


def configure_logging(level: str = "info", stream: TextIO | None = None, secrets: Iterable[str] = ()) -> None:
    """JSON lines to stderr (journald keeps them); safe to call again after settings are loaded."""
    REDACTOR.add(secrets)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    out = stream or sys.stderr
    # Lines from other libraries (uvicorn, litellm, asyncio, ...) become JSON lines through the
    # same redaction, so nothing reaches the log unmasked.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _add_service,
                _add_logger_name,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                REDACTOR,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )
    )
    logging.basicConfig(handlers=[handler], level=numeric, force=True)
    for noisy in ("httpx", "httpcore", "websockets", "LiteLLM", "litellm", "aiohttp.access", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_service,
            structlog.processors.format_exc_info,
            REDACTOR,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def _add_logger_name(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        event.setdefault("logger", record.name)
    return event


def _add_service(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("service", "mchat-bot")
    return event


class QuietCounter:
    """Counts a repeated event and lets one log line through per ``every`` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.count = 0
        self._next = 0.0

    def due(self) -> int:
        """0 while quiet; else how many events the line stands for (then the count restarts)."""
        self.count += 1
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + self.every
        n, self.count = self.count, 0
        return n


def quiet_loop_errors(loop: asyncio.AbstractEventLoop, *, every: float = 10.0) -> None:
    """The loop's own error reports (e.g. "socket.accept() out of system resource", repeated for
    every refused accept) become one log line per kind per ``every`` seconds, with a count."""
    counters: dict[str, QuietCounter] = {}
    logger = structlog.get_logger("asyncio")

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "unhandled error in the event loop")
        counter = counters.setdefault(message[:120], QuietCounter(every))
        n = counter.due()
        if n:
            exc = context.get("exception")
            logger.error(
                "loop.error", message=message[:300], count=n, error=type(exc).__name__ if exc else None
            )

    loop.set_exception_handler(handler)
