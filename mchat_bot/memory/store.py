"""Memory store on Qdrant: embedded in-process on disk (qdrant-edge) by default, a Qdrant server by URL.

Visibility is enforced inside the engine's query (payload filter), never after the fact, so a memory
the viewer may not see can never reach a prompt. Search is dense (cosine) with an optional bigram
sparse side fused by RRF inside the engine, then a cheap recency rerank: when two candidates are
near-duplicates (the same fact said twice, or a fact that changed), the newer one takes the better rank.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

import numpy as np
import structlog

from mchat_bot.memory import sparse
from mchat_bot.memory.embedder import Embedder

log = structlog.get_logger(__name__)

Scope = Literal["channel", "user", "team"]
SearchMode = Literal["dense", "hybrid"]

DENSE = "dense"
SPARSE = "bigram"
_ID_NS = uuid.UUID("6f1c2a4e-5b7d-5c1e-9a3f-0d8e7b6a5c40")  # fixed: point ids must map the same forever
_KEYWORD_FIELDS = ("scope", "team_id", "channel_id", "user_id", "memory_id")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_memory_id() -> str:
    """A 26-character, time-sortable id (ULID layout: 48-bit ms time + 80 random bits, Crockford base32)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def point_id(memory_id: str) -> str:
    """Engine point id for a memory id (engines want UUIDs; ours are short strings)."""
    return str(uuid.uuid5(_ID_NS, memory_id))


@dataclass(frozen=True, slots=True)
class Memory:
    """One remembered fact and where it came from. Times are epoch seconds."""

    id: str
    text: str
    category: str = "fact"  # fact, preference, decision, task, event, other
    scope: Scope = "channel"
    team_id: str = ""
    channel_id: str = ""
    user_id: str = ""  # author
    user_name: str = ""
    source_post_id: str = ""
    permalink: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0  # 0 = never updated
    replaces: str = ""  # id of the memory this one superseded, "" if none

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["memory_id"] = payload.pop("id")
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Memory:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in payload.items() if k in known}
        data["id"] = payload["memory_id"]
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks, from where: decides which memories are visible."""

    team_id: str
    channel_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result; `score` is the cosine similarity between query and memory."""

    memory: Memory
    score: float


class MemoryStore(Protocol):
    async def add(self, memory: Memory) -> None: ...
    async def search(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]: ...
    async def get(self, memory_id: str) -> Memory | None: ...
    async def delete(self, memory_id: str) -> bool: ...
    async def recent(self, viewer: Viewer, limit: int = 10) -> list[Memory]: ...
    async def count(self) -> int: ...
    async def close(self) -> None: ...


def visibility_clauses(viewer: Viewer) -> list[dict[str, str]]:
    """The OR-ed AND-clauses a viewer may see; empty ids never match (a DM has no team)."""
    clauses: list[dict[str, str]] = []
    if viewer.channel_id:
        clauses.append({"scope": "channel", "channel_id": viewer.channel_id})
    if viewer.user_id and viewer.team_id:
        clauses.append({"scope": "user", "user_id": viewer.user_id, "team_id": viewer.team_id})
    if viewer.team_id:
        clauses.append({"scope": "team", "team_id": viewer.team_id})
    return clauses


def is_visible(memory: Memory, viewer: Viewer) -> bool:
    """The same rule as the engine filter, in Python (for tests and benches, never for enforcement)."""
    payload = memory.to_payload()
    return any(all(payload[k] == v for k, v in c.items()) for c in visibility_clauses(viewer))


@dataclass(slots=True)
class _Candidate:
    memory: Memory
    vector: np.ndarray
    score: float = 0.0


def recency_rerank(cands: list[_Candidate], threshold: float, margin: float = 1.0) -> list[_Candidate]:
    """Move the newer of two near-duplicate candidates just above the older one.

    Near-duplicate: cosine between the two memories >= threshold (the same fact said again, or a fact
    that changed), and the newer one's query score within `margin` of the older one's. Walking from the
    top, the item at each rank is replaced by its newest near-duplicate found lower down, until none is
    newer; everything else keeps its relative order. Not transitive through clusters, so a loose match
    cannot drag unrelated memories up.
    """
    if len(cands) < 2:
        return cands
    out = list(cands)
    mat = np.stack([c.vector for c in out])
    sims = mat @ mat.T
    pos = list(range(len(out)))  # out[k] is cands[pos[k]]
    k = 0
    while k < len(out):
        cur = pos[k]
        best = -1
        for j in range(k + 1, len(out)):
            other = pos[j]
            if (
                cands[other].memory.created_at > cands[cur].memory.created_at
                and sims[cur, other] >= threshold
                and cands[other].score >= cands[cur].score - margin
                and (best < 0 or cands[other].memory.created_at > cands[pos[best]].memory.created_at)
            ):
                best = j
        if best < 0:
            k += 1
            continue
        pos.insert(k, pos.pop(best))
        out.insert(k, out.pop(best))
    return out


def _unit(vec: Sequence[float]) -> np.ndarray:
    arr = np.asarray(vec, dtype=np.float32)
    norm = float(np.linalg.norm(arr))
    return arr / norm if norm > 0 else arr


def collection_name(embedder: Embedder) -> str:
    """One collection per embedder: vectors of different models must never be compared."""
    slug = re.sub(r"[^a-z0-9]+", "_", embedder.name.lower()).strip("_")
    return f"memories_{slug}"


class _BaseStore:
    """Search logic shared by both engines; subclasses do the engine calls."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        mode: SearchMode = "dense",
        rerank: bool = True,
        candidates: int = 3,
        dup_threshold: float | None = None,
        dup_margin: float = 1.0,
    ) -> None:
        self.embedder = embedder
        self.mode: SearchMode = mode
        self.rerank = rerank
        self.candidates = candidates
        self.dup_margin = dup_margin
        self.dup_threshold = (
            dup_threshold if dup_threshold is not None else float(getattr(embedder, "dup_threshold", 0.93))
        )

    # -- engine hooks -----------------------------------------------------------------------------
    async def _upsert(self, items: list[tuple[Memory, list[float]]]) -> None:
        raise NotImplementedError

    async def _query(
        self, dense: list[float], sparse_q: tuple[list[int], list[float]] | None, viewer: Viewer, k: int
    ) -> list[_Candidate]:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------
    async def add(self, memory: Memory) -> None:
        await self.add_many([memory])

    async def add_many(self, memories: Sequence[Memory]) -> None:
        """Embed and upsert several memories in one engine call (same as `add` for each)."""
        if not memories:
            return
        vectors = await asyncio.to_thread(self.embedder.embed_documents, [m.text for m in memories])
        await self._upsert(list(zip(memories, vectors, strict=True)))

    async def search(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]:
        if limit <= 0 or not query.strip() or not visibility_clauses(viewer):
            return []
        qvec = await asyncio.to_thread(self.embedder.embed_query, query)
        sparse_q = sparse.query_vector(query) if self.mode == "hybrid" else None
        if sparse_q is not None and not sparse_q[0]:
            sparse_q = None
        k = limit * self.candidates if self.rerank else limit
        cands = await self._query(qvec, sparse_q, viewer, k)
        q = _unit(qvec)
        for c in cands:
            c.score = float(c.vector @ q)
        if self.rerank:
            cands = recency_rerank(cands, self.dup_threshold, self.dup_margin)
        return [Hit(c.memory, c.score) for c in cands[:limit]]


# ================================================================================================
# Embedded: qdrant-edge (in-process Qdrant shard on disk)
# ================================================================================================


class EdgeMemoryStore(_BaseStore):
    """Qdrant Edge shard at `path/<collection>`; WAL-backed, so writes survive a crash or restart.

    The shard is used from worker threads (asyncio.to_thread) under one lock: its thread safety across
    Python threads is not documented, and one writer at a time costs nothing at chat rates.
    """

    def __init__(self, path: str | os.PathLike[str], embedder: Embedder, **kwargs: Any) -> None:
        super().__init__(embedder, **kwargs)
        self._dir = os.path.join(os.fspath(path), collection_name(embedder))
        self._shard: Any = None
        self._lock = threading.Lock()
        self._open_lock = asyncio.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._shard is None:
            async with self._open_lock:
                if self._shard is None:
                    self._shard = await asyncio.to_thread(self._open)

        def call() -> Any:
            with self._lock:
                if self._shard is None:
                    raise RuntimeError("memory store is closed")
                return fn(self._shard, *args)

        return await asyncio.to_thread(call)

    def _open(self) -> Any:
        import qdrant_edge as qe

        dim = self.embedder.dim
        if os.path.exists(os.path.join(self._dir, "edge_config.json")):
            shard = qe.EdgeShard.load(self._dir)
            log.info("memory_store_opened", engine="edge", path=self._dir, points=shard.info().points_count)
            return shard
        os.makedirs(self._dir, exist_ok=True)
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        shard = qe.EdgeShard.create(self._dir, config)
        for key in _KEYWORD_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
        shard.update(qe.UpdateOperation.create_field_index("created_at", qe.PayloadSchemaType.Float))
        log.info("memory_store_created", engine="edge", path=self._dir, dim=dim)
        return shard

    @staticmethod
    def _filter(viewer: Viewer) -> Any:
        import qdrant_edge as qe

        return qe.Filter(
            should=[
                qe.Filter(must=[qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in c.items()])
                for c in visibility_clauses(viewer)
            ]
        )

    async def _upsert(self, items: list[tuple[Memory, list[float]]]) -> None:
        import qdrant_edge as qe

        points = []
        for mem, vec in items:
            idx, val = sparse.document_vector(mem.text)
            vectors: dict[str, Any] = {DENSE: vec}
            if idx:
                vectors[SPARSE] = qe.SparseVector(indices=idx, values=val)
            points.append(qe.Point(id=point_id(mem.id), vector=vectors, payload=mem.to_payload()))
        await self._run(lambda s: s.update(qe.UpdateOperation.upsert_points(points)))

    async def _query(
        self, dense: list[float], sparse_q: tuple[list[int], list[float]] | None, viewer: Viewer, k: int
    ) -> list[_Candidate]:
        import qdrant_edge as qe

        flt = self._filter(viewer)
        if sparse_q is None:
            req = qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(dense, using=DENSE),
                filter=flt,
                with_payload=True,
                with_vector=[DENSE],
            )
        else:
            sv = qe.SparseVector(indices=sparse_q[0], values=sparse_q[1])
            req = qe.QueryRequest(
                limit=k,
                prefetches=[
                    qe.Prefetch(limit=k, query=qe.Query.Nearest(dense, using=DENSE), filter=flt),
                    qe.Prefetch(limit=k, query=qe.Query.Nearest(sv, using=SPARSE), filter=flt),
                ],
                query=qe.Fusion.Rrf(k=60),  # type: ignore[arg-type]  # the stub omits the nested class
                filter=flt,
                with_payload=True,
                with_vector=[DENSE],
            )
        points = await self._run(lambda s: s.query(req))
        return [_edge_candidate(p) for p in points]

    async def get(self, memory_id: str) -> Memory | None:
        recs = await self._run(lambda s: s.retrieve([point_id(memory_id)], True, False))
        return Memory.from_payload(recs[0].payload) if recs else None

    async def delete(self, memory_id: str) -> bool:
        import qdrant_edge as qe

        pid = point_id(memory_id)

        def op(s: Any) -> bool:
            if not s.retrieve([pid], False, False):
                return False
            s.update(qe.UpdateOperation.delete_points([pid]))
            return True

        return bool(await self._run(op))

    async def recent(self, viewer: Viewer, limit: int = 10) -> list[Memory]:
        import qdrant_edge as qe

        if limit <= 0 or not visibility_clauses(viewer):
            return []
        req = qe.ScrollRequest(
            limit=limit,
            filter=self._filter(viewer),
            with_payload=True,
            order_by=qe.OrderBy("created_at", qe.Direction.Desc),
        )
        recs, _next = await self._run(lambda s: s.scroll(req))
        return [Memory.from_payload(r.payload) for r in recs]

    async def count(self) -> int:
        import qdrant_edge as qe

        return int(await self._run(lambda s: s.count(qe.CountRequest(exact=True))))

    async def close(self) -> None:
        if self._shard is None:
            return

        def shut() -> None:
            with self._lock:
                shard, self._shard = self._shard, None
                if shard is not None:
                    shard.flush()
                    shard.close()

        await asyncio.to_thread(shut)


def _edge_candidate(p: Any) -> _Candidate:
    vec = p.vector[DENSE] if isinstance(p.vector, dict) else p.vector
    return _Candidate(Memory.from_payload(p.payload), _unit(vec), float(p.score))


# ================================================================================================
# Qdrant server (or qdrant-client local mode, used by tests as a stand-in)
# ================================================================================================


class QdrantMemoryStore(_BaseStore):
    """A collection on a Qdrant server through `AsyncQdrantClient` (`url=`), or its local mode (`path=`).

    Every call carries the client's timeout; nothing here blocks the event loop on a server. (The local
    mode runs in-process and is only a stand-in for tests.)
    """

    def __init__(self, client: Any, embedder: Embedder, **kwargs: Any) -> None:
        super().__init__(embedder, **kwargs)
        self._client = client
        self._collection = collection_name(embedder)
        self._ready = False
        self._ready_lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            from qdrant_client import models as qm

            if not await self._client.collection_exists(self._collection):
                dim = await asyncio.to_thread(lambda: self.embedder.dim)
                await self._client.create_collection(
                    self._collection,
                    vectors_config={DENSE: qm.VectorParams(size=dim, distance=qm.Distance.COSINE)},
                    sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                )
                with warnings.catch_warnings():  # local mode warns that indexes are no-ops there
                    warnings.simplefilter("ignore")
                    for key in _KEYWORD_FIELDS:
                        await self._client.create_payload_index(
                            self._collection, key, qm.PayloadSchemaType.KEYWORD
                        )
                    await self._client.create_payload_index(
                        self._collection, "created_at", qm.PayloadSchemaType.FLOAT
                    )
                log.info("memory_store_created", engine="qdrant", collection=self._collection, dim=dim)
            self._ready = True

    @staticmethod
    def _filter(viewer: Viewer) -> Any:
        from qdrant_client import models as qm

        return qm.Filter(
            should=[
                qm.Filter(must=[qm.FieldCondition(key=k, match=qm.MatchValue(value=v)) for k, v in c.items()])
                for c in visibility_clauses(viewer)
            ]
        )

    async def _upsert(self, items: list[tuple[Memory, list[float]]]) -> None:
        from qdrant_client import models as qm

        await self._ensure()
        points = []
        for mem, vec in items:
            idx, val = sparse.document_vector(mem.text)
            vectors: dict[str, Any] = {DENSE: vec}
            if idx:
                vectors[SPARSE] = qm.SparseVector(indices=idx, values=val)
            points.append(qm.PointStruct(id=point_id(mem.id), vector=vectors, payload=mem.to_payload()))
        await self._client.upsert(self._collection, points=points, wait=True)

    async def _query(
        self, dense: list[float], sparse_q: tuple[list[int], list[float]] | None, viewer: Viewer, k: int
    ) -> list[_Candidate]:
        from qdrant_client import models as qm

        await self._ensure()
        flt = self._filter(viewer)
        if sparse_q is None:
            resp = await self._client.query_points(
                self._collection,
                query=dense,
                using=DENSE,
                query_filter=flt,
                limit=k,
                with_payload=True,
                with_vectors=[DENSE],
            )
        else:
            sv = qm.SparseVector(indices=sparse_q[0], values=sparse_q[1])
            resp = await self._client.query_points(
                self._collection,
                prefetch=[
                    qm.Prefetch(query=dense, using=DENSE, filter=flt, limit=k),
                    qm.Prefetch(query=sv, using=SPARSE, filter=flt, limit=k),
                ],
                query=qm.FusionQuery(fusion=qm.Fusion.RRF),
                query_filter=flt,
                limit=k,
                with_payload=True,
                with_vectors=[DENSE],
            )
        out = []
        for p in resp.points:
            vec = p.vector[DENSE] if isinstance(p.vector, dict) else p.vector
            out.append(_Candidate(Memory.from_payload(p.payload or {}), _unit(vec), float(p.score)))
        return out

    async def get(self, memory_id: str) -> Memory | None:
        await self._ensure()
        recs = await self._client.retrieve(self._collection, [point_id(memory_id)], with_payload=True)
        return Memory.from_payload(recs[0].payload or {}) if recs else None

    async def delete(self, memory_id: str) -> bool:
        from qdrant_client import models as qm

        await self._ensure()
        pid = point_id(memory_id)
        if not await self._client.retrieve(self._collection, [pid], with_payload=False):
            return False
        await self._client.delete(self._collection, qm.PointIdsList(points=[pid]), wait=True)
        return True

    async def recent(self, viewer: Viewer, limit: int = 10) -> list[Memory]:
        from qdrant_client import models as qm

        if limit <= 0 or not visibility_clauses(viewer):
            return []
        await self._ensure()
        recs, _next = await self._client.scroll(
            self._collection,
            scroll_filter=self._filter(viewer),
            limit=limit,
            with_payload=True,
            order_by=qm.OrderBy(key="created_at", direction=qm.Direction.DESC),
        )
        return [Memory.from_payload(r.payload or {}) for r in recs]

    async def count(self) -> int:
        await self._ensure()
        return int((await self._client.count(self._collection, exact=True)).count)

    async def close(self) -> None:
        await self._client.close()


def open_store(
    path: str | os.PathLike[str] | None,
    url: str | None,
    embedder: Embedder,
    *,
    api_key: str | None = None,
    timeout: int = 10,
    **options: Any,
) -> MemoryStore:
    """The configured store: a Qdrant server when `url` is set, else the embedded engine at `path`.

    `options` (mode, rerank, candidates, dup_threshold) tune search; the defaults are the measured best.
    Opening is lazy: the engine starts on the first call, so this never blocks.
    """
    if url:
        from qdrant_client import AsyncQdrantClient

        client = AsyncQdrantClient(url=url, api_key=api_key or None, timeout=timeout)
        return QdrantMemoryStore(client, embedder, **options)
    if not path:
        raise ValueError("memory store needs a path (embedded) or a url (Qdrant server)")
    return EdgeMemoryStore(path, embedder, **options)
