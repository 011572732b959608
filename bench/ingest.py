"""Ingestion throughput: HiveMem.remember_many against its floors, in one run on the same data.

Two groups of runs, each database a fresh file in one temporary folder.

With embeddings (``--count`` texts):

* ``embedder alone``: ``MiniLMEmbedder.embed`` on the texts, in the same batches;
* ``hivemem + minilm``: ``remember_many`` with the default embedder on those texts.

Without embeddings (``--count-plain`` other texts):

* ``plain sqlite``: apsw ``executemany`` into one table with the columns HiveMem fills
  (id, namespace, kind, tier, content, data, tags, importance, times, version, content
  hash) plus a unique id index and a namespace index; one transaction per batch, WAL,
  ``synchronous=FULL``; ids (HiveMem's time-ordered ``new_id``), hashes and JSON are
  made inside the timed loop, as any application would;
* ``hivemem, no embedder``: ``remember_many`` with ``embedder=None``;
* two informational floors: the plain table plus an FTS5 index (HiveMem's tokenizer,
  kept by a trigger), and ``executemany`` straight into the schema HiveMem creates
  (all its indexes and its FTS5 trigger) without any HiveMem code. They show how much
  of the gap is the full-text index and the schema, and how much is Python.

The runs of a group are interleaved batch by batch (the order rotating), so drift in
the machine's speed (a noisy neighbour, onnxruntime warming up) hits them alike.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw

import hivemem
from _common import TextGenerator, latency_summary, log, print_table, write_results
from hivemem.clock import new_id

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

#: A step takes one batch of texts and the index of its first text.
Step = Callable[[Sequence[str], int], object]


def items_for(texts: Sequence[str], offset: int = 0) -> list[dict[str, Any]]:
    """remember_many items: a namespace, the text, a small data object and a tag."""
    return [
        {"namespace": NAMESPACE, "content": t, "data": {"n": offset + i}, "tags": ["bench"]}
        for i, t in enumerate(texts)
    ]


def _connect(path: Path, schema: str | None) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    if schema:
        conn.execute(schema)
    return conn


def plain_step(conn: apsw.Connection) -> Step:
    def insert(part: Sequence[str], offset: int) -> None:
        now = time.time()
        rows = [
            (
                new_id(),
                NAMESPACE,
                t,
                json.dumps({"n": offset + i}),
                json.dumps(["bench"]),
                now,
                now,
                hashlib.sha256(t.encode("utf-8")).hexdigest(),
            )
            for i, t in enumerate(part)
        ]
        with conn:  # one transaction per batch
            conn.executemany(PLAIN_INSERT, rows)

    return insert


def hivemem_schema_step(conn: apsw.Connection) -> Step:
    """executemany straight into HiveMem's own table (its indexes and FTS5 trigger fire), no HiveMem code."""
    columns = [r[1] for r in conn.execute("PRAGMA table_info(memories)") if r[1] != "rowid"]
    sql = f"INSERT INTO memories ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"

    def insert(part: Sequence[str], offset: int) -> None:
        now = time.time()
        rows = []
        for i, t in enumerate(part):
            row: dict[str, Any] = dict.fromkeys(columns)
            row.update(
                id=new_id(),
                root="bench",
                namespace=NAMESPACE,
                kind="note",
                tier="short",
                content=t,
                data=json.dumps({"n": offset + i}),
                tags=json.dumps(["bench"]),
                importance=0.5,
                created_at=now,
                updated_at=now,
                access_count=0,
                version=1,
                content_hash=hashlib.sha256(t.encode("utf-8")).hexdigest(),
                sensitive=0,
                seq=1,
            )
            rows.append(row)
        with conn:
            conn.executemany(sql, rows)

    return insert


def interleaved(steps: dict[str, Step], texts: Sequence[str], batch: int) -> dict[str, dict[str, Any]]:
    """Run every step on every batch, rotating the order per batch; the rate is over summed wall time."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for b, start in enumerate(range(0, len(texts), batch)):
        part = texts[start : start + batch]
        for j in range(len(names)):
            name = names[(b + j) % len(names)]
            t0 = time.perf_counter()
            steps[name](part, start)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        total = sum(times[name])
        out[name] = {
            "name": name,
            "count": len(texts),
            "seconds": total,
            "per_s": len(texts) / total,
            "batch": latency_summary(times[name]),
        }
        log(f"  {name}: {len(texts):,} in {total:.2f} s = {len(texts) / total:,.0f}/s")
    return out


def count_rows(path: Path) -> int:
    conn = apsw.Connection(str(path))
    try:
        return int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
    finally:
        conn.close()


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
    # Load the model and let onnxruntime size its buffers for a full batch; not timed.
    embedder.embed(TextGenerator(args.seed + 1000).sentences(min(args.batch, 256)))
    log(f"{len(embed_texts):,} texts with embeddings, {len(plain_texts):,} without; batch {args.batch}")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        with hivemem.open(str(folder / "emb.db"), embedder=embedder) as hive:
            emb = interleaved(
                {
                    "embedder alone": lambda part, _offset: embedder.embed(part),
                    "hivemem + minilm": lambda part, offset: hive.remember_many(items_for(part, offset)),
                },
                embed_texts,
                args.batch,
            )
        hivemem.open(str(folder / "schema.db"), embedder=None).close()  # creates HiveMem's schema
        plain_conn = _connect(folder / "plain.db", PLAIN_SCHEMA)
        fts_conn = _connect(folder / "plain-fts.db", PLAIN_SCHEMA + FTS_SCHEMA)
        schema_conn = _connect(folder / "schema.db", None)
        with hivemem.open(str(folder / "noemb.db"), embedder=None) as hive_plain:
            noemb = interleaved(
                {
                    "plain sqlite": plain_step(plain_conn),
                    "hivemem, no embedder": lambda part, offset: hive_plain.remember_many(items_for(part, offset)),
                    "plain sqlite + fts5": plain_step(fts_conn),
                    "sqlite into hivemem schema": hivemem_schema_step(schema_conn),
                },
                plain_texts,
                args.batch,
            )
        for conn in (plain_conn, fts_conn, schema_conn):
            conn.close()
        expected = {"emb.db": len(embed_texts)} | dict.fromkeys(
            ("plain.db", "plain-fts.db", "schema.db", "noemb.db"), len(plain_texts)
        )
        for name, count in expected.items():
            stored = count_rows(folder / name)
            if stored != count:
                raise SystemExit(f"{name}: {stored} rows stored, expected {count}")

    runs = emb | noemb
    ratio_emb = runs["hivemem + minilm"]["per_s"] / runs["embedder alone"]["per_s"]
    ratio_plain = runs["hivemem, no embedder"]["per_s"] / runs["plain sqlite"]["per_s"]
    ratio_fts = runs["hivemem, no embedder"]["per_s"] / runs["plain sqlite + fts5"]["per_s"]
    ratio_schema = runs["hivemem, no embedder"]["per_s"] / runs["sqlite into hivemem schema"]["per_s"]
    print_table(
        f"remember_many throughput, batch {args.batch} (synchronous=FULL, WAL)",
        ["run", "memories", "per second", "batch p50 ms", "batch max ms"],
        [[r["name"], r["count"], r["per_s"], r["batch"]["p50_ms"], r["batch"]["max_ms"]] for r in runs.values()],
    )
    print_table(
        "ratios",
        ["ratio", "value", "target", "met"],
        [
            ["hivemem + minilm / embedder alone", ratio_emb, 0.9, ratio_emb >= 0.9],
            ["hivemem, no embedder / plain sqlite", ratio_plain, 0.7, ratio_plain >= 0.7],
            ["hivemem, no embedder / plain sqlite + fts5", ratio_fts, None, None],
            ["hivemem, no embedder / sqlite into hivemem schema", ratio_schema, None, None],
        ],
    )
    path = write_results(
        "ingest",
        args,
        {
            "runs": runs,
            "ratios": {
                "hivemem_minilm_over_embedder": ratio_emb,
                "hivemem_noemb_over_plain_sqlite": ratio_plain,
                "hivemem_noemb_over_plain_sqlite_fts": ratio_fts,
                "hivemem_noemb_over_sqlite_hivemem_schema": ratio_schema,
            },
            "targets": {"hivemem_minilm_over_embedder": 0.9, "hivemem_noemb_over_plain_sqlite": 0.7},
        },
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
