"""Interactive buttons on the bot's replies: what a button means, and its signed context.

A handler puts :class:`Button` values on its :class:`~mchat_bot.pipeline.message.Reply` (pure data:
the kind, the memories it acts on, who may press it). The reply writer renders them as a Mattermost
message attachment with ``actions`` whose ``integration`` is the daemon's own
``/mattermost/actions`` and whose ``context`` is signed here (HMAC-SHA256 under a key only the
daemon holds), so a click that reaches the daemon can be trusted to be one of its own buttons: the
kind, the memory ids, the intended user and the channel cannot be changed, and a context is good
for :data:`BUTTON_TTL_S`. Mattermost keeps the ``integration`` on its side (clients never see the
context), and the click handler still checks the post, the channel and the user with the server.
Without a public URL for the daemon (``http.public_url``) no button is rendered: the text commands
do the same.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mchat_bot.storage import Storage

ACTIONS_PATH = "/mattermost/actions"
BUTTON_TTL_S = 7 * 86400.0  # a week: buttons on older replies answer "expired" (the text commands stay)
KEY_BYTES = 32
SIGNATURE = "sig"


@dataclass(frozen=True, slots=True)
class Button:
    kind: str  # a registered click kind: undo, forget, choose, ...
    label: str
    memory_ids: tuple[str, ...] = ()
    user_id: str = ""  # only this user may press it ("" = anyone the kind's own rules allow)
    style: str = "default"  # default | primary | danger (Mattermost's button styles)
    extra: tuple[tuple[str, str], ...] = ()  # small kind-specific values (signed with the rest)


@dataclass(frozen=True, slots=True)
class Click:
    """A verified context: what the button said, after its signature and expiry were checked."""

    kind: str
    memory_ids: tuple[str, ...]
    user_id: str
    channel_id: str
    extra: dict[str, str]


KEY_KV = "actions_key"


def new_key() -> str:
    return secrets.token_hex(KEY_BYTES)


async def stored_key(storage: Storage) -> str:
    """The key kept in the daemon's state (made on first use), for a daemon given none: it
    survives restarts, so the buttons of earlier replies keep working. Daemons sharing the state
    that start together keep the first key written, so all of them sign alike."""
    key = await storage.get_kv(KEY_KV)
    if not key:
        key = await storage.setdefault_kv(KEY_KV, new_key())
    return key


class ActionSigner:
    def __init__(self, key: str, ttl: float = BUTTON_TTL_S) -> None:
        if len(key) < 16:
            raise ValueError("the actions key must be at least 16 characters")
        self._key = key.encode()
        self.ttl = ttl

    def _mac(self, fields: dict[str, Any]) -> str:
        body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def context(self, button: Button, channel_id: str, now: float | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "kind": button.kind,
            "memory_ids": list(button.memory_ids),
            "user_id": button.user_id,
            "channel_id": channel_id,
            "expires": int((time.time() if now is None else now) + self.ttl),
            "extra": dict(button.extra),
        }
        return {**fields, SIGNATURE: self._mac(fields)}

    def verify(self, context: object, now: float | None = None) -> Click | str:
        """The click, or why it is refused: ``"forged"`` (no or a wrong signature, a bad shape) or
        ``"expired"``."""
        if not isinstance(context, dict):
            return "forged"
        fields = {k: v for k, v in context.items() if k != SIGNATURE}
        given = context.get(SIGNATURE)
        if not isinstance(given, str) or not hmac.compare_digest(given, self._mac(fields)):
            return "forged"
        kind, ids, user, channel = (fields.get(k) for k in ("kind", "memory_ids", "user_id", "channel_id"))
        expires, extra = fields.get("expires"), fields.get("extra") or {}
        if not (
            isinstance(kind, str)
            and isinstance(ids, list)
            and all(isinstance(i, str) for i in ids)
            and isinstance(user, str)
            and isinstance(channel, str)
            and isinstance(expires, int)
            and isinstance(extra, dict)
        ):
            return "forged"
        if (time.time() if now is None else now) > expires:
            return "expired"
        return Click(kind, tuple(ids), user, channel, {str(k): str(v) for k, v in extra.items()})


class ButtonMaker:
    """Renders buttons as Mattermost message attachments pointing at the daemon's action door."""

    def __init__(self, public_url: str, signer: ActionSigner) -> None:
        self.url = public_url.rstrip("/") + ACTIONS_PATH
        self.signer = signer

    def attachments(self, buttons: Sequence[Button], channel_id: str, text: str = "") -> list[dict[str, Any]]:
        if not buttons:
            return []
        actions = [
            {
                "id": f"{b.kind}{i}",  # alphanumeric, unique in the post
                "name": b.label,
                "type": "button",
                "style": b.style,
                "integration": {"url": self.url, "context": self.signer.context(b, channel_id)},
            }
            for i, b in enumerate(buttons)
        ]
        return [{"text": text, "actions": actions}]
