"""Test doubles shared by the test suite."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """A deterministic, model-free :class:`hivemem.Embedder` for tests.

    Each text becomes a bag of its lowercase words (``\\w+``), every word hashed
    with sha256 (stable across processes, unlike ``hash()``) into one of ``dim``
    buckets; the counts are L2-normalised, so texts sharing words have a
    positive cosine and texts sharing none have cosine 0. A text without words
    stays the zero vector.

    Attributes:
        texts_embedded: Every text passed to :meth:`embed`, in call order, so a
            test can check that the content-hash cache avoids re-embedding.
        calls: How many times :meth:`embed` ran.
    """

    def __init__(self, name: str = "hash-test", dim: int = 64) -> None:
        self._name = name
        self._dim = dim
        self._lock = threading.Lock()
        self.texts_embedded: list[str] = []
        self.calls = 0

    @property
    def name(self) -> str:
        """Model id stored next to the vectors."""
        return self._name

    @property
    def dim(self) -> int:
        """Vector width."""
        return self._dim

    def vector(self, text: str) -> npt.NDArray[np.float32]:
        """The vector of one text, without recording the call."""
        out = np.zeros(self._dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.sha256(word.encode("utf-8")).digest()
            out[int.from_bytes(digest[:8], "big") % self._dim] += 1.0
        norm = float(np.linalg.norm(out))
        if norm > 0:
            out /= norm
        return out

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of ``texts`` as a ``(len(texts), dim)`` float32 array."""
        items = list(texts)
        with self._lock:
            self.calls += 1
            self.texts_embedded.extend(items)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            out[i] = self.vector(text)
        return out
