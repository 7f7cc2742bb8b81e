"""Frames and posts as the Mattermost server sends them (protocol page examples), for wire and door tests."""

from __future__ import annotations

import json
from typing import Any

BOT = "b" * 26
KIM = "k" * 26
CH = "c" * 26
TEAM = "t" * 26
POST_ID = "p" * 26

POST: dict[str, Any] = {
    "id": POST_ID,
    "create_at": 1764057600000,
    "update_at": 1764057600000,
    "edit_at": 0,
    "delete_at": 0,
    "is_pinned": False,
    "user_id": KIM,
    "channel_id": CH,
    "root_id": "",
    "original_id": "",
    "message": "@ai remember X부품 불량률 12%",
    "type": "",
    "props": {},
    "hashtags": "",
    "file_ids": [],
    "pending_post_id": "",
    "reply_count": 0,
    "last_reply_at": 0,
    "participants": None,
    "metadata": {},
}

BROADCAST: dict[str, Any] = {
    "omit_users": None,
    "user_id": "",
    "channel_id": CH,
    "team_id": "",
    "connection_id": "",
    "omit_connection_id": "",
}


def posted_frame(post: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    """A ``posted`` event with ``post`` double-encoded in ``data``, as the server sends it."""
    d = {
        "channel_type": "O",
        "channel_name": "qa",
        "channel_display_name": "품질검사",
        "sender_name": "@kim",
        "team_id": TEAM,
        "set_online": True,
        "mentions": json.dumps([BOT]),
        "post": json.dumps(post or POST, ensure_ascii=False),
    }
    d.update(data)
    return {"event": "posted", "seq": 7, "broadcast": BROADCAST, "data": d}
