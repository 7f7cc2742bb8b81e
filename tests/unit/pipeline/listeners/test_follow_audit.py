"""A deleted source post forgets its memories, says so in the thread, and gets its own audit row
(no message is being handled, so no turn records it)."""

from __future__ import annotations

import time
from pathlib import Path

from mchat_bot.mattermost.events import Post
from mchat_bot.memory.embedder import load_embedder
from mchat_bot.memory.store import EdgeMemoryStore, Memory, new_memory_id
from mchat_bot.pipeline.audit import Audit
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.listeners.follow import Follower
from mchat_bot.storage import Storage
from tests.support.chat import FakeChat
from tests.support.turns import BOT


async def test_a_deleted_source_post_forgets_its_memory_with_an_audit_row(
    tmp_path: Path, storage: Storage, inbox: Inbox
) -> None:
    store = EdgeMemoryStore(tmp_path / "mem", load_embedder("default"))
    try:
        memory = Memory(
            id=new_memory_id(),
            text="배포는 금요일",
            category="fact",
            scope="channel",
            team_id="t1",
            channel_id="c1",
            user_id="u1",
            user_name="kim",
            source_post_id="p9",
            created_at=time.time(),
        )
        await store.add(memory)
        audit = Audit(storage)
        chat = FakeChat()
        follower = Follower(store, chat, inbox, BOT, audit=audit)  # type: ignore[arg-type]
        post = Post.from_dict(
            {
                "id": "p9",
                "channel_id": "c1",
                "user_id": "u1",
                "message": "@ai remember 배포는 금요일",
                "create_at": 1,
                "delete_at": 2,
            }
        )
        await follower.deleted(post)
        assert await store.get(memory.id) is None
    finally:
        await store.close()
    [row] = await audit.query()
    assert row.action == "forget" and row.memory_ids == (memory.id,)
    [notice] = [p for p in chat.posts.values() if p["props"].get("mchat_follow") == "p9"]
    assert notice["root_id"] == "p9" and "배포는 금요일" in notice["message"]
