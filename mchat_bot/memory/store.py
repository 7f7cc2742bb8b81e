"""Memory store on Qdrant: embedded in-process on disk (qdrant-edge) by default, a Qdrant server by URL.

Visibility is enforced inside the engine's query (payload filter), never after the fact, so a memory
the viewer may not see can never reach a prompt. Superseded memories (``valid_until`` set) are left out
by the same filter unless asked for.

Search (measured in bench/memory_quality.py, see docs/architecture.md): hybrid inside the engine, a
dense prefetch (e5 cosine) and a sparse BM25 prefetch over Korean-aware tokens fused by weighted RRF,
then one cheap tie-break inside the retrieved list: when two results are near-duplicates that differ in
a value (a number, a date, a version), the newer takes the better rank. That is what a changed fact
looks like; chat lines that merely resemble each other keep the engine's order, and nothing from below
the list is pulled in. Facts updated through the bot are already marked superseded and filtered out.
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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

import numpy as np
import structlog

from mchat_bot.memory import sparse
from mchat_bot.memory.embedder import Embedder

log = structlog.get_logger(__name__)

Scope = Literal["channel", "user", "team"]
SCOPES: tuple[Scope, ...] = ("channel", "user", "team")
SearchMode = Literal["dense", "hybrid"]
Rerank = Literal["off", "values", "all", "swap", "values-swap"]
SparseQuery = tuple[list[int], list[float]]

MESSAGE = "message"  # the category of a channel message in the message index (knowledge/)
DENSE = "dense"
SPARSE = "bigram"  # name of the bigram sparse vector (kept from the first layout)
SPARSE_NAMES: dict[str, str] = {"mixed": "mixed", "bigram": "bigram", "kiwi": "kiwi"}
_ID_NS = uuid.UUID("6f1c2a4e-5b7d-5c1e-9a3f-0d8e7b6a5c40")  # fixed: point ids must map the same forever
_KEYWORD_FIELDS = ("scope", "team_id", "channel_id", "user_id", "memory_id")
_FLOAT_FIELDS = ("created_at", "valid_until")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# The measured defaults (bench/memory_quality.py): see docs/architecture.md for the table.
DEFAULT_MODE: SearchMode = "hybrid"
DEFAULT_TOKENIZER: sparse.Tokenizer = "mixed"
DEFAULT_WEIGHTS = (1.0, 1.0)  # RRF weights: dense, sparse
FILTER_CACHE = 1024  # viewers whose search filter an embedded store keeps built
DEFAULT_CANDIDATES = 1  # the tie-break reorders the retrieved list only; it never pulls in lower items
DEFAULT_RERANK: Rerank = "values"


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
    """One remembered fact and where it came from. Times are epoch seconds.

    Validity (in the spirit of Graphiti): a fact holds from ``valid_from`` (0 = ``created_at``) until
    ``valid_until`` (0 = still valid). When a newer memory updates this one, ``valid_until`` is set to the
    newer one's time, ``superseded_by`` names it, and the newer one's ``replaces`` names this one.
    """

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
    valid_from: float = 0.0
    valid_until: float = 0.0
    superseded_by: str = ""
    body: str = ""  # what is shown when ``text`` (what is indexed) carries context; "" = ``text``

    @property
    def current(self) -> bool:
        return self.valid_until <= 0

    @property
    def is_message(self) -> bool:
        """A learning channel's post in the message index, not a curated memory."""
        return self.category == MESSAGE

    @property
    def shown(self) -> str:
        """The text to show a user: the message itself, never the context it was indexed with."""
        return self.body or self.text

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["memory_id"] = payload.pop("id")
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Memory:
        data = {k: v for k, v in payload.items() if k in _MEMORY_FIELDS}
        data["id"] = payload["memory_id"]
        return cls(**data)


_MEMORY_FIELDS = frozenset(f.name for f in fields(Memory))  # what a payload may set


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks, from where: decides which memories are visible.

    ``direct``: the asker is alone with the bot (a 1:1 DM). There is no team in a DM, so there the
    author sees all of their personal memories, of every team.
    ``guest``: a guest account, which sees the channel memories of its channels and its own personal
    memories, never the team's.
    """

    team_id: str
    channel_id: str
    user_id: str
    direct: bool = False
    guest: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result; `score` is the cosine similarity between query and memory."""

    memory: Memory
    score: float


class MemoryStore(Protocol):
    """What the rest of the bot may call on a store; both engines implement all of it."""

    embedder: Embedder

    async def add(self, memory: Memory) -> None: ...
    async def add_many(self, memories: Sequence[Memory]) -> None: ...
    async def add_embedded(self, items: list[tuple[Memory, list[float]]]) -> None: ...
    async def search(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]: ...
    async def search_all(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]: ...
    async def get(self, memory_id: str) -> Memory | None: ...
    async def get_many(self, memory_ids: Sequence[str]) -> dict[str, Memory]: ...
    async def delete(self, memory_id: str) -> bool: ...
    async def delete_many(self, memory_ids: Sequence[str]) -> None: ...
    async def supersede(self, old_id: str, new_id: str, at: float) -> bool: ...
    async def set_fields(self, memory_id: str, values: dict[str, Any]) -> bool: ...
    async def recent(self, viewer: Viewer, limit: int = 10, *, current_only: bool = True) -> list[Memory]: ...
    async def recent_all(self, viewer: Viewer, limit: int = 10) -> list[Memory]: ...
    def scan(self, selection: Selection, batch: int = 256) -> AsyncIterator[Memory]: ...
    async def count(self) -> int: ...
    async def count_by_scope(self) -> dict[str, int]: ...
    async def close(self) -> None: ...


Clause = dict[str, str | tuple[str, ...]]


def visibility_clauses(viewer: Viewer) -> list[Clause]:
    """The OR-ed AND-clauses a viewer may see (a tuple value = any of); empty ids never widen access.

    - channel memories of this channel;
    - the asker's personal memories made in this team or in a DM (team ""); in a 1:1 DM, of any team;
    - team memories of this team (none in a DM or group DM: they have no team; none for a guest).
    """
    clauses: list[Clause] = []
    if viewer.channel_id:
        clauses.append({"scope": "channel", "channel_id": viewer.channel_id})
    if viewer.user_id:
        if viewer.direct:
            clauses.append({"scope": "user", "user_id": viewer.user_id})
        else:
            teams = (viewer.team_id, "") if viewer.team_id else ("",)
            clauses.append({"scope": "user", "user_id": viewer.user_id, "team_id": teams})
    if viewer.team_id and not viewer.guest:
        clauses.append({"scope": "team", "team_id": viewer.team_id})
    return clauses


def is_visible(memory: Memory, viewer: Viewer) -> bool:
    """The same rule as the engine filter, in Python (for tests and checks, never for enforcement)."""
    payload = memory.to_payload()

    def ok(key: str, want: str | tuple[str, ...]) -> bool:
        return payload[key] in want if isinstance(want, tuple) else payload[key] == want

    return any(all(ok(k, v) for k, v in c.items()) for c in visibility_clauses(viewer))


@dataclass(frozen=True, slots=True)
class Selection:
    """An administrator's selection (no viewer): equality on the given ids; empty = any."""

    channel_id: str = ""
    user_id: str = ""
    team_id: str = ""
    scope: str = ""
    include_superseded: bool = True

    def equals(self) -> dict[str, str]:
        pairs = {
            "channel_id": self.channel_id,
            "user_id": self.user_id,
            "team_id": self.team_id,
            "scope": self.scope,
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass(slots=True)
class _Candidate:
    memory: Memory
    vector: np.ndarray
    score: float = 0.0


async def restore_previous(store: MemoryStore, forgotten: Memory) -> bool:
    """Forgetting the newest version of a fact makes the version it replaced current again."""
    if not forgotten.replaces:
        return False
    old = await store.get(forgotten.replaces)
    if old is None or old.superseded_by != forgotten.id:
        return False
    await store.set_fields(old.id, {"valid_until": 0.0, "superseded_by": "", "updated_at": time.time()})
    log.info("memory.restored", memory_id=old.id)
    return True


def recency_rerank(
    cands: list[_Candidate],
    threshold: float,
    margin: float = 1.0,
    *,
    values_only: bool = False,
    subject_min: float = 0.0,
    swap: bool = False,
) -> list[_Candidate]:
    """Move the newer of two near-duplicate candidates just above the older one.

    Near-duplicate: cosine between the two memories >= threshold (the same fact said again, or a fact
    that changed), and the newer one's query score within `margin` of the older one's. With
    `values_only`, the two must also differ in a value (number, date, version): a changed fact, not
    two chat lines that resemble each other. Walking from the top, the item at each rank is replaced by
    its newest near-duplicate found lower down; everything else keeps its relative order. Not
    transitive through clusters, so a loose match cannot drag unrelated memories up.
    """
    if len(cands) < 2:
        return cands
    out = list(cands)
    mat = np.stack([c.vector for c in out])
    sims = mat @ mat.T
    vals = [sparse.values(c.memory.text) for c in cands] if values_only else []
    subj = [sparse.subject_bigrams(c.memory.text) for c in cands] if subject_min > 0 else []
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
                and (not values_only or vals[cur] != vals[other])
                and (subject_min <= 0 or sparse.jaccard(subj[cur], subj[other]) >= subject_min)
                and (best < 0 or cands[other].memory.created_at > cands[pos[best]].memory.created_at)
            ):
                best = j
        if best < 0:
            k += 1
            continue
        if swap:  # the newer version takes the older one's rank; nothing else moves
            pos[k], pos[best] = pos[best], pos[k]
            out[k], out[best] = out[best], out[k]
        else:
            pos.insert(k, pos.pop(best))
            out.insert(k, out.pop(best))
    return out


def _unit(vec: Sequence[float]) -> np.ndarray:
    arr = np.asarray(vec, dtype=np.float32)
    norm = float(np.linalg.norm(arr))
    return arr / norm if norm > 0 else arr


def collection_name(embedder: Embedder, kind: str = "memories") -> str:
    """One collection per kind and embedder: vectors of different models must never be compared,
    and channel messages (``kind="messages"``) are kept apart from curated memories."""
    slug = re.sub(r"[^a-z0-9]+", "_", embedder.name.lower()).strip("_")
    return f"{kind}_{slug}"


class _BaseStore:
    """Search logic shared by both engines; subclasses do the engine calls."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        mode: SearchMode = DEFAULT_MODE,
        tokenizer: sparse.Tokenizer = DEFAULT_TOKENIZER,
        weights: tuple[float, float] = DEFAULT_WEIGHTS,
        rerank: Rerank | bool = DEFAULT_RERANK,
        candidates: int = DEFAULT_CANDIDATES,
        dup_threshold: float | None = None,
        dup_margin: float = 1.0,
        subject_min: float = 0.0,
        kind: str = "memories",
    ) -> None:
        if tokenizer not in sparse.TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {sparse.TOKENIZERS}, got {tokenizer!r}")
        self.embedder = embedder
        self.kind = kind
        self.mode: SearchMode = mode
        self.tokenizer: sparse.Tokenizer = tokenizer
        self.weights = weights
        self.rerank: Rerank = ("all" if rerank else "off") if isinstance(rerank, bool) else rerank
        self.candidates = candidates
        self.dup_margin = dup_margin
        self.subject_min = subject_min
        self.dup_threshold = (
            dup_threshold if dup_threshold is not None else float(getattr(embedder, "dup_threshold", 0.93))
        )

    @property
    def sparse_name(self) -> str:
        return SPARSE_NAMES[self.tokenizer]

    # -- engine hooks -----------------------------------------------------------------------------
    async def _upsert(self, items: list[tuple[Memory, list[float]]]) -> None:
        raise NotImplementedError

    async def _query(
        self, dense: list[float], sparse_q: SparseQuery | None, viewer: Viewer, k: int, current_only: bool
    ) -> list[_Candidate]:
        raise NotImplementedError

    async def set_fields(self, memory_id: str, values: dict[str, Any]) -> bool:
        """Set payload fields of one memory; False when it does not exist."""
        raise NotImplementedError

    async def scan(self, selection: Selection, batch: int = 256) -> AsyncIterator[Memory]:
        """Every memory matching an administrator's selection, in engine order (no viewer)."""
        raise NotImplementedError
        yield  # pragma: no cover

    # -- shared -----------------------------------------------------------------------------------
    def sparse_document(self, text: str) -> SparseQuery:
        return sparse.document_vector(text, self.tokenizer)

    def _keyword_vectors(self, models: Any, records: Sequence[Any]) -> list[Any]:
        """``PointVectors`` giving scrolled records the configured tokenizer's keyword vector, from
        their stored text (re-indexing; qdrant-edge and qdrant-client models build them alike)."""
        out = []
        for r in records:
            idx, val = self.sparse_document(str((r.payload or {}).get("text", "")))
            if idx:
                vec = {self.sparse_name: models.SparseVector(indices=idx, values=val)}
                out.append(models.PointVectors(id=r.id, vector=vec))
        return out

    async def add(self, memory: Memory) -> None:
        await self.add_many([memory])

    async def add_many(self, memories: Sequence[Memory]) -> None:
        """Embed and upsert several memories in one engine call (same as `add` for each)."""
        if not memories:
            return
        vectors = await asyncio.to_thread(self.embedder.embed_documents, [m.text for m in memories])
        await self.add_embedded(list(zip(memories, vectors, strict=True)))

    async def add_embedded(self, items: list[tuple[Memory, list[float]]]) -> None:
        """Upsert memories whose vectors are already computed (imports time embedding apart)."""
        if items:
            await self._upsert(items)

    async def search(
        self, query: str, viewer: Viewer, limit: int = 5, *, current_only: bool = True
    ) -> list[Hit]:
        """The best memories for `query` the viewer may see; current facts only unless told otherwise."""
        if limit <= 0 or not query.strip() or not visibility_clauses(viewer):
            return []
        qvec, sparse_q = await asyncio.to_thread(self.query_vectors, query)
        return await self.search_vectors(qvec, sparse_q, viewer, limit, current_only=current_only)

    def query_vectors(self, query: str) -> tuple[list[float], SparseQuery | None]:
        """The query's dense vector and (hybrid mode) keyword vector, made in one thread hop."""
        qvec = self.embedder.embed_query(query)
        return qvec, self.sparse_query(query) if self.mode == "hybrid" else None

    async def get(self, memory_id: str) -> Memory | None:
        return (await self.get_many([memory_id])).get(memory_id)

    async def get_many(self, memory_ids: Sequence[str]) -> dict[str, Memory]:
        """Those of the memories that exist, by id, in one engine call (not one per id)."""
        raise NotImplementedError

    async def search_all(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]:
        """Like `search`, superseded memories included (history, supersession candidates)."""
        return await self.search(query, viewer, limit, current_only=False)

    def sparse_query(self, query: str) -> SparseQuery | None:
        idx, val = sparse.query_vector(query, self.tokenizer)
        return (idx, val) if idx else None

    async def search_vectors(
        self,
        qvec: list[float],
        sparse_q: SparseQuery | None,
        viewer: Viewer,
        limit: int,
        *,
        current_only: bool = True,
    ) -> list[Hit]:
        """Search with a query already embedded (the bench embeds each query once for every variant)."""
        if limit <= 0 or not visibility_clauses(viewer):
            return []
        if self.mode != "hybrid":
            sparse_q = None
        k = limit * self.candidates if self.rerank != "off" else limit
        cands = await self._query(qvec, sparse_q, viewer, k, current_only)
        q = _unit(qvec)
        for c in cands:
            c.score = float(c.vector @ q)
        if self.rerank != "off":
            cands = recency_rerank(
                cands,
                self.dup_threshold,
                self.dup_margin,
                values_only=self.rerank.startswith("values"),
                subject_min=self.subject_min,
                swap=self.rerank.endswith("swap"),
            )
        return [Hit(c.memory, c.score) for c in cands[:limit]]

    async def supersede(self, old_id: str, new_id: str, at: float) -> bool:
        """Mark `old_id` no longer valid from `at`, superseded by `new_id`."""
        return await self.set_fields(old_id, {"valid_until": at, "superseded_by": new_id, "updated_at": at})

    async def recent(self, viewer: Viewer, limit: int = 10, *, current_only: bool = True) -> list[Memory]:
        raise NotImplementedError

    async def recent_all(self, viewer: Viewer, limit: int = 10) -> list[Memory]:
        """Newest first, superseded versions included (resolving short ids for `history`)."""
        return await self.recent(viewer, limit, current_only=False)

    async def select(self, selection: Selection, limit: int = 0) -> list[Memory]:
        """Memories matching a selection, newest first (`limit` 0 = all)."""
        out = [m async for m in self.scan(selection)]
        out.sort(key=lambda m: m.created_at, reverse=True)
        return out[:limit] if limit else out


class _FilterKit(Protocol):
    def eq(self, key: str, value: str | tuple[str, ...]) -> Any: ...
    def gt(self, key: str, value: float) -> Any: ...
    def build(
        self,
        must: list[Any] | None = None,
        should: list[Any] | None = None,
        must_not: list[Any] | None = None,
    ) -> Any: ...


def _viewer_filter(kit: _FilterKit, viewer: Viewer, current_only: bool) -> Any:
    should = [kit.build(must=[kit.eq(k, v) for k, v in c.items()]) for c in visibility_clauses(viewer)]
    # "valid_until > 0" is false for points without the field (written before supersession existed)
    must_not = [kit.gt("valid_until", 0.0)] if current_only else None
    return kit.build(should=should, must_not=must_not)


def _selection_filter(kit: _FilterKit, selection: Selection) -> Any:
    must = [kit.eq(k, v) for k, v in selection.equals().items()]
    must_not = None if selection.include_superseded else [kit.gt("valid_until", 0.0)]
    return kit.build(must=must or None, must_not=must_not)


# ================================================================================================
# Embedded: qdrant-edge (in-process Qdrant shard on disk)
# ================================================================================================


class _EdgeKit:
    def __init__(self) -> None:
        import qdrant_edge as qe

        self.qe = qe

    def eq(self, key: str, value: str | tuple[str, ...]) -> Any:
        qe = self.qe
        match = qe.MatchAny(list(value)) if isinstance(value, tuple) else qe.MatchValue(value)
        return qe.FieldCondition(key=key, match=match)

    def gt(self, key: str, value: float) -> Any:
        return self.qe.FieldCondition(key=key, range=self.qe.RangeFloat(gt=value))

    def build(
        self,
        must: list[Any] | None = None,
        should: list[Any] | None = None,
        must_not: list[Any] | None = None,
    ) -> Any:
        return self.qe.Filter(must=must, should=should, must_not=must_not)


class EdgeMemoryStore(_BaseStore):
    """Qdrant Edge shard at `path/<collection>`; WAL-backed, so writes survive a crash or restart.

    The shard is used from worker threads (asyncio.to_thread) under one lock: its thread safety across
    Python threads is not documented, and one writer at a time costs nothing at chat rates.
    """

    def __init__(self, path: str | os.PathLike[str], embedder: Embedder, **kwargs: Any) -> None:
        super().__init__(embedder, **kwargs)
        self._dir = os.path.join(os.fspath(path), collection_name(embedder, self.kind))
        self._shard: Any = None
        self._lock = threading.Lock()
        self._open_lock = asyncio.Lock()
        self._kit = _EdgeKit()
        self._filters: dict[tuple[Viewer, bool], Any] = {}  # oldest first

    async def _run(self, fn: Any, *args: Any, then: Callable[[Any], Any] | None = None) -> Any:
        """``fn(shard, *args)`` in a worker thread under the shard's lock; ``then`` turns its answer
        into ours in the same thread, after the lock (the engine's points into memories, off the loop)."""
        if self._shard is None:
            async with self._open_lock:
                if self._shard is None:
                    self._shard = await asyncio.to_thread(self._open)

        def call() -> Any:
            with self._lock:
                if self._shard is None:
                    raise RuntimeError("memory store is closed")
                out = fn(self._shard, *args)
            return out if then is None else then(out)

        return await asyncio.to_thread(call)

    def _open(self) -> Any:
        import qdrant_edge as qe

        dim = self.embedder.dim
        if self.mode == "hybrid" and self.tokenizer == "kiwi":
            sparse.morphemes("warm up")  # loads the analyzer (1-2 s) here, off the first search
        if os.path.exists(os.path.join(self._dir, "edge_config.json")):
            shard = qe.EdgeShard.load(self._dir)
            with open(os.path.join(self._dir, "edge_config.json"), encoding="utf-8") as f:
                config_text = f.read()
            for name in SPARSE_NAMES.values():  # stores from before a tokenizer existed lack its vector
                if f'"{name}"' not in config_text:
                    shard.update(qe.UpdateOperation.create_sparse_vector(name, modifier=qe.Modifier.Idf))
                    log.info("memory_store_sparse_added", name=name)
            self._reindex_sparse(shard)
            try:
                shard.update(qe.UpdateOperation.create_field_index("valid_until", qe.PayloadSchemaType.Float))
            except Exception:
                pass
            log.info("memory_store_opened", engine="edge", path=self._dir, points=shard.info().points_count)
            return shard
        os.makedirs(self._dir, exist_ok=True)
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={
                name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf) for name in SPARSE_NAMES.values()
            },
        )
        shard = qe.EdgeShard.create(self._dir, config)
        for key in _KEYWORD_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
        for key in _FLOAT_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Float))
        log.info("memory_store_created", engine="edge", path=self._dir, dim=dim)
        return shard

    def _reindex_sparse(self, shard: Any) -> None:
        """Give every point the keyword vector of the configured tokenizer if it was indexed with another.

        A point carries only the vector of the tokenizer it was written with; after a change of
        tokenizer (kiwi was the default before "mixed") the keyword half of the hybrid search would
        miss every older memory. Text is in the payload, so this is tokenizing only: ~100k points/min.
        """
        import qdrant_edge as qe

        lacking = qe.Filter(must_not=[qe.HasVectorCondition(self.sparse_name)])
        offset: Any = None
        done = 0
        while True:
            req = qe.ScrollRequest(offset=offset, limit=512, filter=lacking, with_payload=True)
            recs, offset = shard.scroll(req)
            updates = self._keyword_vectors(qe, recs)
            if updates:
                shard.update(qe.UpdateOperation.update_vectors(updates))
                done += len(updates)
            if offset is None or not recs:
                break
        if done:
            log.info("memory_store_sparse_reindexed", tokenizer=self.tokenizer, points=done)

    async def _upsert(self, items: list[tuple[Memory, list[float]]]) -> None:
        import qdrant_edge as qe

        sparse_docs = await asyncio.to_thread(lambda: [self.sparse_document(m.text) for m, _ in items])
        points = []
        for (mem, vec), (idx, val) in zip(items, sparse_docs, strict=True):
            vectors: dict[str, Any] = {DENSE: vec}
            if idx:
                vectors[self.sparse_name] = qe.SparseVector(indices=idx, values=val)
            points.append(qe.Point(id=point_id(mem.id), vector=vectors, payload=mem.to_payload()))
        await self._run(lambda s: s.update(qe.UpdateOperation.upsert_points(points)))

    async def _query(
        self, dense: list[float], sparse_q: SparseQuery | None, viewer: Viewer, k: int, current_only: bool
    ) -> list[_Candidate]:
        import qdrant_edge as qe

        flt = self._filters.get((viewer, current_only))
        if flt is None:  # the same askers ask again: their filter is built once
            flt = self._filters[(viewer, current_only)] = _viewer_filter(self._kit, viewer, current_only)
            while len(self._filters) > FILTER_CACHE:
                del self._filters[next(iter(self._filters))]
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
                    qe.Prefetch(limit=k, query=qe.Query.Nearest(sv, using=self.sparse_name), filter=flt),
                ],
                query=qe.Fusion.Rrf(k=60, weights=list(self.weights)),  # type: ignore[arg-type]
                filter=flt,
                with_payload=True,
                with_vector=[DENSE],
            )
        found: list[_Candidate] = await self._run(
            lambda s: s.query(req), then=lambda points: [_edge_candidate(p) for p in points]
        )
        return found

    async def get_many(self, memory_ids: Sequence[str]) -> dict[str, Memory]:
        if not memory_ids:
            return {}
        ids = [point_id(m) for m in dict.fromkeys(memory_ids)]
        recs = await self._run(lambda s: s.retrieve(ids, True, False))
        found = (Memory.from_payload(r.payload) for r in recs)
        return {m.id: m for m in found}

    async def delete(self, memory_id: str) -> bool:
        import qdrant_edge as qe

        pid = point_id(memory_id)

        def op(s: Any) -> bool:
            if not s.retrieve([pid], False, False):
                return False
            s.update(qe.UpdateOperation.delete_points([pid]))
            return True

        return bool(await self._run(op))

    async def delete_many(self, memory_ids: Sequence[str]) -> None:
        """Delete these ids in one engine call; ids that are not there are no error."""
        import qdrant_edge as qe

        if memory_ids:
            pids: list[Any] = [point_id(i) for i in memory_ids]
            await self._run(lambda s: s.update(qe.UpdateOperation.delete_points(pids)))

    async def set_fields(self, memory_id: str, values: dict[str, Any]) -> bool:
        import qdrant_edge as qe

        pid = point_id(memory_id)

        def op(s: Any) -> bool:
            if not s.retrieve([pid], False, False):
                return False
            s.update(qe.UpdateOperation.set_payload([pid], values))
            return True

        return bool(await self._run(op))

    async def recent(self, viewer: Viewer, limit: int = 10, *, current_only: bool = True) -> list[Memory]:
        import qdrant_edge as qe

        if limit <= 0 or not visibility_clauses(viewer):
            return []
        req = qe.ScrollRequest(
            limit=limit,
            filter=_viewer_filter(_EdgeKit(), viewer, current_only),
            with_payload=True,
            order_by=qe.OrderBy("created_at", qe.Direction.Desc),
        )
        recs, _next = await self._run(lambda s: s.scroll(req))
        return [Memory.from_payload(r.payload) for r in recs]

    async def scan(self, selection: Selection, batch: int = 256) -> AsyncIterator[Memory]:
        import qdrant_edge as qe

        flt = _selection_filter(_EdgeKit(), selection)
        offset: Any = None
        while True:
            req = qe.ScrollRequest(offset=offset, limit=batch, filter=flt, with_payload=True)
            recs, offset = await self._run(lambda s, r=req: s.scroll(r))
            for r in recs:
                yield Memory.from_payload(r.payload)
            if offset is None or not recs:
                return

    async def optimize(self) -> None:
        """Build the vector index now (after a bulk import): search at 100k drops from ~25 ms to ~5 ms p95."""
        await self._run(lambda s: s.optimize())

    async def count(self) -> int:
        import qdrant_edge as qe

        return int(await self._run(lambda s: s.count(qe.CountRequest(exact=True))))

    async def count_by_scope(self) -> dict[str, int]:
        """Memories per scope, current and superseded alike (the memories-by-scope gauge)."""
        import qdrant_edge as qe

        kit = _EdgeKit()
        out: dict[str, int] = {}
        for scope in SCOPES:
            request = qe.CountRequest(filter=kit.build(must=[kit.eq("scope", scope)]), exact=True)
            out[scope] = int(await self._run(lambda s, r=request: s.count(r)))
        return out

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
    vec = p.vector  # a property: each read converts the engine's vectors anew
    return _Candidate(
        Memory.from_payload(p.payload), _unit(vec[DENSE] if isinstance(vec, dict) else vec), p.score
    )


# ================================================================================================
# Qdrant server (or qdrant-client local mode, used by tests as a stand-in)
# ================================================================================================


class _ClientKit:
    def __init__(self) -> None:
        from qdrant_client import models as qm

        self.qm = qm

    def eq(self, key: str, value: str | tuple[str, ...]) -> Any:
        qm = self.qm
        match = qm.MatchAny(any=list(value)) if isinstance(value, tuple) else qm.MatchValue(value=value)
        return qm.FieldCondition(key=key, match=match)

    def gt(self, key: str, value: float) -> Any:
        return self.qm.FieldCondition(key=key, range=self.qm.Range(gt=value))

    def build(
        self,
        must: list[Any] | None = None,
        should: list[Any] | None = None,
        must_not: list[Any] | None = None,
    ) -> Any:
        return self.qm.Filter(must=must, should=should, must_not=must_not)


class QdrantMemoryStore(_BaseStore):
    """A collection on a Qdrant server through `AsyncQdrantClient` (`url=`), or its local mode (`path=`).

    Every call carries the client's timeout; nothing here blocks the event loop on a server. (The local
    mode runs in-process and is only a stand-in for tests.)
    """

    def __init__(self, client: Any, embedder: Embedder, **kwargs: Any) -> None:
        super().__init__(embedder, **kwargs)
        self._client = client
        self._collection = collection_name(embedder, self.kind)
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
                    sparse_vectors_config={
                        name: qm.SparseVectorParams(modifier=qm.Modifier.IDF)
                        for name in SPARSE_NAMES.values()
                    },
                )
                with warnings.catch_warnings():  # local mode warns that indexes are no-ops there
                    warnings.simplefilter("ignore")
                    for key in _KEYWORD_FIELDS:
                        await self._client.create_payload_index(
                            self._collection, key, qm.PayloadSchemaType.KEYWORD
                        )
                    for key in _FLOAT_FIELDS:
                        await self._client.create_payload_index(
                            self._collection, key, qm.PayloadSchemaType.FLOAT
                        )
                log.info("memory_store_created", engine="qdrant", collection=self._collection, dim=dim)
            else:
                await self._reindex_sparse()
            self._ready = True

    async def _reindex_sparse(self) -> None:
        """As the embedded store does on open: add the configured tokenizer's keyword vector to the
        collection if it lacks it, and give it to every point written with another tokenizer."""
        from qdrant_client import models as qm

        info = await self._client.get_collection(self._collection)
        if self.sparse_name not in (info.config.params.sparse_vectors or {}):
            await self._client.update_collection(
                self._collection,
                sparse_vectors_config={self.sparse_name: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            )
        lacking = qm.Filter(must_not=[qm.HasVectorCondition(has_vector=self.sparse_name)])
        offset: Any = None
        done = 0
        while True:
            recs, offset = await self._client.scroll(
                self._collection, scroll_filter=lacking, limit=512, offset=offset, with_payload=True
            )
            updates = self._keyword_vectors(qm, recs)
            if updates:
                await self._client.update_vectors(self._collection, points=updates)
                done += len(updates)
            if offset is None or not recs:
                break
        if done:
            log.info("memory_store_sparse_reindexed", tokenizer=self.tokenizer, points=done)

    async def _upsert(self, items: list[tuple[Memory, list[float]]]) -> None:
        from qdrant_client import models as qm

        await self._ensure()
        sparse_docs = await asyncio.to_thread(lambda: [self.sparse_document(m.text) for m, _ in items])
        points = []
        for (mem, vec), (idx, val) in zip(items, sparse_docs, strict=True):
            vectors: dict[str, Any] = {DENSE: vec}
            if idx:
                vectors[self.sparse_name] = qm.SparseVector(indices=idx, values=val)
            points.append(qm.PointStruct(id=point_id(mem.id), vector=vectors, payload=mem.to_payload()))
        await self._client.upsert(self._collection, points=points, wait=True)

    async def _query(
        self, dense: list[float], sparse_q: SparseQuery | None, viewer: Viewer, k: int, current_only: bool
    ) -> list[_Candidate]:
        from qdrant_client import models as qm

        await self._ensure()
        flt = _viewer_filter(_ClientKit(), viewer, current_only)
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
                    qm.Prefetch(query=sv, using=self.sparse_name, filter=flt, limit=k),
                ],
                query=qm.RrfQuery(rrf=qm.Rrf(k=60, weights=list(self.weights))),
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

    async def get_many(self, memory_ids: Sequence[str]) -> dict[str, Memory]:
        if not memory_ids:
            return {}
        await self._ensure()
        ids = [point_id(m) for m in dict.fromkeys(memory_ids)]
        recs = await self._client.retrieve(self._collection, ids, with_payload=True)
        found = (Memory.from_payload(r.payload or {}) for r in recs)
        return {m.id: m for m in found}

    async def delete(self, memory_id: str) -> bool:
        from qdrant_client import models as qm

        await self._ensure()
        pid = point_id(memory_id)
        if not await self._client.retrieve(self._collection, [pid], with_payload=False):
            return False
        await self._client.delete(self._collection, qm.PointIdsList(points=[pid]), wait=True)
        return True

    async def delete_many(self, memory_ids: Sequence[str]) -> None:
        """Delete these ids in one call; ids that are not there are no error."""
        from qdrant_client import models as qm

        if memory_ids:
            await self._ensure()
            pids: list[Any] = [point_id(i) for i in memory_ids]
            await self._client.delete(self._collection, qm.PointIdsList(points=pids), wait=True)

    async def set_fields(self, memory_id: str, values: dict[str, Any]) -> bool:
        await self._ensure()
        pid = point_id(memory_id)
        if not await self._client.retrieve(self._collection, [pid], with_payload=False):
            return False
        await self._client.set_payload(self._collection, payload=values, points=[pid], wait=True)
        return True

    async def recent(self, viewer: Viewer, limit: int = 10, *, current_only: bool = True) -> list[Memory]:
        from qdrant_client import models as qm

        if limit <= 0 or not visibility_clauses(viewer):
            return []
        await self._ensure()
        recs, _next = await self._client.scroll(
            self._collection,
            scroll_filter=_viewer_filter(_ClientKit(), viewer, current_only),
            limit=limit,
            with_payload=True,
            order_by=qm.OrderBy(key="created_at", direction=qm.Direction.DESC),
        )
        return [Memory.from_payload(r.payload or {}) for r in recs]

    async def scan(self, selection: Selection, batch: int = 256) -> AsyncIterator[Memory]:
        await self._ensure()
        flt = _selection_filter(_ClientKit(), selection)
        offset: Any = None
        while True:
            recs, offset = await self._client.scroll(
                self._collection, scroll_filter=flt, limit=batch, offset=offset, with_payload=True
            )
            for r in recs:
                yield Memory.from_payload(r.payload or {})
            if offset is None or not recs:
                return

    async def count(self) -> int:
        await self._ensure()
        return int((await self._client.count(self._collection, exact=True)).count)

    async def count_by_scope(self) -> dict[str, int]:
        """Memories per scope, current and superseded alike (the memories-by-scope gauge)."""
        await self._ensure()
        kit = _ClientKit()
        out: dict[str, int] = {}
        for scope in SCOPES:
            flt = kit.build(must=[kit.eq("scope", scope)])
            out[scope] = int((await self._client.count(self._collection, count_filter=flt, exact=True)).count)
        return out

    async def close(self) -> None:
        await self._client.close()


AnyStore = EdgeMemoryStore | QdrantMemoryStore


def open_store(
    path: str | os.PathLike[str] | None,
    url: str | None,
    embedder: Embedder,
    *,
    api_key: str | None = None,
    timeout: int = 10,
    **options: Any,
) -> AnyStore:
    """The configured store: a Qdrant server when `url` is set, else the embedded engine at `path`.

    `options` (mode, tokenizer, weights, rerank, candidates, dup_threshold) tune search; the defaults
    are the measured best. Opening is lazy: the engine starts on the first call, so this never blocks.
    """
    if url:
        from qdrant_client import AsyncQdrantClient

        client = AsyncQdrantClient(url=url, api_key=api_key or None, timeout=timeout)
        return QdrantMemoryStore(client, embedder, **options)
    if not path:
        raise ValueError("memory store needs a path (embedded) or a url (Qdrant server)")
    return EdgeMemoryStore(path, embedder, **options)
