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

Each backend asked for (``--backend sqlite,postgres``; see ``_common.Backend``) gets
its own store of each size. Reported per size, backend and vector-search mode (on
SQLite ``matrix``, the default, and ``sqlite-vec``; on PostgreSQL its one mode, pgvector
HNSW): p50/p95/p99 of recall, the first recall after opening (which loads the matrix
index), and the split: query embedding alone, keyword search alone and vector search
alone (p50). For reference, the same hive opened with ``embedder=None`` (keyword-only
recall, nothing to embed) is timed too. sqlite-vec runs at the largest size only when it
is projected to take less than ``--sqlite-vec-budget`` seconds. On PostgreSQL the
corpus table gets a ``VACUUM ANALYZE`` after the ingest (untimed), as autovacuum would
give it soon after: before that, the planner takes the fresh table for empty and skips
the HNSW and GIN indexes, and GIN's pending list is read linearly. The targets: p50
at 100,000 memories <= 15 ms on SQLite and <= 20 ms on PostgreSQL, default mode.

    python bench/recall_latency.py                            # 10,000 and 100,000 memories on SQLite
    python bench/recall_latency.py --backend sqlite,postgres  # both, side by side
    python bench/recall_latency.py --quick                    # 1,000 memories, both backends, for CI
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
    Backend,
    TextGenerator,
    add_backend_arguments,
    backend_kinds,
    latency_summary,
    log,
    open_backends,
    print_table,
    results_dir,
    timed,
    write_results,
)
from hivemem.retrieval.text import keyword_terms
from hivemem.storage.base import MemoryFilter

NAMESPACE = "bench"
K = 10
#: Target p50 per backend at TARGET_SIZE memories, for its default vector search.
TARGET_P50_MS = {"sqlite": 15.0, "postgres": 20.0}
TARGET_SIZE = 100_000
#: A last mode on every backend: the same hive opened with ``embedder=None`` (keyword-only recall, no query embedding).
KEYWORD_ONLY = "none (keyword only)"
#: Recall modes per backend, its default first, each with its ``hivemem.open`` options.
MODES: dict[str, dict[str, dict[str, Any]]] = {
    "sqlite": {"matrix": {"vector_search": "matrix"}, "sqlite-vec": {"vector_search": "sqlite-vec"}, KEYWORD_ONLY: {}},
    "postgres": {"pgvector hnsw": {}, KEYWORD_ONLY: {}},
}
#: The recall table's latency columns, in order.
RECALL_COLUMNS = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "cold_first_recall_ms")
DEFAULT_MODE = {kind: next(iter(modes)) for kind, modes in MODES.items()}


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


def build_corpus(backend: Backend, texts: Sequence[str], embedder: hivemem.Embedder, batch: int) -> str:
    """A new store holding ``texts`` in one namespace, through ``remember_many``; returns its target."""
    target = backend.target(f"recall-{len(texts)}")
    items = [{"namespace": NAMESPACE, "content": t} for t in texts]
    log(f"{len(texts):,} memories on {backend.kind}: ingesting")
    delegated = embedder.delegated if isinstance(embedder, CachedEmbedder) else 0
    start = last_log = time.perf_counter()
    with hivemem.open(target, embedder=embedder) as hive:
        for lo in range(0, len(items), batch):
            hive.remember_many(items[lo : lo + batch])
            done, now = min(lo + batch, len(items)), time.perf_counter()
            if now - last_log > 10 and done < len(items):
                log(f"  {done:,}/{len(items):,} ({done / (now - start):,.0f}/s)")
                last_log = now
    seconds = time.perf_counter() - start
    if isinstance(embedder, CachedEmbedder) and embedder.delegated != delegated:
        raise SystemExit("corpus texts reached the real embedder: the cache is incomplete")
    log(f"  ingested in {seconds:.1f} s ({len(texts) / seconds:,.0f}/s with precomputed vectors)")
    if backend.kind == "postgres":
        # Untimed: measure the steady state, not the minutes before autovacuum's first pass.
        log(f"  VACUUM ANALYZE in {timed(lambda: backend.settle(target)):.1f} s")
    return target


def measure_modes(
    kind: str,
    target: str,
    embedder: hivemem.Embedder,
    query_gen: TextGenerator,
    args: argparse.Namespace,
    *,
    budgeted: bool,
) -> dict[str, dict[str, Any]]:
    """Every recall mode of the backend on one store: its latencies (and parts), or why it was skipped.

    With ``budgeted``, sqlite-vec runs only if it is projected to fit ``--sqlite-vec-budget``.
    """
    out: dict[str, dict[str, Any]] = {}
    for mode, options in MODES[kind].items():
        with hivemem.open(target, embedder=None if mode == KEYWORD_ONLY else embedder, **options) as hive:
            queries = query_gen.queries(args.warmup + args.queries + 1)
            if mode == "sqlite-vec" and budgeted:
                trial = [timed(lambda q=q: hive.recall(q, namespace=NAMESPACE, k=K)) for q in query_gen.queries(6)]
                projected = float(np.median(trial[1:])) * len(queries)
                if projected > args.sqlite_vec_budget:
                    log(f"  sqlite-vec skipped: projected {projected:.0f} s > {args.sqlite_vec_budget:.0f} s")
                    out[mode] = {"skipped": f"projected {projected:.0f} s"}
                    continue
            log(f"  {mode}: {args.queries} recalls")
            measured = measure_recall(hive, queries, args.warmup)
            if hive.embedder is not None:
                part_queries = query_gen.queries(min(args.queries, 100))
                measured |= measure_parts(hive, part_queries, hive.embedder.embed(part_queries))
        out[mode] = measured
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--queries", type=int, default=300, help="timed recalls per size and mode")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=5_000, help="remember_many batch while building the corpus")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sqlite-vec-budget", type=float, default=120.0, help="seconds allowed per sqlite-vec run")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    add_backend_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="1,000 memories, 30 queries and both backends, for CI")
    args = parser.parse_args(argv)
    kinds = backend_kinds(args)
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
    with (
        tempfile.TemporaryDirectory(dir=args.dir) as tmp,
        open_backends(kinds, Path(tmp), args.postgres_url) as backends,
    ):
        results["stores"] = {kind: backend.describe() for kind, backend in backends.items()}
        for size in sizes:
            results["sizes"][str(size)] = {}
            for kind, backend in backends.items():
                start = time.perf_counter()
                target = build_corpus(backend, texts[:size], embedder, args.batch)
                ingest_s = time.perf_counter() - start
                budgeted = size == sizes[-1] and size > 10_000
                modes = measure_modes(kind, target, embedder, query_gen, args, budgeted=budgeted)
                backend.discard(target)
                split = {"query_embed_p50_ms": embed_alone["p50_ms"]}
                for mode, measured in modes.items():
                    if "keyword_p50_ms" in measured:
                        split[f"keyword_p50_ms_{mode}"] = measured["keyword_p50_ms"]
                        split[f"vector_p50_ms_{mode}"] = measured["vector_p50_ms"]
                    if "skipped" not in measured:
                        rows.append([size, kind, mode, *(measured[c] for c in RECALL_COLUMNS), measured["n"]])
                results["sizes"][str(size)][kind] = {"ingest_s": ingest_s, "modes": modes, "split": split}
                default = DEFAULT_MODE[kind]
                split_rows.append(
                    [
                        size,
                        kind,
                        embed_alone["p50_ms"],
                        split.get(f"keyword_p50_ms_{default}"),
                        split.get(f"vector_p50_ms_{default}"),
                        split.get("vector_p50_ms_sqlite-vec"),
                    ]
                )

    print_table(
        f"recall latency, k={K}, one namespace, query embedding included (MiniLM {rate:,.0f} texts/s)",
        ["memories", "backend", "vector search", "p50 ms", "p95 ms", "p99 ms", "mean ms", "first recall ms", "queries"],
        rows,
    )
    print_table(
        "split (p50 ms; default vector search: matrix on sqlite, pgvector hnsw on postgres): "
        "the query is embedded on a helper thread while the keyword search runs",
        [
            "memories",
            "backend",
            "query embed",
            "keyword search",
            "vector search (default)",
            "vector search (sqlite-vec)",
        ],
        split_rows,
    )
    results["target"] = {}
    largest = sizes[-1]
    print()
    for kind in kinds:
        mode, target_ms = DEFAULT_MODE[kind], TARGET_P50_MS[kind]
        p50 = results["sizes"][str(largest)][kind]["modes"][mode]["p50_ms"]
        met = p50 <= target_ms if largest >= TARGET_SIZE else None
        results["target"][kind] = {"size": largest, "mode": mode, "p50_ms": p50, "target_ms": target_ms, "met": met}
        verdict = {True: "met", False: "not met", None: f"not measured at {largest:,}"}[met]
        print(
            f"p50 at {largest:,} on {kind} ({mode}): {p50:.2f} ms; "
            f"target <= {target_ms:.0f} ms at {TARGET_SIZE:,}: {verdict}"
        )
    path = write_results("recall_latency", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
