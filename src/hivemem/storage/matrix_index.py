"""An in-process matrix of memory vectors, mirrored from the store.

sqlite-vec's brute-force KNN takes about 50-60 ms over 100k 384-dimension
vectors on a 2-core machine (float, int8 and bit alike), which is over the
recall budget. One matrix-vector product in numpy takes about 6 ms, so the
SQLite backend keeps a copy of the vectors in memory. The database stays the
truth: every write transaction bumps a sequence number, memories carry the
sequence of their last write and deletions leave a row in a log, so the index
catches up with changes made by any connection or process by reading only
what changed since it last looked.

Namespace, kind and tier are kept as small integer codes beside each row so
the most common filters are applied before scoring, not after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
from numpy.typing import NDArray

from hivemem.storage.base import MemoryFilter, ScoredId


class _Codes:
    """Interns strings as small integers."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._codes: dict[str, int] = {}

    def code(self, value: str) -> int:
        found = self._codes.get(value)
        if found is None:
            found = self._codes[value] = len(self.values)
            self.values.append(value)
        return found

    def matching(self, passes: Callable[[str], bool]) -> NDArray[np.int32] | None:
        """Codes of the values that pass, or None when every value does (no need to filter)."""
        codes = [i for i, value in enumerate(self.values) if passes(value)]
        return None if len(codes) == len(self.values) else np.array(codes, dtype=np.int32)


class MatrixIndex:
    """Vectors of live memories by store row id, with exact cosine search.

    Args:
        dim: Vector dimension.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Forget every row; the next refresh reloads from the store."""
        self.seq = -1
        self._size = 0
        self._matrix: NDArray[np.float32] = np.zeros((1024, self.dim), dtype=np.float32)
        self._rowids: NDArray[np.int64] = np.zeros(1024, dtype=np.int64)
        self._codes: NDArray[np.int32] = np.zeros((1024, 3), dtype=np.int32)
        self._ids: list[str] = []
        self._position: dict[int, int] = {}
        self._namespaces = _Codes()
        self._kinds = _Codes()
        self._tiers = _Codes()

    def __len__(self) -> int:
        return self._size

    def remove(self, rowids: Iterable[int]) -> None:
        """Drop rows; unknown row ids are ignored."""
        for rowid in rowids:
            pos = self._position.pop(rowid, None)
            if pos is None:
                continue
            last = self._size - 1
            if pos != last:
                # Keep the matrix dense: move the last row into the hole.
                moved = int(self._rowids[last])
                self._matrix[pos] = self._matrix[last]
                self._rowids[pos] = moved
                self._codes[pos] = self._codes[last]
                self._ids[pos] = self._ids[last]
                self._position[moved] = pos
            self._ids.pop()
            self._size = last

    def upsert(self, rowid: int, memory_id: str, namespace: str, kind: str, tier: str, vector: bytes) -> None:
        """Add a row or replace the row with the same store row id."""
        pos = self._position.get(rowid)
        if pos is None:
            pos = self._size
            if pos == len(self._rowids):
                self._grow()
            self._size += 1
            self._ids.append(memory_id)
            self._position[rowid] = pos
        self._matrix[pos] = np.frombuffer(vector, dtype=np.float32)
        self._rowids[pos] = rowid
        self._ids[pos] = memory_id
        self._codes[pos] = (self._namespaces.code(namespace), self._kinds.code(kind), self._tiers.code(tier))

    def _grow(self) -> None:
        capacity = len(self._rowids) * 2
        self._matrix = np.resize(self._matrix, (capacity, self.dim))
        self._rowids = np.resize(self._rowids, capacity)
        self._codes = np.resize(self._codes, (capacity, 3))

    def search(self, vector: NDArray[np.float32], flt: MemoryFilter, limit: int) -> list[ScoredId]:
        """The ``limit`` rows most similar to ``vector`` among those whose namespace, kind and tier pass ``flt``."""
        n = self._size
        if n == 0:
            return []
        codes = self._codes[:n]
        mask: NDArray[np.bool_] | None = None
        for column, accepted in enumerate(
            (
                self._namespaces.matching(flt.sees_namespace),
                self._kinds.matching(
                    lambda kind: (flt.kinds is None or kind in flt.kinds) and kind not in flt.exclude_kinds
                )
                if flt.kinds is not None or flt.exclude_kinds
                else None,
                self._tiers.matching(flt.tiers.__contains__) if flt.tiers is not None else None,
            )
        ):
            if accepted is not None:
                column_mask = np.isin(codes[:, column], accepted)
                mask = column_mask if mask is None else mask & column_mask
        if mask is None:
            positions = None
            scores = self._matrix[:n] @ vector
        else:
            positions = np.flatnonzero(mask)
            if positions.size == 0:
                return []
            scores = self._matrix[positions] @ vector if positions.size < n else self._matrix[:n] @ vector
            if positions.size == n:
                positions = None
        limit = min(limit, scores.size)
        top = np.argpartition(-scores, limit - 1)[:limit] if limit < scores.size else np.arange(scores.size)
        top = top[np.argsort(-scores[top], kind="stable")]
        rows = top if positions is None else positions[top]
        return [ScoredId(self._ids[int(r)], float(s)) for r, s in zip(rows, scores[top], strict=True)]
