"""Recall latency at 10k and 100k memories in one namespace, query embedding included.

Every measured ``hive.recall(query, namespace="bench", k=10)`` uses a query that was
never asked before, so HiveMem's LRU of query vectors never hides the cost of
embedding it with the default MiniLM model.

The corpus (distinct 10-30 word sentences from a seeded generator) is stored through
HiveMem's own ``remember_many``. MiniLM embeds a few hundred texts per second on two
cores, so when it does fewer than 1,000 per second the corpus vectors are computed
once with the real model and cached in ``bench/results/`` (keyed by generator version
and seed), and the corpus is ingested with an embedder that returns those cached
vectors for corpus texts and delegates everything else (the queries) to the real
MiniLMEmbedder. It has MiniLM's ``name`` and ``dim``: the stored vectors are real
MiniLM vectors.

Reported per size and vector-search mode (``matrix``, the default, and ``sqlite-vec``):
p50/p95/p99 of recall, the first recall after opening (which loads the matrix index),
and the split: query embedding alone, keyword search alone and vector search alone
(p50). For reference, the same hive opened with ``embedder=None`` (keyword-only
recall, nothing to embed) is timed too. sqlite-vec runs at the largest size only when it is projected to take less
than ``--sqlite-vec-budget`` seconds.

    python bench/recall_latency.py            # 10,000 and 100,000 memories
    python bench/recall_latency.py --quick    # 1,000 memories, for CI
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import hivemem
from _common import (
    GENERATOR_VERSION,
    TextGenerator,
    latency_summary,
    log,
    print_table,
    results_dir,
    timed,
    write_results,
)
from hivemem.retrieval.text import keyword_terms
from hivemem.storage.base import MemoryFilter

NAMESPACE = "bench"
K = 10
TARGET_P50_MS = 15.0
#: A third mode: the same hive opened with ``embedder=None`` (keyword-only recall, no query embedding).
KEYWORD_ONLY = "none (keyword only)"


class CachedEmbedder:
    """Returns precomputed MiniLM vectors for the corpus texts; anything else goes to the real model.

    Same ``name`` and ``dim`` as the real embedder, so HiveMem stores them as MiniLM vectors.
    """

    def __init__(self, real: hivemem.Embedder, texts: Sequence[str], vectors: NDArray[np.float32]) -> None:
        self.real = real
        self.name = real.name
        self.dim = real.dim
        self._rows = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors
        self.delegated = 0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        for i, text in enumerate(texts):
            row = self._rows.get(text)
            if row is None:
                missing.append(i)
            else:
                out[i] = self._vectors[row]
        if missing:
            self.delegated += len(missing)
            out[missing] = self.real.embed([texts[i] for i in missing])
        return out


def corpus_vectors(real: hivemem.Embedder, texts: Sequence[str], seed: int) -> tuple[NDArray[np.float32], float]:
    """MiniLM vectors of ``texts`` (a prefix of the seed's stream), cached on disk; returns them and texts/s.

    The cache grows as needed and is checked by re-embedding a few rows.
    """
    path = results_dir() / f"minilm-corpus-v{GENERATOR_VERSION}-seed{seed}.npy"
    cached = np.zeros((0, real.dim), dtype=np.float32)
    if path.exists():
        cached = np.load(path)
        probe = sorted({0, len(cached) // 2, len(cached) - 1} & set(range(min(len(cached), len(texts)))))
        if probe:
            fresh = real.embed([texts[i] for i in probe])
            if float(np.min(np.sum(fresh * cached[probe], axis=1))) < 0.999:
                log(f"cache {path.name} does not match this model/generator; recomputing")
                cached = cached[:0]
    rate = float("nan")
    if len(cached) < len(texts):
        need = len(texts) - len(cached)
        log(f"embedding {need:,} corpus texts with MiniLM (cached in {path.name} for next time)")
        parts = [cached]
        done, start = 0, time.perf_counter()
        for lo in range(len(cached), len(texts), 2000):
            parts.append(real.embed(texts[lo : lo + 2000]))
            done += len(parts[-1])
            if done % 10_000 == 0 or lo + 2000 >= len(texts):
                np.save(path, np.concatenate(parts))
                log(f"  {len(cached) + done:,}/{len(texts):,} ({done / (time.perf_counter() - start):,.0f} texts/s)")
        rate = need / (time.perf_counter() - start)
        cached = np.load(path)
    return cached[: len(texts)], rate


def measure_recall(hive: hivemem.Hive, queries: list[str], warmup: int) -> dict[str, Any]:
    """First recall (cold index), then warm-up, then the timed recalls; each query is new.

    With vectors every recall must fill ``k``; keyword-only recall may find fewer (a query of rare words).
    """
    first = queries.pop()
    cold = timed(lambda: hive.recall(first, namespace=NAMESPACE, k=K))
    for q in queries[:warmup]:
        hive.recall(q, namespace=NAMESPACE, k=K)
    times = []
    for q in queries[warmup:]:
        start = time.perf_counter()
        hits = hive.recall(q, namespace=NAMESPACE, k=K)
        times.append(time.perf_counter() - start)
        if len(hits) != K and hive.embedder is not None:
            raise SystemExit(f"recall returned {len(hits)} hits, expected {K}")
    return {"cold_first_recall_ms": cold * 1000, **latency_summary(times)}


def measure_parts(hive: hivemem.Hive, queries: list[str], vectors: NDArray[np.float32]) -> dict[str, float]:
    """p50 of keyword search alone and vector search alone, with HiveMem's candidate count."""
    limit = max(K, hive.config.ranking.candidates)
    kw, vec = [], []
    for q, v in zip(queries, vectors, strict=True):
        flt = MemoryFilter(now=time.time(), namespace=NAMESPACE)
        terms = keyword_terms(q)
        kw.append(timed(lambda t=terms, f=flt: hive.store.keyword_search(t, f, limit)))
        vec.append(timed(lambda v=v, f=flt: hive.store.vector_search(v, f, limit)))
    return {"keyword_p50_ms": latency_summary(kw)["p50_ms"], "vector_p50_ms": latency_summary(vec)["p50_ms"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--queries", type=int, default=300, help="timed recalls per size and mode")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=5_000, help="remember_many batch while building the corpus")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sqlite-vec-budget", type=float, default=120.0, help="seconds allowed per sqlite-vec run")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="1,000 memories and 30 queries, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.warmup = "1000", 30, 5
    sizes = sorted(int(s) for s in args.sizes.split(","))

    real = hivemem.make_embedder("minilm")
    assert real is not None
    gen = TextGenerator(args.seed)
    texts = gen.sentences(sizes[-1])
    query_gen = TextGenerator(args.seed + 7)
    probe = TextGenerator(args.seed + 1000).sentences(256)
    real.embed(probe[:32])  # load the model
    rate = len(probe) / timed(lambda: real.embed(probe))
    log(f"MiniLM embeds {rate:,.0f} texts/s on this machine")

    # Query embedding alone: the floor under every recall.
    embed_queries = query_gen.queries(args.queries)
    embed_times = [timed(lambda q=q: real.embed([q])) for q in embed_queries]
    embed_alone = latency_summary(embed_times)

    if rate >= 1000:
        embedder: hivemem.Embedder = real
        vectors_rate = rate
        log("fast enough: ingesting with the real embedder")
    else:
        vectors, vectors_rate = corpus_vectors(real, texts, args.seed)
        embedder = CachedEmbedder(real, texts, vectors)

    results: dict[str, Any] = {
        "embedder_texts_per_s": rate,
        "corpus_embedding_texts_per_s": vectors_rate,
        "query_embed_alone": embed_alone,
        "sizes": {},
    }
    rows, split_rows = [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in sizes:
            path = Path(tmp) / f"recall-{size}.db"
            items = [{"namespace": NAMESPACE, "content": t} for t in texts[:size]]
            log(f"{size:,} memories: ingesting")
            delegated = embedder.delegated if isinstance(embedder, CachedEmbedder) else 0
            start = time.perf_counter()
            with hivemem.open(str(path), embedder=embedder) as hive:
                for lo in range(0, size, args.batch):
                    hive.remember_many(items[lo : lo + args.batch])
            ingest_s = time.perf_counter() - start
            if isinstance(embedder, CachedEmbedder) and embedder.delegated != delegated:
                raise SystemExit("corpus texts reached the real embedder: the cache is incomplete")
            log(f"  ingested in {ingest_s:.1f} s ({size / ingest_s:,.0f}/s with precomputed vectors)")
            entry: dict[str, Any] = {"ingest_s": ingest_s, "modes": {}}
            split: dict[str, Any] = {"query_embed_p50_ms": embed_alone["p50_ms"]}
            for mode in ("matrix", "sqlite-vec", KEYWORD_ONLY):
                mode_embedder = None if mode == KEYWORD_ONLY else embedder
                vector_search = "matrix" if mode == KEYWORD_ONLY else mode
                with hivemem.open(str(path), embedder=mode_embedder, vector_search=vector_search) as hive:
                    queries = query_gen.queries(args.warmup + args.queries + 1)
                    if mode == "sqlite-vec" and size == sizes[-1] and size > 10_000:
                        trial = [
                            timed(lambda q=q: hive.recall(q, namespace=NAMESPACE, k=K)) for q in query_gen.queries(6)
                        ]
                        projected = float(np.median(trial[1:])) * len(queries)
                        if projected > args.sqlite_vec_budget:
                            log(f"  sqlite-vec skipped: projected {projected:.0f} s > {args.sqlite_vec_budget:.0f} s")
                            entry["modes"][mode] = {"skipped": f"projected {projected:.0f} s"}
                            continue
                    log(f"  {mode}: {args.queries} recalls")
                    measured = measure_recall(hive, queries, args.warmup)
                    parts: dict[str, float] = {}
                    if mode != KEYWORD_ONLY:
                        part_queries = query_gen.queries(min(args.queries, 100))
                        parts = measure_parts(hive, part_queries, real.embed(part_queries))
                        split[f"keyword_p50_ms_{mode}"] = parts["keyword_p50_ms"]
                        split[f"vector_p50_ms_{mode}"] = parts["vector_p50_ms"]
                entry["modes"][mode] = {**measured, **parts}
                rows.append(
                    [
                        size,
                        mode,
                        measured["p50_ms"],
                        measured["p95_ms"],
                        measured["p99_ms"],
                        measured["mean_ms"],
                        measured["cold_first_recall_ms"],
                        measured["n"],
                    ]
                )
            entry["split"] = split
            results["sizes"][str(size)] = entry
            split_rows.append(
                [
                    size,
                    embed_alone["p50_ms"],
                    split.get("keyword_p50_ms_matrix"),
                    split.get("vector_p50_ms_matrix"),
                    split.get("vector_p50_ms_sqlite-vec"),
                ]
            )
            path.unlink()

    print_table(
        f"recall latency, k={K}, one namespace, query embedding included (MiniLM {rate:,.0f} texts/s)",
        ["memories", "vector search", "p50 ms", "p95 ms", "p99 ms", "mean ms", "first recall ms", "queries"],
        rows,
    )
    print_table(
        "split (p50 ms): the query is embedded on a helper thread while the keyword search runs",
        ["memories", "query embed", "keyword search", "vector search (matrix)", "vector search (sqlite-vec)"],
        split_rows,
    )
    largest = results["sizes"][str(sizes[-1])]["modes"]["matrix"]["p50_ms"]
    results["target"] = {"size": sizes[-1], "p50_ms": largest, "target_ms": TARGET_P50_MS}
    print(f"\np50 at {sizes[-1]:,} (matrix): {largest:.2f} ms; target <= {TARGET_P50_MS:.0f} ms at 100,000")
    path = write_results("recall_latency", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
