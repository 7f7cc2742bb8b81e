"""POST /mattermost/outgoing and POST /mattermost/slash: two more doors into the same pipeline.

Each request becomes an :class:`IncomingMessage` (door ``outgoing_webhook`` or ``slash``), goes
through the same ``route`` and into the durable inbox, and waits up to ``webhooks.response_budget``
for the worker's answer (see :mod:`mchat_bot.pipeline.waiters`). Input is checked before anything is
stored: size (413), content type (415), token in constant time (401), fields (400); the caller's
address is checked by the allowlist middleware of :mod:`mchat_bot.doors.web.guard` before that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mchat_bot.doors.web.claims import ClaimChecker, ClaimRefused, VerifiedClaims
from mchat_bot.net.http import is_server_hook_url
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.audit import Audit, AuditRow
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.mappings import Mappings
from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.pipeline.replying import split_message
from mchat_bot.pipeline.router import COMMANDS, BotIdentity, Ignore, detect_lang, route
from mchat_bot.pipeline.waiters import DOOR_OUTGOING, DOOR_SLASH, DoorContexts, Waiters, wait_answer
from mchat_bot.storage import Storage

log = structlog.get_logger(__name__)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MAX_JSON_DEPTH = 16  # Mattermost's bodies are flat objects; deeper nesting is an attack or a bug
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")
SLASH_TEAM_KEY = "slash_token_team:"  # + sha256(token): the team a slash token was registered in

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
    post_id: str = Field(
        "", description="Mattermost always sends it; without it the answer goes to the channel"
    )
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


async def read_fields(request: Request, types: Sequence[str], max_body_bytes: int) -> dict[str, list[str]]:
    """The body's fields (every value a list of strings), after size and type checks."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in types:
        raise HTTPException(415, f"Content-Type must be one of: {', '.join(types)}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise HTTPException(413, f"body larger than {max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise HTTPException(413, f"body larger than {max_body_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "body is not UTF-8") from None
    if media == JSON:
        if nesting(text) > MAX_JSON_DEPTH:  # json.loads would recurse into a RecursionError
            raise HTTPException(400, f"body nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            raise HTTPException(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "body must be a JSON object")
        out: dict[str, list[str]] = {}
        for k, v in data.items():
            items = v if isinstance(v, list) else [v]
            out[str(k)] = ["" if i is None else (i if isinstance(i, str) else json.dumps(i)) for i in items]
        return out
    return parse_qs(text, keep_blank_values=True)


def token_scopes(entries: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``webhooks.outgoing_tokens`` entries: ``TOKEN``, or ``TOKEN:TEAM_ID`` / ``TOKEN:TEAM_ID:CHANNEL_ID``
    to accept the token only for that team (and channel), as the hook was made in Mattermost."""
    out: dict[str, tuple[str, str]] = {}
    for entry in entries:
        token, _, scope = entry.strip().partition(":")
        team, _, channel = scope.partition(":")
        if token:
            out[token] = (team.strip(), channel.strip())
    return out


def token_ok(given: str, allowed: Sequence[str]) -> bool:
    """Constant-time comparison against every configured token (no early exit on a match)."""
    found = False
    g = given.encode()
    for token in allowed:
        if token and hmac.compare_digest(g, token.encode()):
            found = True
    return found and bool(given)


def nesting(text: str) -> int:
    """How deep the brackets of a JSON text nest (strings skipped), without parsing it."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


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
        claims: ClaimChecker,
        storage: Storage,
        server_url: str,
        mappings: Mappings,
        contexts: DoorContexts,
        waiters: Waiters,
        outgoing_tokens: Sequence[str],
        slash_tokens: Sequence[str],
        budget: float = 4.5,
        max_body_bytes: int = 65536,
        username: str = "",
        icon_url: str = "",
    ) -> None:
        self.bot = bot
        self.inbox = inbox
        self.claims = claims
        self.storage = storage
        self.server_url = server_url
        self.audit = Audit(storage)
        self.mappings = mappings
        self.contexts = contexts
        self.waiters = waiters
        self.outgoing_scopes = token_scopes(outgoing_tokens)
        self.outgoing_tokens = list(self.outgoing_scopes)
        self.slash_tokens = list(slash_tokens)
        self.budget = budget
        self.max_body_bytes = max_body_bytes
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
        r.add_api_route(  # the seed's path for the same door
            "/mchat/webhook/outgoing", self.outgoing, methods=["POST"], include_in_schema=False
        )
        r.add_api_route("/mchat/slash", self.slash, methods=["POST"], include_in_schema=False)
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

    async def _fields(self, request: Request, types: Sequence[str]) -> dict[str, list[str]]:
        return await read_fields(request, types, self.max_body_bytes)

    @staticmethod
    def _require(fields: dict[str, list[str]], names: Sequence[str]) -> dict[str, str]:
        missing = [n for n in names if not (fields.get(n) or [""])[0].strip()]
        if missing:
            raise HTTPException(400, f"missing fields: {', '.join(missing)}")
        return {k: v[0] if v else "" for k, v in fields.items()}

    # --- POST /mattermost/outgoing --------------------------------------------------------------

    async def outgoing(self, request: Request) -> JSONResponse:
        started = time.monotonic()
        fields = await self._fields(request, (JSON, FORM))
        token = (fields.get("token") or [""])[0]
        if not token_ok(token, self.outgoing_tokens):
            log.warning("http.bad_token", door=DOOR_OUTGOING)
            raise HTTPException(401, "invalid or missing token")
        # Mattermost always names the post; a caller that leaves it out (the seed's own tests do) is
        # served once its channel and user check out, answered in the channel instead of a thread
        f = self._require(fields, ("channel_id", "user_id", "text"))
        claimed_at = _ms(f.get("timestamp", ""))  # a malformed body is a 400 before any lookup
        if f["user_id"] == self.bot.user_id or f.get("user_name", "") == self.bot.username:
            return _nothing()  # the bot's own post: never answer it (no loops)
        claims = await self._verified(
            DOOR_OUTGOING,
            f,
            self.claims.outgoing(
                channel_id=f["channel_id"],
                user_id=f["user_id"],
                post_id=f.get("post_id", ""),
                team_id=f.get("team_id", ""),
            ),
        )
        team, channel = self.outgoing_scopes.get(token, ("", ""))
        if (team and team != claims.channel.team_id) or (channel and channel != claims.channel.id):
            await self._audit_refusal(DOOR_OUTGOING, f, "token_scope_mismatch")
            raise HTTPException(403, "this webhook token belongs to another team or channel")
        post = claims.post
        if post is not None and _is_automatic(post):
            return _nothing()
        root_id = str(post.get("root_id") or "") if post is not None else ""
        if not await self.mappings.is_active(claims.channel.id):
            return _nothing()
        if post is not None:
            # the post's own words, not the body's: a forged text is not answered as the post's author
            request_text = strip_trigger(str(post.get("message", f["text"])))
            post_id = str(post["id"])
        else:
            request_text = strip_trigger(f["text"])
            post_id = _hook_post_id(token, f, claimed_at)
        msg = IncomingMessage(
            post_id=post_id,
            channel_id=claims.channel.id,
            channel_type=claims.channel.type,
            channel_name=claims.channel.name,
            team_id=claims.channel.team_id,
            user_id=claims.user_id,
            user_name=claims.user_name,
            message=f"@{self.bot.username} {request_text}".strip(),
            root_id=root_id,
            create_at=int(post.get("create_at") or claimed_at) if post is not None else claimed_at,
            door=DOOR_OUTGOING,
            has_post=post is not None,
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
        return JSONResponse(self._hook_reply(text, in_thread=msg.has_post))

    def _hook_reply(self, text: str, *, in_thread: bool = True) -> dict[str, Any]:
        """The webhook's answer; ``comment`` replies in the trigger post's thread (there must be one)."""
        body: dict[str, Any] = {"text": text}
        if in_thread:
            body["response_type"] = "comment"
        if self.username:
            body["username"] = self.username
        if self.icon_url:
            body["icon_url"] = self.icon_url
        return body

    async def _verified(
        self, door: str, f: dict[str, str], check: Awaitable[VerifiedClaims]
    ) -> VerifiedClaims:
        """The claims as the server confirms them; a refusal is logged, audited and a 4xx (503 when
        the server could not be asked), and nothing is read or written."""
        try:
            return await check
        except ClaimRefused as exc:
            log.warning(
                "http.claim_refused",
                door=door,
                reason=exc.reason,
                mchat_channel_id=f.get("channel_id", ""),
                mchat_user_id=f.get("user_id", ""),
            )
            await self._audit_refusal(door, f, exc.reason)
            raise HTTPException(exc.status, exc.detail) from None

    async def _audit_refusal(self, door: str, f: dict[str, str], reason: str) -> None:
        """A refused or forged request is kept in the audit log with what it claimed (ids only)."""
        await self.audit.record(
            AuditRow(
                at=time.time(),
                action=f"{door}.refused",
                outcome="refused",
                user_id=f.get("user_id", "")[:64],
                channel_id=f.get("channel_id", "")[:64],
                team_id=f.get("team_id", "")[:64],
                post_id=f.get("post_id", "")[:64],
                door=door,
                detail=reason,
            )
        )

    def _own_hook_url(self, url: str) -> bool:
        """Only the Mattermost server's own ``/hooks/...`` URLs are ever called (no SSRF)."""
        return is_server_hook_url(url, self.server_url)

    # --- POST /mattermost/slash -----------------------------------------------------------------

    async def slash(self, request: Request) -> JSONResponse:
        started = time.monotonic()
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
        response_url = f.get("response_url", "")
        if response_url and not self._own_hook_url(response_url):
            log.warning(
                "http.response_url_refused", door=DOOR_SLASH, host=urlsplit(response_url).netloc[:100]
            )
            await self._audit_refusal(DOOR_SLASH, f, "foreign_response_url")
            raise HTTPException(400, "response_url must be a /hooks/ URL of the Mattermost server")
        try:
            claims = await self._verified(
                DOOR_SLASH,
                f,
                self.claims.slash(
                    channel_id=f["channel_id"], user_id=f["user_id"], team_id=f.get("team_id", "")
                ),
            )
        except HTTPException as exc:
            if exc.status_code == 403 and exc.detail.startswith("the bot cannot read"):
                # a real command in a channel the bot is not in: tell the user what to do
                return _slash(texts.add_the_bot(lang))
            raise
        bound = await self.storage.get_kv(SLASH_TEAM_KEY + hashlib.sha256(token.encode()).hexdigest())
        if bound and bound != claims.channel.team_id:
            await self._audit_refusal(DOOR_SLASH, f, "token_team_mismatch")
            raise HTTPException(403, "this slash command token belongs to another team")
        if not await self.mappings.is_active(claims.channel.id):
            return _slash(texts.switched_off_here(lang))
        trigger = f.get("trigger_id", "")
        seed = trigger or uuid.uuid4().hex
        post_id = "slash-" + hashlib.sha256(seed.encode()).hexdigest()[:26]
        if await self.inbox.state(post_id) is not None:
            return _slash("")  # the same trigger_id twice: the first request answers, nothing changes
        request_text = f"{SLASH_COMMANDS[name]} {text}".strip()
        msg = IncomingMessage(
            post_id=post_id,
            channel_id=claims.channel.id,
            channel_type=claims.channel.type,
            channel_name=claims.channel.name,
            team_id=claims.channel.team_id,
            user_id=claims.user_id,
            user_name=claims.user_name,
            message=f"@{self.bot.username} {request_text}".strip(),
            create_at=int(time.time() * 1000),
            door=DOOR_SLASH,
            has_post=False,
            private_reply=not public,  # an ephemeral response: the asker is its only reader
        )
        response_type = "in_channel" if public else "ephemeral"
        await self.contexts.save(post_id, DOOR_SLASH, response_url, response_type)
        waiters = self.waiters
        fut = waiters.register(post_id)
        if not await self.inbox.put(msg):
            waiters.discard(post_id)
            return _slash("")  # a concurrent request with the same trigger_id won the race
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


def _is_automatic(post: dict[str, Any]) -> bool:
    """A bot's, a webhook's or a system post: never answered (no loops)."""
    props = post.get("props") or {}
    return (
        str(props.get("from_bot", "")).lower() == "true"
        or str(props.get("from_webhook", "")).lower() == "true"
        or str(post.get("type", "")).startswith("system_")
    )


def _hook_post_id(token: str, f: dict[str, str], at_ms: int) -> str:
    """A stable id for a webhook body that names no post: the same body sent twice is one message."""
    key = "\n".join(
        (token, f["user_id"], f["channel_id"], str(at_ms if f.get("timestamp") else ""), f["text"])
    )
    return "hook-" + hashlib.sha256(key.encode()).hexdigest()[:26]


def _nothing() -> JSONResponse:
    """An outgoing-webhook answer without text: the server posts nothing."""
    return JSONResponse({})


def _slash(text: str) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "text": text})
