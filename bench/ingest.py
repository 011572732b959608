"""Ingestion throughput: HiveMem.remember_many against its two floors, in one run on the same data.

Four measurements, each on a fresh database file in one temporary folder:

* ``embedder alone``: ``MiniLMEmbedder.embed`` on the texts, in the same batches;
* ``hivemem + minilm``: ``remember_many`` with the default embedder on those texts;
* ``plain sqlite``: apsw ``executemany`` into one table with the columns HiveMem fills
  (id, namespace, kind, content, data, tags, importance, times, version, content hash),
  one transaction per batch, WAL, ``synchronous=FULL``; ids, hashes and JSON are made
  inside the timed loop, as any application would;
* ``hivemem, no embedder``: ``remember_many`` with ``embedder=None`` on the same texts
  as plain SQLite.

An extra, informational row adds an FTS5 index (HiveMem's tokenizer, kept by a
trigger) to the plain table, to show how much of the gap is the full-text index.

Ratios printed: hivemem+minilm / embedder alone (target >= 0.9) and hivemem without
embedder / plain sqlite (target >= 0.7).

    python bench/ingest.py            # 5,000 texts with embeddings, 50,000 without
    python bench/ingest.py --quick    # tiny, for CI
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw

import hivemem
from _common import TextGenerator, latency_summary, log, print_table, write_results

NAMESPACE = "bench/ingest"

PLAIN_SCHEMA = """
CREATE TABLE memories (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    tier TEXT NOT NULL,
    content TEXT NOT NULL,
    data TEXT NOT NULL,
    tags TEXT NOT NULL,
    importance REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE INDEX memories_namespace ON memories (namespace, created_at);
"""

FTS_SCHEMA = """
CREATE VIRTUAL TABLE memories_fts USING fts5 (
    content, content='memories', content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER memories_inserted AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
END;
"""

PLAIN_INSERT = (
    "INSERT INTO memories (id, namespace, kind, tier, content, data, tags, importance, created_at, updated_at, "
    "version, content_hash) VALUES (?, ?, 'note', 'short', ?, ?, ?, 0.5, ?, ?, 1, ?)"
)


def items_for(texts: Sequence[str], offset: int = 0) -> list[dict[str, Any]]:
    """remember_many items: a namespace, the text, a small data object and a tag."""
    return [
        {"namespace": NAMESPACE, "content": t, "data": {"n": offset + i}, "tags": ["bench"]}
        for i, t in enumerate(texts)
    ]


def batches(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def run_batches(name: str, count: int, parts: list[Any], step: Callable[[Any], object]) -> dict[str, Any]:
    """Time ``step`` on every batch; the rate is over the total wall time."""
    times: list[float] = []
    for part in parts:
        start = time.perf_counter()
        step(part)
        times.append(time.perf_counter() - start)
    total = sum(times)
    out = {"name": name, "count": count, "seconds": total, "per_s": count / total, "batch": latency_summary(times)}
    log(f"  {name}: {count:,} in {total:.2f} s = {count / total:,.0f}/s")
    return out


def bench_embedder(embedder: hivemem.Embedder, texts: Sequence[str], batch: int) -> dict[str, Any]:
    return run_batches("embedder alone", len(texts), batches(texts, batch), embedder.embed)


def bench_hivemem(
    name: str, path: Path, embedder: hivemem.Embedder | None, texts: Sequence[str], batch: int
) -> dict[str, Any]:
    parts = batches(items_for(texts), batch)
    with hivemem.open(str(path), embedder=embedder) as hive:
        result = run_batches(name, len(texts), parts, hive.remember_many)
        stored = hive.stats(NAMESPACE)["memories"]
    if stored != len(texts):
        raise SystemExit(f"{name}: stored {stored} memories, expected {len(texts)}")
    return result


def bench_plain(name: str, path: Path, texts: Sequence[str], batch: int, *, fts: bool) -> dict[str, Any]:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(PLAIN_SCHEMA + (FTS_SCHEMA if fts else ""))
    counter = iter(range(len(texts)))

    def insert(part: Sequence[str]) -> None:
        now = time.time()
        rows = [
            (
                str(uuid.uuid4()),
                NAMESPACE,
                t,
                json.dumps({"n": next(counter)}),
                json.dumps(["bench"]),
                now,
                now,
                hashlib.sha256(t.encode("utf-8")).hexdigest(),
            )
            for t in part
        ]
        with conn:  # one transaction per batch
            conn.executemany(PLAIN_INSERT, rows)

    try:
        result = run_batches(name, len(texts), batches(texts, batch), insert)
        stored = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    finally:
        conn.close()
    if stored != len(texts):
        raise SystemExit(f"{name}: stored {stored} rows, expected {len(texts)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5_000, help="texts for the runs with embeddings")
    parser.add_argument("--count-plain", type=int, default=50_000, help="texts for the runs without embeddings")
    parser.add_argument("--batch", type=int, default=500, help="items per remember_many / transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.count_plain, args.batch = 256, 3_000, 128

    gen = TextGenerator(args.seed)
    embed_texts = gen.sentences(args.count)
    plain_texts = gen.sentences(args.count_plain)
    embedder = hivemem.make_embedder("minilm")
    assert embedder is not None
    embedder.embed(TextGenerator(args.seed + 1000).sentences(64))  # load the model; not timed
    log(f"{len(embed_texts):,} texts with embeddings, {len(plain_texts):,} without; batch {args.batch}")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        alone = bench_embedder(embedder, embed_texts, args.batch)
        with_emb = bench_hivemem("hivemem + minilm", folder / "emb.db", embedder, embed_texts, args.batch)
        plain = bench_plain("plain sqlite", folder / "plain.db", plain_texts, args.batch, fts=False)
        no_emb = bench_hivemem("hivemem, no embedder", folder / "noemb.db", None, plain_texts, args.batch)
        plain_fts = bench_plain("plain sqlite + fts5", folder / "plain-fts.db", plain_texts, args.batch, fts=True)

    ratio_emb = with_emb["per_s"] / alone["per_s"]
    ratio_plain = no_emb["per_s"] / plain["per_s"]
    rows = [
        [r["name"], r["count"], r["per_s"], r["batch"]["p50_ms"], r["batch"]["max_ms"]]
        for r in (alone, with_emb, plain, no_emb, plain_fts)
    ]
    print_table(
        f"remember_many throughput, batch {args.batch} (synchronous=FULL, WAL)",
        ["run", "memories", "per second", "batch p50 ms", "batch max ms"],
        rows,
    )
    print_table(
        "ratios",
        ["ratio", "value", "target", "met"],
        [
            ["hivemem + minilm / embedder alone", ratio_emb, 0.9, ratio_emb >= 0.9],
            ["hivemem, no embedder / plain sqlite", ratio_plain, 0.7, ratio_plain >= 0.7],
            ["hivemem, no embedder / plain sqlite + fts5", no_emb["per_s"] / plain_fts["per_s"], None, None],
        ],
    )
    path = write_results(
        "ingest",
        args,
        {
            "runs": {r["name"]: r for r in (alone, with_emb, plain, no_emb, plain_fts)},
            "ratios": {
                "hivemem_minilm_over_embedder": ratio_emb,
                "hivemem_noemb_over_plain_sqlite": ratio_plain,
                "hivemem_noemb_over_plain_sqlite_fts": no_emb["per_s"] / plain_fts["per_s"],
            },
        },
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
