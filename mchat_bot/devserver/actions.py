"""Interactive message buttons: message attachments with ``actions``, and the click.

As Mattermost does (server/public/model/post.go, app/integration_action.go, api4/post.go):

- A post's ``props.attachments[].actions[]`` get an id when they have none (``GenerateActionIds``);
  posts sent to clients (REST answers, WebSocket events) carry no ``integration`` (the URL and the
  ``context``): ``StripActionIntegrations``. Only the server knows where a click goes.
- ``POST /api/v4/posts/{post_id}/actions/{action_id}`` (the webapp's click; body ``{"selected_option",
  "cookie"}``) needs read access to the post's channel (403), finds the action in the stored post
  (404 ``api.post.do_action.action_id.app_error``) and POSTs a ``PostActionIntegrationRequest`` to its
  ``integration.url``: ``user_id, user_name, channel_id, channel_name, team_id, team_name, post_id,
  trigger_id, type, context``. A transport failure or a non-200 answer is a 400
  ``api.post.do_action.action_integration.app_error``. The answer (``PostActionIntegrationResponse``)
  may carry ``update`` (the post's new ``message``/``props``; without ``props`` the old ones stay) and
  ``ephemeral_text`` (an ephemeral post to the clicker, in the thread of the post). The client gets
  ``{"status": "OK", "trigger_id": …}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from mchat_bot.devserver import wire
from mchat_bot.devserver.errors import AppError, forbidden, invalid_param, json_response
from mchat_bot.devserver.state import Store, is_valid_id, new_id

if TYPE_CHECKING:
    from mchat_bot.devserver.posts import PostService
    from mchat_bot.devserver.rest import RestApi

ACTION_TIMEOUT_S = 30.0  # ServiceSettings.OutgoingIntegrationRequestsTimeout
MAX_RESPONSE_BYTES = 1 << 20


def _actions(props: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    attachments = props.get("attachments")
    if not isinstance(attachments, list):
        return out
    for attachment in attachments:
        if isinstance(attachment, dict) and isinstance(attachment.get("actions"), list):
            out += [a for a in attachment["actions"] if isinstance(a, dict)]
    return out


def generate_action_ids(props: dict[str, Any]) -> None:
    """Give every action without an id one (in place), as the server does on create and update."""
    for action in _actions(props):
        if not action.get("id"):
            action["id"] = new_id()


def for_client(post: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``post`` as clients see it: no action carries its integration."""
    out: dict[str, Any] = wire.copied(post)
    for action in _actions(out.get("props") or {}):
        action.pop("integration", None)
    return out


def client_json(post: dict[str, Any]) -> str:
    """``post`` as clients see it, as JSON text: copied first only when an action must be stripped
    (a post without buttons, nearly every post, is encoded as it is stored)."""
    if any("integration" in action for action in _actions(post.get("props") or {})):
        return wire.dumps(for_client(post))
    return wire.dumps(post)


def _integration_error(detail: str) -> AppError:
    return AppError(
        400, "api.post.do_action.action_integration.app_error", f"Unable to complete the action: {detail}"
    )


class ActionsApi:
    def __init__(self, store: Store, posts: PostService, rest: RestApi) -> None:
        self.store, self.posts, self.rest = store, posts, rest
        self.requests: list[dict[str, Any]] = []  # what was sent to integrations, for tests

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v4/posts/{post_id}/actions/{action_id}", self.do_action)]

    async def do_action(self, request: web.Request) -> web.Response:
        me = self.rest.user(request)
        post_id, action_id = request.match_info["post_id"], request.match_info["action_id"]
        if not is_valid_id(post_id):
            raise invalid_param("post_id")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise invalid_param("post_action") from None
        if not isinstance(body, dict):
            raise invalid_param("post_action")
        post = self.store.posts.get(post_id)
        if post is None or post["delete_at"]:
            raise AppError(404, "app.post.get.app_error", "Unable to get the post.")
        channel = self.store.channels[post["channel_id"]]
        if me.id not in channel.members:
            raise forbidden()
        action = next((a for a in _actions(post.get("props") or {}) if a.get("id") == action_id), None)
        integration = action.get("integration") if action is not None else None
        if action is None or not isinstance(integration, dict) or not integration.get("url"):
            raise AppError(404, "api.post.do_action.action_id.app_error", "Unable to find the action.")
        team = self.store.teams.get(channel.team_id) if channel.team_id else None
        upstream = {
            "user_id": me.id,
            "user_name": me.username,
            "channel_id": channel.id,
            "channel_name": channel.name,
            "team_id": channel.team_id,
            "team_name": team.name if team is not None else "",
            "post_id": post_id,
            "trigger_id": new_id(),
            "type": str(action.get("type") or "button"),
            "context": integration.get("context") or {},
        }
        self.requests.append(upstream)
        answer = await self._call(str(integration["url"]), upstream)
        root = post["root_id"] or post["id"]
        update = answer.get("update")
        if isinstance(update, dict):
            self.posts.apply_action_update(post_id, update)
        text = answer.get("ephemeral_text")
        if isinstance(text, str) and text:
            self.posts.send_ephemeral(me, me.id, {"channel_id": channel.id, "root_id": root, "message": text})
        return json_response({"status": "OK", "trigger_id": upstream["trigger_id"]})

    async def _call(self, url: str, upstream: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=ACTION_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(url, json=upstream, headers={"Accept": "application/json"}) as resp,
            ):
                raw = await resp.content.read(MAX_RESPONSE_BYTES)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _integration_error(type(exc).__name__) from None
        if status != 200:
            raise _integration_error(f"status={status}")
        if not raw.strip():
            return {}
        try:
            answer = json.loads(raw)
        except ValueError:
            raise _integration_error("not JSON") from None
        return answer if isinstance(answer, dict) else {}
