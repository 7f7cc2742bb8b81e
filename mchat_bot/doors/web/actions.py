"""POST /mattermost/actions: the click on one of the bot's buttons, as Mattermost relays it.

The body is Mattermost's ``PostActionIntegrationRequest`` (``user_id``, ``post_id``, ``channel_id``,
``team_id``, ``context``...). Everything in it is a claim: the ``context`` must carry the daemon's
own signature (else 403, nothing changes) and name the channel the body names; the post must be the
bot's post in that channel and the user a member of it, as the server says (403 otherwise). Then the
kind runs (:mod:`mchat_bot.pipeline.clicks`) and the answer is Mattermost's
``PostActionIntegrationResponse``: ``update`` (the post's new text, without its buttons when the
click settled it) and/or ``ephemeral_text`` (to the presser alone). Refusals of a valid button (an
Undo by someone else, an expired one) are a 200 with an ephemeral text, so the presser sees why.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from mchat_bot.doors.web.claims import ClaimChecker, ClaimRefused
from mchat_bot.doors.web.webhooks import JSON, read_fields
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.buttons import ACTIONS_PATH, ActionSigner, Click
from mchat_bot.pipeline.clicks import ClickRequest, ClickResult, Clicks
from mchat_bot.pipeline.replying import markers
from mchat_bot.pipeline.router import detect_lang

log = structlog.get_logger(__name__)


class ActionEndpoint:
    def __init__(
        self,
        signer: ActionSigner,
        clicks: Clicks,
        claims: ClaimChecker,
        bot_user_id: str,
        *,
        mention: str = "@ai",
        max_body_bytes: int = 65536,
    ) -> None:
        self.signer = signer
        self.clicks = clicks
        self.claims = claims
        self.bot_user_id = bot_user_id
        self.mention = mention
        self.max_body_bytes = max_body_bytes

    def router(self) -> APIRouter:
        r = APIRouter(tags=["mattermost"])
        r.add_api_route(ACTIONS_PATH, self.action, methods=["POST"], summary="A click on a bot button")
        return r

    async def action(self, request: Request) -> JSONResponse:
        fields = await read_fields(request, (JSON,), self.max_body_bytes)
        f = {k: (v[0] if v else "") for k, v in fields.items()}
        user_id, post_id, channel_id = f.get("user_id", ""), f.get("post_id", ""), f.get("channel_id", "")
        if not (user_id and post_id and channel_id):
            raise HTTPException(400, "user_id, post_id and channel_id are required")
        try:
            context = json.loads(f.get("context") or "null")
        except ValueError:
            context = None
        click = self.signer.verify(context)
        if click == "forged":
            await self.clicks.record(
                "", "refused", None, (), user_id=user_id, channel_id=channel_id, post_id=post_id
            )
            log.warning("click.forged", post_id=post_id)
            raise HTTPException(403, "the button's context is not signed by this bot")
        if isinstance(click, str):  # expired: a real button, too old
            kind = context.get("kind", "") if isinstance(context, dict) else ""
            await self.clicks.record(str(kind), "expired", None, (), user_id=user_id, post_id=post_id)
            return JSONResponse({"ephemeral_text": texts.click_expired("en", self.mention)})
        if click.channel_id != channel_id:
            await self.clicks.record(click.kind, "refused", None, click.memory_ids, user_id=user_id)
            raise HTTPException(403, "the button belongs to another channel")
        try:
            req = await self._verified(click, user_id, post_id, channel_id)
        except ClaimRefused as exc:
            await self.clicks.record(click.kind, "refused", None, click.memory_ids, user_id=user_id)
            raise HTTPException(exc.status, exc.detail) from None
        return JSONResponse(_response(await self.clicks.handle(req), req.post))

    async def _verified(self, click: Click, user_id: str, post_id: str, channel_id: str) -> ClickRequest:
        channel = await self.claims.channel(channel_id)
        if not await self.claims.is_member(channel.id, user_id):
            raise ClaimRefused(403, "not_member", "user_id is not a member of channel_id")
        post = await self.claims.post(post_id)
        if (
            post.get("user_id") != self.bot_user_id
            or post.get("channel_id") != channel.id
            or post.get("delete_at")
        ):
            raise ClaimRefused(403, "post_mismatch", "post_id is not a post of this bot in this channel")
        return ClickRequest(
            click=click,
            user_id=user_id,
            user_name=await self.claims.user_name(user_id),
            post=post,
            channel_id=channel.id,
            channel_type=channel.type,
            channel_name=channel.name,
            team_id=channel.team_id,
            # the reply's first line (its heading) is in the asker's language; memories quoted under
            # it may be in another
            lang=detect_lang(str(post.get("message", "")).split("\n", 1)[0]),
        )


def _response(result: ClickResult, post: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if result.message is not None:
        update: dict[str, Any] = {"message": result.message}
        if result.clear:  # new props without the attachments; the reply markers stay
            props = post.get("props") or {}
            marks = markers(str(props.get("mchat_reply_to", "")), int(props.get("mchat_part", 0) or 0))
            update["props"] = (
                {**marks, "attachments": []} if props.get("mchat_reply_to") else {"attachments": []}
            )
        out["update"] = update
    if result.ephemeral:
        out["ephemeral_text"] = result.ephemeral
    return out
