"""The earlier posts of a thread, for the answer prompt: read over REST, names looked up once."""

from __future__ import annotations

from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.users import UserNames


class RestThreadReader:
    """Gives the handlers the earlier posts of a thread, read over REST."""

    def __init__(self, rest: ChatServer, names: dict[str, str]) -> None:
        self._rest = rest
        self._names = UserNames(rest.get_user, names, fallback_to_id=True)

    async def thread_context(self, root_id: str, before_post_id: str) -> list[tuple[str, str]]:
        thread = await self._rest.get_thread(root_id)
        posts = sorted(thread.get("posts", {}).values(), key=lambda p: p.get("create_at", 0))
        out: list[tuple[str, str]] = []
        for post in posts:
            if post.get("id") == before_post_id:
                break
            if post.get("delete_at") or str(post.get("type", "")).startswith("system_"):
                continue
            name = await self._names.of(str(post.get("user_id", "")))
            out.append((name, str(post.get("message", ""))))
        return out[-20:]
