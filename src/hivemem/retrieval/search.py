"""Hybrid recall over a Store: keyword and vector candidates, fused and scored.

Also owns embedding for writes: the same text is never embedded twice, because
vectors are stored by content hash and only unknown hashes go to the embedder.
Embedding happens before the write transaction opens, so the model never runs
while the database's write lock is held.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from hivemem.config import RankingWeights
from hivemem.models import Hit
from hivemem.records import content_hash
from hivemem.retrieval.embedders import Embedder
from hivemem.retrieval.ranking import fuse, score
from hivemem.retrieval.text import keyword_terms
from hivemem.storage.base import MemoryFilter, ScoredId, Store, StoreTx

#: When filters leave too few hits, candidate lists grow by this factor, up to MAX_CANDIDATES.
_WIDEN = 4
MAX_CANDIDATES = 20_000
_QUERY_CACHE_SIZE = 1024
#: Recalls whose vector search (and query embedding) can run at once, beside their keyword searches.
_VECTOR_HELPERS = 8


class Retriever:
    """Recall and write-side embedding for one Hive.

    Args:
        store: Where memories live.
        embedder: Makes vectors; None for keyword-only recall.
        weights: Ranking weights.
    """

    def __init__(self, store: Store, embedder: Embedder | None, weights: RankingWeights) -> None:
        self.store = store
        self.embedder = embedder
        self.weights = weights
        self._query_vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _helpers(self) -> ThreadPoolExecutor:
        with self._cache_lock:
            if self._pool is None:
                # A server's request threads share one Hive: one helper per concurrent recall, up to a bound.
                self._pool = ThreadPoolExecutor(max_workers=_VECTOR_HELPERS, thread_name_prefix="hivemem-vector")
            return self._pool

    def close(self) -> None:
        """Stop the helper threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- writes --------------------------------------------------------------------------------

    def vectors_for(self, texts: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """Vectors for the texts whose content hash has none stored yet, by content hash."""
        if self.embedder is None or not texts:
            return {}
        by_hash = {content_hash(t): t for t in texts}
        hashes = list(by_hash)
        # From the primary: a replica may lag behind the vectors just written.
        known = self.store.read(lambda tx: tx.known_hashes(hashes), primary=True)
        missing = [h for h in hashes if h not in known]
        if not missing:
            return {}
        vectors = self.embedder.embed([by_hash[h] for h in missing])
        return dict(zip(missing, vectors, strict=True))

    @staticmethod
    def store_vectors(tx: StoreTx, vectors: dict[str, NDArray[np.float32]]) -> None:
        """Write vectors from :meth:`vectors_for` inside the caller's transaction."""
        if vectors:
            tx.put_embeddings(vectors)

    def store_vector_now(self, tx: StoreTx, text: str) -> None:
        """Embed ``text`` inside the caller's transaction, unless its vector is stored.

        Only for text that first exists inside a transaction (what a conflict
        resolver wrote): the model then runs while the write waits.
        """
        if self.embedder is None:
            return
        digest = content_hash(text)
        if not tx.known_hashes([digest]):
            tx.put_embeddings({digest: self.embedder.embed([text])[0]})

    # -- recall --------------------------------------------------------------------------------

    def query_vector(self, query: str) -> NDArray[np.float32]:
        """The query's vector, from a small LRU cache: agents repeat their questions."""
        assert self.embedder is not None
        with self._cache_lock:
            cached = self._query_vectors.get(query)
            if cached is not None:
                self._query_vectors.move_to_end(query)
                return cached
        vector: NDArray[np.float32] = self.embedder.embed([query])[0]
        with self._cache_lock:
            self._query_vectors[query] = vector
            if len(self._query_vectors) > _QUERY_CACHE_SIZE:
                self._query_vectors.popitem(last=False)
        return vector

    def _vector_candidates(self, query: str, flt: MemoryFilter, limit: int) -> list[ScoredId]:
        return self.store.vector_search(self.query_vector(query), flt, limit)

    def recall(self, query: str, flt: MemoryFilter, k: int, min_score: float | None) -> list[Hit]:
        """The ``k`` best visible memories for ``query``.

        The query is embedded and its vector search run on a helper thread
        while the keyword search runs here (both release the GIL, and on
        PostgreSQL they are two backends). Keyword search applies every filter
        in SQL; a vector search may post-filter, so when too few hits survive
        the candidate lists are widened and both searches run again.
        """
        terms = keyword_terms(query)
        limit = max(k, self.weights.candidates)
        while True:
            pending: Future[list[ScoredId]] | None = None
            if self.embedder is not None:
                pending = self._helpers().submit(self._vector_candidates, query, flt, limit)
            keyword = self.store.keyword_search(terms, flt, limit)
            vector = pending.result() if pending is not None else []
            exhausted = len(keyword) < limit and len(vector) < limit
            last = exhausted or limit >= MAX_CANDIDATES
            # One read ranks and fetches, so both see the same memories.
            best = functools.partial(
                self._best, keyword=keyword, vector=vector, flt=flt, k=k, min_score=min_score, last=last
            )
            hits = self.store.read(best)
            if hits is not None:
                return hits
            limit = min(limit * _WIDEN, MAX_CANDIDATES)

    def _best(
        self,
        tx: StoreTx,
        keyword: Sequence[ScoredId],
        vector: Sequence[ScoredId],
        flt: MemoryFilter,
        k: int,
        min_score: float | None,
        *,
        last: bool,
    ) -> list[Hit] | None:
        """The hits among the candidates; None if fewer than ``k`` are visible and a wider search follows.

        Only the ``last`` search returns fewer hits than ``k``. Ranking and
        fetching share ``tx``'s snapshot, so every ranked memory is there to
        fetch: one forgotten meanwhile is either ranked and returned (the
        recall happened first) or neither.
        """
        facts = tx.rank_facts(list({s.id: None for s in [*keyword, *vector]}), flt)
        # Filter before fusing: a memory the caller cannot see must not push
        # visible ones down the ranks (nor reveal itself through their scores).
        visible_keyword = [s for s in keyword if s.id in facts]
        visible_vector = [s for s in vector if s.id in facts]
        scored = score(fuse(visible_keyword, visible_vector, self.weights), facts, flt.now, self.weights)
        if len(scored) < k and not last:
            return None
        top = [s for s in scored if min_score is None or s.score >= min_score][:k]
        # Whole memories only for the hits.
        memories = tx.get_many([s.id for s in top], flt)
        return [Hit(memories[s.id], s.score, s.parts) for s in top]
