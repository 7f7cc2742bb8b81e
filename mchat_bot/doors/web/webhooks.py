"""POST /mattermost/outgoing and POST /mattermost/slash: two more doors into the same pipeline.

Each request becomes an :class:`IncomingMessage` (door ``outgoing_webhook`` or ``slash``), goes
through the same ``route`` and into the durable inbox, and waits up to ``webhooks.response_budget``
for the worker's answer (see :mod:`mchat_bot.doors.web.waiters`). Input is checked before anything is
stored: allowlist (403), size (413), content type (415), token in constant time (401), fields (400).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mchat_bot.doors.web.waiters import DOOR_OUTGOING, DOOR_SLASH, DoorContexts, Waiters, wait_answer
from mchat_bot.mattermost.rest import RestClient
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.replying import split_message
from mchat_bot.pipeline.router import COMMANDS, BotIdentity, Ignore, detect_lang, route

log = structlog.get_logger(__name__)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
POST_LOOKUP_TIMEOUT = 1.5  # seconds of the budget the outgoing door may spend reading the trigger post

# slash trigger -> the command word put in front of the text ("" = a question or any command)
SLASH_COMMANDS: dict[str, str] = {
    "remember": "remember",
    "search": "search",
    "forget": "forget",
    "memories": "memories",
    "ai": "",
}
ALWAYS_EPHEMERAL = frozenset({"search", "forget"})  # they show memories or candidates: only to the asker
PUBLIC_FLAGS = ("--public", "-p")


# --- the OpenAPI description of the bodies (parsing is done by hand for exact 4xx answers) --------


class OutgoingWebhookRequest(BaseModel):
    """What Mattermost POSTs for an outgoing webhook (JSON, or form-encoded with the same fields)."""

    token: str
    team_id: str = ""
    team_domain: str = ""
    channel_id: str
    channel_name: str = ""
    timestamp: int = Field(0, description="ms in JSON bodies, seconds in form bodies")
    user_id: str
    user_name: str = ""
    post_id: str
    text: str
    trigger_word: str = ""
    file_ids: str = Field("", description="comma-joined")


class SlashCommandRequest(BaseModel):
    """What Mattermost POSTs (form-encoded) for a custom slash command."""

    token: str = Field("", description="or the header `Authorization: Token <token>`")
    team_id: str = ""
    team_domain: str = ""
    channel_id: str
    channel_name: str = ""
    user_id: str
    user_name: str = ""
    command: str = Field(..., description="/remember, /search, /forget, /memories or /ai")
    text: str = ""
    trigger_id: str = ""
    response_url: str = ""


class WebhookResponse(BaseModel):
    """Outgoing-webhook answer; no ``text`` means no reply."""

    text: str | None = None
    username: str | None = None
    icon_url: str | None = None
    response_type: str | None = Field(None, description='"comment" replies in the thread')


class SlashResponse(BaseModel):
    response_type: str = Field("ephemeral", description='"ephemeral" or "in_channel"')
    text: str = ""
    username: str | None = None
    icon_url: str | None = None
    extra_responses: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    detail: str


def _body_doc(model: type[BaseModel], types: Sequence[str]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {t: {"schema": schema} for t in types}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in (
        (400, "missing or malformed fields"),
        (401, "wrong or missing token"),
        (403, "caller not in http.allow_from"),
        (413, "body larger than http.max_body_bytes"),
        (415, "unsupported Content-Type"),
    )
}


# --- helpers ------------------------------------------------------------------------------------


def token_ok(given: str, allowed: Sequence[str]) -> bool:
    """Constant-time comparison against every configured token (no early exit on a match)."""
    found = False
    g = given.encode()
    for token in allowed:
        if token and hmac.compare_digest(g, token.encode()):
            found = True
    return found and bool(given)


def parse_networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """http.allow_from as networks; a bad entry raises ValueError naming it."""
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"http.allow_from: not a CIDR: {cidr!r}") from None
    return nets


def strip_trigger(text: str) -> str:
    """The request without its trigger word; a command word (``remember ...``) is kept for the router."""
    words = text.strip().split(maxsplit=1)
    if not words:
        return ""
    first, rest = words[0], (words[1] if len(words) > 1 else "")
    if first.lstrip("/!").lower().rstrip(":,.") in COMMANDS:
        return text.strip()
    return rest


MAX_TIMESTAMP_MS = 32_503_680_000_000  # the year 3000: anything later is not a post time


def _ms(raw: str) -> int:
    """The post time in ms: seconds in form bodies, ms in JSON; now when absent or unreadable.

    A number no post can have (negative, past the year 3000, not finite) is a 400, not a crash
    further down (SQLite cannot even store it)."""
    try:
        value = int(float(raw))
    except (TypeError, ValueError):
        return int(time.time() * 1000)
    except OverflowError:  # inf
        raise HTTPException(400, "timestamp out of range") from None
    ms = value * 1000 if 0 < value < 100_000_000_000 else value  # seconds (form) -> ms
    if not 0 <= ms <= MAX_TIMESTAMP_MS:
        raise HTTPException(400, "timestamp out of range")
    return ms


class WebhookEndpoints:
    """The two endpoints, bound to the daemon's parts."""

    def __init__(
        self,
        *,
        bot: BotIdentity,
        inbox: Inbox,
        rest: RestClient | None,
        mappings: Mappings,
        contexts: DoorContexts,
        waiters: Waiters,
        outgoing_tokens: Sequence[str],
        slash_tokens: Sequence[str],
        budget: float = 4.5,
        max_body_bytes: int = 65536,
        allow_from: Sequence[str] = (),
        username: str = "",
        icon_url: str = "",
    ) -> None:
        self.bot = bot
        self.inbox = inbox
        self.rest = rest
        self.mappings = mappings
        self.contexts = contexts
        self.waiters = waiters
        self.outgoing_tokens = list(outgoing_tokens)
        self.slash_tokens = list(slash_tokens)
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.networks = parse_networks(allow_from)
        self.username = username
        self.icon_url = icon_url

    def router(self) -> APIRouter:
        r = APIRouter(tags=["mattermost"])
        r.add_api_route(
            "/mattermost/outgoing",
            self.outgoing,
            methods=["POST"],
            summary="Mattermost outgoing webhook",
            response_model=WebhookResponse,
            response_model_exclude_none=True,
            responses=_ERRORS,
            openapi_extra=_body_doc(OutgoingWebhookRequest, (JSON, FORM)),
        )
        r.add_api_route(
            "/mattermost/slash",
            self.slash,
            methods=["POST"],
            summary="Mattermost custom slash command",
            response_model=SlashResponse,
            response_model_exclude_none=True,
            responses=_ERRORS,
            openapi_extra=_body_doc(SlashCommandRequest, (FORM, JSON)),
        )
        return r

    # --- request checks -------------------------------------------------------------------------

    def _check_client(self, request: Request) -> None:
        if not self.networks:
            return
        host = request.client.host if request.client else ""
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise HTTPException(403, "caller address unknown; http.allow_from is set") from None
        if not any(addr in net for net in self.networks):
            log.warning("http.forbidden", client=host, path=request.url.path)
            raise HTTPException(403, "caller not allowed (http.allow_from)")

    async def _fields(self, request: Request, types: Sequence[str]) -> dict[str, list[str]]:
        """The body's fields (every value a list of strings), after size and type checks."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in types:
            raise HTTPException(415, f"Content-Type must be one of: {', '.join(types)}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise HTTPException(413, f"body larger than {self.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise HTTPException(413, f"body larger than {self.max_body_bytes} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "body is not UTF-8") from None
        if media == JSON:
            try:
                data = json.loads(text) if text.strip() else None
            except ValueError:
                raise HTTPException(400, "body is not valid JSON") from None
            if not isinstance(data, dict):
                raise HTTPException(400, "body must be a JSON object")
            out: dict[str, list[str]] = {}
            for k, v in data.items():
                items = v if isinstance(v, list) else [v]
                out[str(k)] = [
                    "" if i is None else (i if isinstance(i, str) else json.dumps(i)) for i in items
                ]
            return out
        return parse_qs(text, keep_blank_values=True)

    @staticmethod
    def _require(fields: dict[str, list[str]], names: Sequence[str]) -> dict[str, str]:
        missing = [n for n in names if not (fields.get(n) or [""])[0].strip()]
        if missing:
            raise HTTPException(400, f"missing fields: {', '.join(missing)}")
        return {k: v[0] if v else "" for k, v in fields.items()}

    # --- POST /mattermost/outgoing --------------------------------------------------------------

    async def outgoing(self, request: Request) -> JSONResponse:
        started = time.monotonic()
        self._check_client(request)
        fields = await self._fields(request, (JSON, FORM))
        token = (fields.get("token") or [""])[0]
        if not token_ok(token, self.outgoing_tokens):
            log.warning("http.bad_token", door=DOOR_OUTGOING)
            raise HTTPException(401, "invalid or missing token")
        f = self._require(fields, ("channel_id", "user_id", "post_id", "text"))
        if f["user_id"] == self.bot.user_id or f.get("user_name", "") == self.bot.username:
            return _nothing()  # the bot's own post: never answer it (no loops)
        root_id, skip = await self._look_up_post(f["post_id"])
        if skip:
            return _nothing()
        if not await self.mappings.is_active(f["channel_id"]):
            return _nothing()
        request_text = strip_trigger(f["text"])
        msg = IncomingMessage(
            post_id=f["post_id"],
            channel_id=f["channel_id"],
            channel_type="O",  # outgoing webhooks fire only in public channels
            channel_name=f.get("channel_name", ""),
            team_id=f.get("team_id", ""),
            user_id=f["user_id"],
            user_name=f.get("user_name", ""),
            message=f"@{self.bot.username} {request_text}".strip(),
            root_id=root_id,
            create_at=_ms(f.get("timestamp", "")),
            door=DOOR_OUTGOING,
        )
        if isinstance(route(msg, self.bot), Ignore):
            return _nothing()
        # A comment on a reply would be dropped by the server: then the answer goes over REST
        # into the root's thread, and the response says nothing.
        inline = not root_id
        waiters = self.waiters
        fut = waiters.register(msg.post_id) if inline else None
        if not await self.inbox.put(msg):
            waiters.discard(msg.post_id)
            return _nothing()  # already taken (e.g. through the WebSocket); that door answers
        log.info("accepted", post_id=msg.post_id, mchat_channel_id=msg.channel_id, door=msg.door)
        if fut is None:
            return _nothing()
        answer = await wait_answer(waiters, msg.post_id, fut, self.budget - (time.monotonic() - started))
        if answer is None:
            text = texts.working_on_it(detect_lang(request_text))
        elif not answer.strip():
            return _nothing()
        else:
            text = answer
        return JSONResponse(self._hook_reply(text))

    def _hook_reply(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "response_type": "comment"}
        if self.username:
            body["username"] = self.username
        if self.icon_url:
            body["icon_url"] = self.icon_url
        return body

    async def _look_up_post(self, post_id: str) -> tuple[str, bool]:
        """(root_id, skip): the payload has neither the thread nor the props, so read the post."""
        if self.rest is None:
            return "", False
        try:
            async with asyncio.timeout(POST_LOOKUP_TIMEOUT):
                post = await self.rest.get_post(post_id)
        except Exception as exc:  # a channel the bot cannot read: assume a root post
            log.info("http.post_lookup_failed", post_id=post_id, error=type(exc).__name__)
            return "", False
        props = post.get("props") or {}
        skip = (
            str(props.get("from_bot", "")).lower() == "true"
            or str(props.get("from_webhook", "")).lower() == "true"
            or str(post.get("type", "")).startswith("system_")
        )
        return str(post.get("root_id") or ""), skip

    # --- POST /mattermost/slash -----------------------------------------------------------------

    async def slash(self, request: Request) -> JSONResponse:
        started = time.monotonic()
        self._check_client(request)
        fields = await self._fields(request, (FORM, JSON))
        token = (fields.get("token") or [""])[0]
        auth = request.headers.get("authorization", "")
        if not token and auth[:6].lower() == "token ":
            token = auth[6:].strip()
        if not token_ok(token, self.slash_tokens):
            log.warning("http.bad_token", door=DOOR_SLASH)
            raise HTTPException(401, "invalid or missing token")
        f = self._require(fields, ("channel_id", "user_id", "command"))
        name = f["command"].strip().lstrip("/").lower()
        text = f.get("text", "").strip()
        lang = detect_lang(text)
        if name not in SLASH_COMMANDS:
            return _slash(texts.unknown_slash_command(lang, name))
        public = False
        first, _, rest = text.partition(" ")
        if first.lower() in PUBLIC_FLAGS:
            public, text = True, rest.strip()
        if name in ALWAYS_EPHEMERAL:
            public = False
        if not await self.mappings.is_active(f["channel_id"]):
            return _slash(texts.switched_off_here(lang))
        trigger = f.get("trigger_id", "")
        seed = trigger or uuid.uuid4().hex
        post_id = "slash-" + hashlib.sha256(seed.encode()).hexdigest()[:26]
        request_text = f"{SLASH_COMMANDS[name]} {text}".strip()
        channel_name = f.get("channel_name", "")
        msg = IncomingMessage(
            post_id=post_id,
            channel_id=f["channel_id"],
            channel_type="D" if "__" in channel_name else "O",
            channel_name=channel_name,
            team_id=f.get("team_id", ""),
            user_id=f["user_id"],
            user_name=f.get("user_name", ""),
            message=f"@{self.bot.username} {request_text}".strip(),
            create_at=int(time.time() * 1000),
            door=DOOR_SLASH,
        )
        response_type = "in_channel" if public else "ephemeral"
        await self.contexts.save(post_id, DOOR_SLASH, f.get("response_url", ""), response_type)
        waiters = self.waiters
        fut = waiters.register(post_id)
        if not await self.inbox.put(msg):
            waiters.discard(post_id)
            return _slash("")  # the same trigger_id twice: the first request answers
        log.info("accepted", post_id=post_id, mchat_channel_id=msg.channel_id, door=msg.door, command=name)
        answer = await wait_answer(waiters, post_id, fut, self.budget - (time.monotonic() - started))
        if answer is None:
            return _slash(texts.working_on_it(lang))
        return JSONResponse(self._slash_reply(answer, response_type))

    def _slash_reply(self, text: str, response_type: str) -> dict[str, Any]:
        parts = split_message(text) if text.strip() else [""]
        body: dict[str, Any] = {"response_type": response_type, "text": parts[0]}
        if self.username:
            body["username"] = self.username
        if self.icon_url:
            body["icon_url"] = self.icon_url
        if len(parts) > 1:
            body["extra_responses"] = [{"response_type": response_type, "text": p} for p in parts[1:]]
        return body


def _nothing() -> JSONResponse:
    """An outgoing-webhook answer without text: the server posts nothing."""
    return JSONResponse({})


def _slash(text: str) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "text": text})
