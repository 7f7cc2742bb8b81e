"""One in-memory chat server for pipeline unit tests: it satisfies ``pipeline.ports.ChatServer``.

It keeps posts and reactions the way a user would see them. Faults: ``fail`` holds statuses for
the next ``create_post`` calls; ``lose_answers`` makes the next creates land and then fail as if
the answer was lost on the way back (the server's 30 s ``pending_post_id`` window is long over, so
a second create with the same key is a second post, as after a restart).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any


class ChatError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _Bucket:
    """A pacer (``pipeline.ports.Limiter``) whose budget left is ``left`` (0 to 1; all by default)."""

    left = 1.0

    def spare(self) -> float:
        return 100.0 * self.left

    def budget(self) -> float:
        return self.left


@dataclass
class FakeChat:
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    reactions: dict[str, list[str]] = field(default_factory=dict)  # post id -> emoji names, in order
    typing_in: list[str] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)  # post ids, once per edit
    fail: list[int] = field(default_factory=list)
    lose_answers: int = 0
    files: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)  # id -> (info, data)
    calls: int = 0
    limiter: Any = field(default_factory=_Bucket)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def user_post(self, post_id: str, channel_id: str = "c1", root_id: str = "") -> None:
        self.posts[post_id] = {"id": post_id, "channel_id": channel_id, "root_id": root_id, "props": {}}

    def replies_to(self, post_id: str) -> list[dict[str, Any]]:
        """The bot's posts that answer ``post_id``, in the order they were created."""
        return [p for p in self.posts.values() if (p.get("props") or {}).get("mchat_reply_to") == post_id]

    async def create_post(
        self,
        channel_id: str,
        message: str,
        *,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        pending_post_id: str | None = None,
        file_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ChatError(self.fail.pop(0))
        post = {
            "id": f"r{next(self._ids)}",
            "channel_id": channel_id,
            "message": message,
            "root_id": root_id,
            "props": dict(props or {}),
            "pending_post_id": pending_post_id,
            "file_ids": list(file_ids or []),
            "delete_at": 0,
        }
        self.posts[post["id"]] = post
        if self.lose_answers:
            self.lose_answers -= 1
            raise ChatError(504)
        return post

    async def patch_post(self, post_id: str, *, message: str | None = None) -> dict[str, Any]:
        if message is not None:
            self.posts[post_id]["message"] = message
            self.edits.append(post_id)
        return self.posts[post_id]

    async def get_post(self, post_id: str) -> dict[str, Any]:
        if post_id not in self.posts:
            raise ChatError(404)
        return self.posts[post_id]

    async def delete_post(self, post_id: str) -> Any:
        self.posts[post_id]["delete_at"] = 1
        return {}

    async def get_thread(self, post_id: str) -> dict[str, Any]:
        thread = {k: p for k, p in self.posts.items() if post_id in (k, p.get("root_id"))}
        return {"order": list(thread), "posts": thread}

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return {"id": user_id, "username": user_id}

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        return {"id": channel_id, "type": "O", "name": channel_id, "team_id": "t1"}

    async def get_team_by_name(self, name: str) -> dict[str, Any]:
        return {"id": name}

    async def get_channel_by_name(self, team_id: str, name: str) -> dict[str, Any]:
        return {"id": name, "team_id": team_id}

    async def add_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        return {}

    async def typing(self, user_id: str, channel_id: str, parent_id: str = "") -> Any:
        self.typing_in.append(channel_id)

    async def add_reaction(self, user_id: str, post_id: str, emoji_name: str) -> Any:
        self.reactions.setdefault(post_id, []).append(emoji_name)

    async def remove_reaction(self, user_id: str, post_id: str, emoji_name: str) -> Any:
        if emoji_name in self.reactions.get(post_id, []):
            self.reactions[post_id].remove(emoji_name)

    async def upload_file(
        self, channel_id: str, filename: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        info = {"id": f"f{next(self._ids)}", "channel_id": channel_id, "name": filename, "size": len(data)}
        self.files[info["id"]] = (info, data)
        return info

    async def get_file_info(self, file_id: str) -> dict[str, Any]:
        if file_id in self.files:
            return self.files[file_id][0]
        raise ChatError(404)

    async def get_file(self, file_id: str, max_bytes: int) -> bytes:
        if file_id in self.files:
            return self.files[file_id][1]
        raise ChatError(404)
