"""Integrations of the dev server (sections 7-9): outgoing webhooks, slash commands, incoming webhooks.

REST: ``POST/GET /api/v4/hooks/outgoing``, ``POST/GET /api/v4/hooks/incoming``,
``POST/GET /api/v4/commands``, ``PUT /api/v4/commands/{id}``, ``POST /api/v4/commands/execute``;
hooks: ``POST /hooks/{id}`` and ``POST /hooks/commands/{id}`` (a command's ``response_url``).
Managing integrations needs a system admin here (the real default, EnableOnlyAdminIntegrations).
What fired and what came back is kept in ``deliveries`` and ``ephemeral`` for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp
import structlog
from aiohttp import web

from mchat_bot.devserver.errors import AppError, forbidden, invalid_param, json_response
from mchat_bot.devserver.hub import Hub
from mchat_bot.devserver.posts import MAX_MESSAGE_RUNES, PostService
from mchat_bot.devserver.rest import RestApi, read_json
from mchat_bot.devserver.state import Channel, Store, User, is_valid_id, new_id

log = structlog.get_logger(__name__)

INTEGRATION_TIMEOUT = 30.0  # OutgoingIntegrationRequestsTimeout default
MAX_RESPONSE_BYTES = 1 << 20
RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_USES = 5


def _client() -> aiohttp.ClientSession:
    """A session for one integration request, as the server's own HTTP client would make it."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=INTEGRATION_TIMEOUT), trust_env=False)


class _Hook:
    """The JSON shape both hook kinds share: their fields, plus the never-edited, never-deleted times."""

    create_at: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses
        d.update(update_at=self.create_at, delete_at=0)
        return d


@dataclass
class OutgoingHook(_Hook):
    id: str
    token: str
    creator_id: str
    team_id: str
    channel_id: str
    trigger_words: list[str]
    trigger_when: int
    callback_urls: list[str]
    content_type: str
    display_name: str = ""
    description: str = ""
    username: str = ""
    icon_url: str = ""
    create_at: int = 0


@dataclass
class IncomingHook(_Hook):
    id: str
    user_id: str
    channel_id: str
    team_id: str
    display_name: str = ""
    description: str = ""
    username: str = ""
    icon_url: str = ""
    channel_locked: bool = False
    create_at: int = 0


@dataclass
class Command:
    id: str
    token: str
    creator_id: str
    team_id: str
    trigger: str
    method: str
    url: str
    username: str = ""
    icon_url: str = ""
    auto_complete: bool = False
    auto_complete_desc: str = ""
    auto_complete_hint: str = ""
    display_name: str = ""
    description: str = ""
    create_at: int = 0
    update_at: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(delete_at=0, plugin_id="", autocomplete_icon_data="")
        return d


@dataclass
class ResponseUrl:
    user_id: str
    channel_id: str
    root_id: str
    created: float
    uses: int = 0


@dataclass
class Integrations:
    """State + rules; ``routes()`` for the aiohttp app; ``on_post`` is PostService's callback."""

    store: Store
    hub: Hub
    posts: PostService
    rest: RestApi
    base_url: Callable[[], str]
    outgoing: dict[str, OutgoingHook] = field(default_factory=dict)
    incoming: dict[str, IncomingHook] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    response_urls: dict[str, ResponseUrl] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # every outgoing-webhook call
    errors: list[str] = field(default_factory=list)  # what the real server only logs
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.posts.after_create.append(self.on_post)

    @property
    def ephemeral(self) -> list[dict[str, Any]]:
        """Ephemeral posts shown to users (command responses and REST ones alike)."""
        return self.posts.ephemeral

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v4/hooks/outgoing", self.create_outgoing),
            web.get("/api/v4/hooks/outgoing", self.list_outgoing),
            web.post("/api/v4/hooks/incoming", self.create_incoming),
            web.get("/api/v4/hooks/incoming", self.list_incoming),
            web.post("/api/v4/commands", self.create_command),
            web.get("/api/v4/commands", self.list_commands),
            web.post("/api/v4/commands/execute", self.execute_command),
            web.put("/api/v4/commands/{command_id}", self.update_command),
            web.post("/hooks/commands/{rid}", self.command_response),
            web.post("/hooks/{hook_id}", self.incoming_post),
        ]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _admin(self, request: web.Request) -> User:
        me = self.rest.user(request)
        if not me.is_admin:
            raise forbidden()
        return me

    async def _body(self, request: web.Request, what: str) -> dict[str, Any]:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid_param(what)
        return body

    # ---- outgoing webhooks (section 7)
    async def create_outgoing(self, request: web.Request) -> web.Response:
        me = self._admin(request)
        b = await self._body(request, "outgoing_webhook")
        team_id = b.get("team_id", "")
        if team_id not in self.store.teams:
            raise invalid_param("team_id")
        channel_id = b.get("channel_id", "") or ""
        if channel_id:
            ch = self.store.channels.get(channel_id)
            if ch is None or ch.type != "O" or ch.team_id != team_id:
                raise AppError(
                    403,
                    "api.webhook.create_outgoing.not_open.app_error",
                    "Outgoing webhooks can only be created for public channels.",
                )
        words = [w for w in b.get("trigger_words") or [] if isinstance(w, str) and w]
        urls = [u for u in b.get("callback_urls") or [] if isinstance(u, str) and u.startswith("http")]
        if not words and not channel_id:
            raise AppError(
                400,
                "api.webhook.create_outgoing.triggers.app_error",
                "Either trigger_words or channel_id must be set.",
            )
        if not urls:
            raise AppError(400, "model.outgoing_hook.is_valid.callback.app_error", "Invalid callback urls.")
        hook = OutgoingHook(
            id=new_id(),
            token=new_id(),
            creator_id=me.id,
            team_id=team_id,
            channel_id=channel_id,
            trigger_words=words,
            trigger_when=1 if b.get("trigger_when") == 1 else 0,
            callback_urls=urls,
            content_type=str(b.get("content_type") or "application/x-www-form-urlencoded"),
            display_name=str(b.get("display_name", "")),
            description=str(b.get("description", "")),
            username=str(b.get("username", "")),
            icon_url=str(b.get("icon_url", "")),
            create_at=self.store.clock.now_ms(),
        )
        self.outgoing[hook.id] = hook
        return json_response(hook.to_json(), 201)

    async def list_outgoing(self, request: web.Request) -> web.Response:
        self._admin(request)
        team_id = request.query.get("team_id", "")
        return json_response(
            [h.to_json() for h in self.outgoing.values() if not team_id or h.team_id == team_id]
        )

    @staticmethod
    def _trigger(hook: OutgoingHook, message: str) -> str | None:
        """The matched trigger word: the first word equals one (0) or starts with one (1)."""
        words = message.split()
        if not words:
            return None
        first = words[0]
        for w in hook.trigger_words:
            if (hook.trigger_when == 0 and first == w) or (hook.trigger_when == 1 and first.startswith(w)):
                return w
        return None

    def on_post(self, post: dict[str, Any], channel: Channel, sender: User) -> None:
        if channel.type != "O" or post["type"].startswith("system_"):
            return
        if str((post.get("props") or {}).get("from_webhook", "")) == "true":
            return  # webhook-created posts never trigger webhooks
        for hook in list(self.outgoing.values()):
            if hook.team_id != channel.team_id or (hook.channel_id and hook.channel_id != channel.id):
                continue
            trigger = self._trigger(hook, post["message"])
            if hook.trigger_words and trigger is None:
                continue
            for url in hook.callback_urls:
                self._spawn(self._fire(hook, url, post, channel, sender, trigger or ""))

    async def _fire(
        self, hook: OutgoingHook, url: str, post: dict[str, Any], channel: Channel, sender: User, trigger: str
    ) -> None:
        team = self.store.teams.get(channel.team_id)
        fields: dict[str, Any] = {
            "token": hook.token,
            "team_id": channel.team_id,
            "team_domain": team.name if team else "",
            "channel_id": channel.id,
            "channel_name": channel.name,
            "timestamp": post["create_at"],
            "user_id": sender.id,
            "user_name": sender.username,
            "post_id": post["id"],
            "text": post["message"],
            "trigger_word": trigger,
            "file_ids": ",".join(post.get("file_ids") or []),
        }
        headers = {"Accept": "application/json"}
        if hook.content_type == "application/json":
            content = json.dumps(fields).encode()
            headers["Content-Type"] = "application/json"
        else:
            fields["timestamp"] = post["create_at"] // 1000
            content = urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        record: dict[str, Any] = {
            "hook_id": hook.id,
            "post_id": post["id"],
            "url": url,
            "started": time.time(),
        }
        self.deliveries.append(record)
        try:
            async with (
                _client() as client,
                client.post(url, data=content, headers=headers, allow_redirects=False) as resp,
            ):
                body = await resp.read()
            record.update(
                status=resp.status,
                body=body.decode("utf-8", errors="replace")[:2000],
                elapsed=time.time() - record["started"],
            )
            raw = body[:MAX_RESPONSE_BYTES]
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.update(status=0, error=type(exc).__name__)
            self.errors.append(f"outgoing webhook {hook.id}: {type(exc).__name__}")
            return
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return
        text = data.get("text")
        if not (isinstance(text, str) and text) and not data.get("attachments"):
            return
        creator = self.store.users.get(hook.creator_id)
        if creator is None:
            return
        props = dict(data.get("props") or {}) if isinstance(data.get("props"), dict) else {}
        props.update(
            from_webhook="true",
            webhook_display_name=hook.display_name,
            override_username=str(data.get("username") or hook.username or "webhook"),
        )
        icon = data.get("icon_url") or hook.icon_url
        if icon:
            props["override_icon_url"] = str(icon)
        root_id = post["id"] if data.get("response_type") == "comment" else ""
        try:
            for part in _split(str(text or "")):
                await self.posts.create(
                    creator,
                    {"channel_id": channel.id, "message": part, "root_id": root_id, "props": props},
                    integration=True,
                )
        except AppError as e:  # e.g. a comment on a reply: the real server only logs it
            self.errors.append(f"outgoing webhook {hook.id}: {e.err_id}")
            record["post_error"] = e.err_id

    # ---- incoming webhooks (section 9)
    async def create_incoming(self, request: web.Request) -> web.Response:
        me = self._admin(request)
        b = await self._body(request, "incoming_webhook")
        ch = self.store.channels.get(b.get("channel_id", ""))
        if ch is None:
            raise invalid_param("channel_id")
        hook = IncomingHook(
            id=new_id(),
            user_id=me.id,
            channel_id=ch.id,
            team_id=ch.team_id,
            display_name=str(b.get("display_name", "")),
            description=str(b.get("description", "")),
            username=str(b.get("username", "")),
            icon_url=str(b.get("icon_url", "")),
            channel_locked=bool(b.get("channel_locked", False)),
            create_at=self.store.clock.now_ms(),
        )
        self.incoming[hook.id] = hook
        return json_response(hook.to_json(), 201)

    async def list_incoming(self, request: web.Request) -> web.Response:
        self._admin(request)
        return json_response([h.to_json() for h in self.incoming.values()])

    async def incoming_post(self, request: web.Request) -> web.Response:
        hook = self.incoming.get(request.match_info["hook_id"])
        if hook is None:
            raise AppError(400, "web.incoming_webhook.invalid.app_error", "Invalid webhook.")
        payload = await _hook_payload(request)
        if payload is None:
            raise AppError(400, "api.webhook.incoming.parse.app_error", "Unable to parse incoming data.")
        text = payload.get("text")
        if not (isinstance(text, str) and text) and not payload.get("attachments"):
            raise AppError(400, "web.incoming_webhook.text.app_error", "No text specified.")
        channel = self.store.channels[hook.channel_id]
        override = payload.get("channel")
        if isinstance(override, str) and override and not hook.channel_locked:
            channel = self._channel_by_name(override, hook)
        creator = self.store.users[hook.user_id]
        props = dict(payload.get("props") or {}) if isinstance(payload.get("props"), dict) else {}
        props.update(
            from_webhook="true",
            override_username=str(payload.get("username") or hook.username or "webhook"),
        )
        icon = payload.get("icon_url") or hook.icon_url
        if icon:
            props["override_icon_url"] = str(icon)
        for part in _split(str(text or "")):
            await self.posts.create(
                creator, {"channel_id": channel.id, "message": part, "props": props}, integration=True
            )
        return web.Response(text="ok", content_type="text/plain")

    def _channel_by_name(self, name: str, hook: IncomingHook) -> Channel:
        if name.startswith("@"):
            user = self.store.user_by_name(name[1:])
            if user is None:
                raise AppError(400, "web.incoming_webhook.user.app_error", "Couldn't find the user.")
            return self.store.dm_between(hook.user_id, user.id) or self.store.create_dm(hook.user_id, user.id)
        for c in self.store.channels.values():
            if c.team_id == hook.team_id and c.name == name:
                return c
        raise AppError(400, "web.incoming_webhook.channel.app_error", "Couldn't find the channel.")

    # ---- slash commands (section 8)
    def _command_fields(self, b: dict[str, Any], cmd: Command) -> None:
        trigger = b.get("trigger", cmd.trigger)
        if not isinstance(trigger, str) or not trigger or trigger.startswith("/") or " " in trigger:
            raise AppError(400, "model.command.is_valid.trigger.app_error", "Invalid trigger.")
        url = b.get("url", cmd.url)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise AppError(400, "model.command.is_valid.url.app_error", "Invalid URL.")
        method = b.get("method", cmd.method)
        if method not in ("P", "G"):
            raise AppError(400, "model.command.is_valid.method.app_error", "Invalid Method.")
        for other in self.commands.values():
            if other.id != cmd.id and other.team_id == cmd.team_id and other.trigger == trigger.lower():
                raise AppError(
                    400, "api.command.duplicate_trigger.app_error", "This trigger word is already in use."
                )
        cmd.trigger, cmd.url, cmd.method = trigger.lower(), url, method
        for key in (
            "username",
            "icon_url",
            "auto_complete_desc",
            "auto_complete_hint",
            "display_name",
            "description",
        ):
            if isinstance(b.get(key), str):
                setattr(cmd, key, b[key])
        if isinstance(b.get("auto_complete"), bool):
            cmd.auto_complete = b["auto_complete"]
        cmd.update_at = self.store.clock.now_ms()

    async def create_command(self, request: web.Request) -> web.Response:
        me = self._admin(request)
        b = await self._body(request, "command")
        team_id = b.get("team_id", "")
        if team_id not in self.store.teams:
            raise invalid_param("team_id")
        now = self.store.clock.now_ms()
        cmd = Command(new_id(), new_id(), me.id, team_id, "", "P", "", create_at=now, update_at=now)
        self._command_fields(b, cmd)
        self.commands[cmd.id] = cmd
        return json_response(cmd.to_json(), 201)

    async def list_commands(self, request: web.Request) -> web.Response:
        self._admin(request)
        team_id = request.query.get("team_id", "")
        if not is_valid_id(team_id):
            raise AppError(400, "api.context.invalid_url_param.app_error", "Invalid or missing team_id.")
        return json_response([c.to_json() for c in self.commands.values() if c.team_id == team_id])

    async def update_command(self, request: web.Request) -> web.Response:
        self._admin(request)
        cmd = self.commands.get(request.match_info["command_id"])
        if cmd is None:
            raise AppError(404, "app.command.getcommand.app_error", "Unable to get the command.")
        b = await self._body(request, "command")
        if b.get("team_id", cmd.team_id) != cmd.team_id:
            raise AppError(400, "api.command.team_mismatch.app_error", "Cannot update commands across teams.")
        self._command_fields(b, cmd)
        return json_response(cmd.to_json())

    async def execute_command(self, request: web.Request) -> web.Response:
        me = self.rest.user(request)
        b = await self._body(request, "command_args")
        channel = self.posts.channel_for(me, str(b.get("channel_id", "")))
        command = b.get("command", "")
        if not isinstance(command, str) or not command.startswith("/"):
            raise AppError(400, "api.command.execute_command.start.app_error", "No command trigger found.")
        trigger, _, text = command[1:].partition(" ")
        team_id = channel.team_id or str(b.get("team_id", ""))
        cmd = next(
            (c for c in self.commands.values() if c.team_id == team_id and c.trigger == trigger.lower()), None
        )
        if cmd is None:
            raise AppError(
                404,
                "api.command.execute_command.not_found.app_error",
                f"Command with a trigger of '/{trigger}' not found.",
            )
        root_id = str(b.get("root_id") or b.get("parent_id") or "")
        rid = new_id()
        self.response_urls[rid] = ResponseUrl(me.id, channel.id, root_id, time.monotonic())
        team = self.store.teams.get(team_id)
        fields = {
            "token": cmd.token,
            "team_id": team_id,
            "team_domain": team.name if team else "",
            "channel_id": channel.id,
            "channel_name": channel.name,
            "user_id": me.id,
            "user_name": me.username,
            "command": "/" + trigger.lower(),
            "text": text.strip(),
            "trigger_id": new_id() + new_id(),
            "response_url": f"{self.base_url()}/hooks/commands/{rid}",
        }
        headers = {"Accept": "application/json", "Authorization": f"Token {cmd.token}"}
        try:
            async with _client() as client:
                if cmd.method == "G":
                    call = client.get(cmd.url, params=fields, headers=headers, allow_redirects=False)
                else:
                    call = client.post(
                        cmd.url,
                        data=urlencode(fields).encode(),
                        headers=headers | {"Content-Type": "application/x-www-form-urlencoded"},
                        allow_redirects=False,
                    )
                async with call as resp:
                    status, content_type, content = (
                        resp.status,
                        resp.headers.get("content-type", ""),
                        await resp.read(),
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AppError(
                500, "api.command.execute_command.failed.app_error", f"Command '{trigger}' failed: {exc}"
            ) from None
        if status != 200:
            raise AppError(
                500,
                "api.command.execute_command.failed_resp.app_error",
                f"Command with a trigger of '{trigger}' returned response {status}.",
            )
        response = _command_response(content_type, content)
        await self._apply_response(response, me, channel, root_id, cmd)
        return json_response(response)

    async def command_response(self, request: web.Request) -> web.Response:
        ru = self.response_urls.get(request.match_info["rid"])
        if ru is None or time.monotonic() - ru.created > RESPONSE_URL_TTL or ru.uses >= RESPONSE_URL_USES:
            raise AppError(
                400,
                "web.command_webhook.invalid.app_error",
                "Unable to find the webhook (expired or used up).",
            )
        ru.uses += 1
        raw = await request.read()
        response = _command_response(request.headers.get("content-type", ""), raw)
        user = self.store.users[ru.user_id]
        channel = self.store.channels[ru.channel_id]
        await self._apply_response(response, user, channel, ru.root_id, None)
        return web.Response(text="ok", content_type="text/plain")

    async def _apply_response(
        self, response: dict[str, Any], user: User, channel: Channel, root_id: str, cmd: Command | None
    ) -> None:
        for item in [response, *[r for r in response.get("extra_responses") or [] if isinstance(r, dict)]]:
            text = str(item.get("text") or "")
            if not text and not item.get("attachments"):
                continue
            if item.get("response_type") == "in_channel":
                props = dict(item.get("props") or {}) if isinstance(item.get("props"), dict) else {}
                props["from_webhook"] = "true"
                name = item.get("username") or (cmd.username if cmd else "")
                icon = item.get("icon_url") or (cmd.icon_url if cmd else "")
                if name:
                    props["override_username"] = str(name)
                if icon:
                    props["override_icon_url"] = str(icon)
                for part in _split(text):
                    await self.posts.create(
                        user,
                        {"channel_id": channel.id, "message": part, "root_id": root_id, "props": props},
                        integration=True,
                    )
            else:
                sender = self.store.users[cmd.creator_id] if cmd else user
                self.posts.send_ephemeral(
                    sender, user.id, {"channel_id": channel.id, "root_id": root_id, "message": text}
                )

    async def wait_ephemeral(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first ephemeral message matching ``predicate`` (tests)."""
        end = time.monotonic() + timeout
        while True:
            for e in self.ephemeral:
                if predicate(e):
                    return e
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching ephemeral message")
            with contextlib.suppress(TimeoutError):
                await self.posts.changed(min(left, 0.2))


def _split(text: str) -> list[str]:
    if len(text) <= MAX_MESSAGE_RUNES:
        return [text]
    return [text[i : i + MAX_MESSAGE_RUNES] for i in range(0, len(text), MAX_MESSAGE_RUNES)]


def _command_response(content_type: str, raw: bytes) -> dict[str, Any]:
    """JSON only when the Content-Type says so; any other body is the text of an ephemeral reply."""
    text = raw.decode("utf-8", "replace")
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError:
            data = None
        if isinstance(data, dict):
            data.setdefault("response_type", "ephemeral")
            return data
    return {"response_type": "ephemeral", "text": text}


async def _hook_payload(request: web.Request) -> dict[str, Any] | None:
    """An incoming webhook's body: JSON, or a form field ``payload`` holding JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "multipart/form-data":
            form = await request.post()
            data = json.loads(str(form.get("payload", "")) or "null")
        elif ctype == "application/x-www-form-urlencoded":
            raw = await request.read()
            data = json.loads(parse_qs(raw.decode())["payload"][0])
        else:
            raw = await request.read()
            data = json.loads(raw) if raw else None
    except (ValueError, KeyError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
