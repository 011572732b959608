"""Test doubles shared by the test suite.

Both work across processes, so that a test can share them with a server
process (the contract suite's ``http`` deployment): a :class:`SharedClock`
keeps its time in a file, a :class:`HashEmbedder` may log the texts it embeds
to one.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

import hivemem

_WORD = re.compile(r"\w+")
_SECONDS = struct.Struct("<d")


class SharedClock(hivemem.ManualClock):
    """A :class:`hivemem.ManualClock` whose time lives in a file, the same for every process that opens it.

    Args:
        path: The clock's file; created (at ``start``) if missing, else its time is kept.
        start: Initial time in seconds since the epoch, for a new file.
    """

    def __init__(self, path: Path, start: float = 1_700_000_000.0) -> None:
        super().__init__(start)
        self.path = path
        if not path.exists():
            path.write_bytes(_SECONDS.pack(start))
        with path.open("r+b") as f:
            self._map = mmap.mmap(f.fileno(), _SECONDS.size)

    def now(self) -> float:
        """The time last set by any process."""
        seconds: float = _SECONDS.unpack_from(self._map)[0]
        return seconds

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` for every process (one process advances it)."""
        _SECONDS.pack_into(self._map, 0, self.now() + seconds)


class HashEmbedder:
    """A deterministic, model-free :class:`hivemem.Embedder` for tests.

    Each text becomes a bag of its lowercase words (``\\w+``), every word hashed
    with sha256 (stable across processes, unlike ``hash()``) into one of ``dim``
    buckets; the counts are L2-normalised, so texts sharing words have a
    positive cosine and texts sharing none have cosine 0. A text without words
    stays the zero vector.

    Args:
        name: Model id stored next to the vectors.
        dim: Vector width.
        log: A file every embedded text is appended to (one JSON string a line),
            shared by the HashEmbedders of several processes; None keeps the
            texts in memory.
    """

    def __init__(self, name: str = "hash-test", dim: int = 64, log: Path | None = None) -> None:
        self._name = name
        self._dim = dim
        self.log = log
        self._lock = threading.Lock()
        self._texts: list[str] = []

    @property
    def name(self) -> str:
        """Model id stored next to the vectors."""
        return self._name

    @property
    def dim(self) -> int:
        """Vector width."""
        return self._dim

    @property
    def texts_embedded(self) -> list[str]:
        """Every text passed to :meth:`embed` (by any process sharing the log), in call order.

        A test checks with it that the content-hash cache avoids re-embedding.
        """
        if self.log is None:
            return list(self._texts)
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

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
            if self.log is None:
                self._texts.extend(items)
            else:
                with self.log.open("a") as f:  # one write per call: appends of processes do not interleave
                    f.write("".join(json.dumps(text) + "\n" for text in items))
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            out[i] = self.vector(text)
        return out
