"""In-memory stand-ins for the pipeline's outside parts, where the real one is not what a test is about."""

from __future__ import annotations

from collections.abc import Sequence

from mchat_bot.memory.store import Hit, Memory, Viewer, is_visible


class FakeStore:
    """Word-overlap search with the same visibility rule as the real store."""

    def __init__(self) -> None:
        self.memories: dict[str, Memory] = {}
        self.broken = False

    def _check(self) -> None:
        if self.broken:
            raise ConnectionError("qdrant down")

    async def add(self, memory: Memory) -> None:
        self._check()
        self.memories[memory.id] = memory

    async def search(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]:
        self._check()
        words = set(query.lower().replace("?", " ").split())
        hits = []
        for m in self.memories.values():
            overlap = len(words & set(m.text.lower().split()))
            if overlap and is_visible(m, viewer):
                hits.append(Hit(m, overlap / max(1, len(words))))
        return sorted(hits, key=lambda h: -h.score)[:limit]

    async def get(self, memory_id: str) -> Memory | None:
        self._check()
        return self.memories.get(memory_id)

    async def get_many(self, memory_ids: Sequence[str]) -> dict[str, Memory]:
        self._check()
        return {m: self.memories[m] for m in memory_ids if m in self.memories}

    async def delete(self, memory_id: str) -> bool:
        self._check()
        return self.memories.pop(memory_id, None) is not None

    async def recent(self, viewer: Viewer, limit: int = 10) -> list[Memory]:
        self._check()
        visible = [m for m in self.memories.values() if is_visible(m, viewer)]
        return sorted(visible, key=lambda m: -m.created_at)[:limit]

    async def recent_all(self, viewer: Viewer, limit: int = 10) -> list[Memory]:
        return await self.recent(viewer, limit)

    async def count(self) -> int:
        return len(self.memories)

    async def close(self) -> None:
        pass
