"""Ingestion throughput: HiveMem.remember_many against its floors, in one run on the same data.

Two groups of runs. Each store is new: a file in one temporary folder (SQLite) or a
fresh schema of one PostgreSQL (``--backend postgres``; see ``_common.Backend``).
The HiveMem runs are repeated on every backend asked for, and each backend brings
its own floors.

With embeddings (``--count`` texts):

* ``embedder alone``: ``MiniLMEmbedder.embed`` on the texts, in the same batches;
* ``hivemem + minilm``: ``remember_many`` with the default embedder on those texts.

Without embeddings (``--count-plain`` other texts):

* ``plain sqlite``: apsw ``executemany`` into one table with the columns HiveMem fills
  (id, namespace, kind, tier, content, data, tags, importance, times, version, content
  hash) plus a unique id index and a namespace index; one transaction per batch, WAL,
  ``synchronous=FULL``; ids (HiveMem's time-ordered ``new_id``), hashes and JSON are
  made inside the timed loop, as any application would;
* ``plain postgres``: the same rows through psycopg ``executemany`` into a table with
  the same columns (typed as in HiveMem's PostgreSQL schema), an id primary key and a
  namespace index, one transaction per batch, in a fresh schema of the same server;
* ``hivemem, no embedder``: ``remember_many`` with ``embedder=None``;
* two informational SQLite floors: the plain table plus an FTS5 index (HiveMem's
  tokenizer, kept by a trigger), and ``executemany`` straight into the schema HiveMem
  creates (all its indexes, and its FTS5 index filled once per batch as HiveMem does)
  without any HiveMem code. They show how
  much of the gap is the full-text index and the schema, and how much is Python.

The runs of a group are interleaved batch by batch (the order rotating), so drift in
the machine's speed (a noisy neighbour, onnxruntime warming up) hits them alike.

Ratios printed per backend: hivemem+minilm / embedder alone (target >= 0.9) and hivemem
without embedder / plain sqlite or plain postgres (target >= 0.7).

    python bench/ingest.py                            # 5,000 texts with embeddings, 50,000 without
    python bench/ingest.py --backend sqlite,postgres  # both, side by side
    python bench/ingest.py --quick                    # tiny, both backends, for CI
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import apsw

import hivemem
from _common import (
    Backend,
    TextGenerator,
    add_backend_arguments,
    backend_kinds,
    latency_summary,
    log,
    open_backends,
    print_table,
    side_by_side,
    write_results,
)
from hivemem.clock import new_id

NAMESPACE = "bench/ingest"
EMBEDDER_ALONE = "embedder alone"
WITH_EMBEDDER = "hivemem + minilm"
NO_EMBEDDER = "hivemem, no embedder"
#: Each backend's floor for ``hivemem, no embedder``, the one with the 0.7 target.
PLAIN = {"sqlite": "plain sqlite", "postgres": "plain postgres"}
TARGET_WITH_EMBEDDER = 0.9
TARGET_NO_EMBEDDER = 0.7

SQLITE_PLAIN_SCHEMA = """
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

#: The plain table on PostgreSQL, with the column types and collations of HiveMem's own schema.
POSTGRES_PLAIN_SCHEMA = """
CREATE TABLE memories (
    id text COLLATE "C" PRIMARY KEY,
    namespace text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    tier text COLLATE "C" NOT NULL,
    content text NOT NULL,
    data json NOT NULL,
    tags text[] COLLATE "C" NOT NULL,
    importance double precision NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    version integer NOT NULL,
    content_hash text COLLATE "C" NOT NULL
);
CREATE INDEX memories_namespace ON memories (namespace, created_at);
"""

#: Format with the driver's placeholder: ``?`` (apsw) or ``%s`` (psycopg).
PLAIN_INSERT = (
    "INSERT INTO memories (id, namespace, kind, tier, content, data, tags, importance, created_at, updated_at, "
    "version, content_hash) VALUES ({p}, {p}, 'note', 'short', {p}, {p}, {p}, 0.5, {p}, {p}, 1, {p})"
)

#: A step takes one batch of texts and the index of its first text.
Step = Callable[[Sequence[str], int], object]
#: A run: (backend, name); the backend is "" for the embedder alone.
RunKey = tuple[str, str]


def items_for(texts: Sequence[str], offset: int = 0) -> list[dict[str, Any]]:
    """remember_many items: a namespace, the text, a small data object and a tag."""
    return [
        {"namespace": NAMESPACE, "content": t, "data": {"n": offset + i}, "tags": ["bench"]}
        for i, t in enumerate(texts)
    ]


def remember_step(hive: hivemem.Hive) -> Step:
    return lambda part, offset: hive.remember_many(items_for(part, offset))


def plain_rows(part: Sequence[str], offset: int, encode_tags: Callable[[list[str]], Any]) -> list[tuple[Any, ...]]:
    """The plain floors' rows, made the way any application would (inside the timed step)."""
    now = time.time()
    return [
        (
            new_id(),
            NAMESPACE,
            t,
            json.dumps({"n": offset + i}),
            encode_tags(["bench"]),
            now,
            now,
            hashlib.sha256(t.encode("utf-8")).hexdigest(),
        )
        for i, t in enumerate(part)
    ]


def _connect(path: str, schema: str | None) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    if schema:
        conn.execute(schema)
    return conn


def plain_sqlite_step(conn: apsw.Connection) -> Step:
    sql = PLAIN_INSERT.format(p="?")

    def insert(part: Sequence[str], offset: int) -> None:
        rows = plain_rows(part, offset, json.dumps)
        with conn:  # one transaction per batch
            conn.executemany(sql, rows)

    return insert


def plain_postgres_step(conn: Any) -> Step:
    """psycopg ``executemany`` (which pipelines the rows) on an autocommit connection."""
    sql = PLAIN_INSERT.format(p="%s")

    def insert(part: Sequence[str], offset: int) -> None:
        rows = plain_rows(part, offset, list)
        with conn.transaction(), conn.cursor() as cursor:  # one transaction per batch
            cursor.executemany(sql, rows)

    return insert


def hivemem_schema_step(conn: apsw.Connection) -> Step:
    """executemany straight into HiveMem's own table and its indexes, then the full-text index in one
    INSERT ... SELECT per batch as HiveMem does it, with no HiveMem code."""
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
            first = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM memories").fetchone()[0]
            conn.executemany(sql, rows)
            conn.execute(
                "INSERT INTO memories_fts (rowid, content) SELECT rowid, content FROM memories WHERE rowid >= ?",
                (first,),
            )

    return insert


def no_embedder_runs(backend: Backend, stack: ExitStack) -> dict[str, tuple[str, Step]]:
    """The backend's runs without embeddings in table order, each with its store: floor, HiveMem, informational."""
    hive_target = backend.target("noemb")
    hive = stack.enter_context(hivemem.open(hive_target, embedder=None))
    hive_run = {NO_EMBEDDER: (hive_target, remember_step(hive))}
    if backend.kind == "postgres":
        import psycopg

        target = backend.target("plain")
        conn = stack.enter_context(psycopg.connect(target, autocommit=True))
        conn.execute(POSTGRES_PLAIN_SCHEMA)
        return {PLAIN["postgres"]: (target, plain_postgres_step(conn))} | hive_run
    plain, fts, schema = backend.target("plain"), backend.target("plain-fts"), backend.target("schema")
    hivemem.open(schema, embedder=None).close()  # creates HiveMem's schema
    conns = [
        _connect(plain, SQLITE_PLAIN_SCHEMA),
        _connect(fts, SQLITE_PLAIN_SCHEMA + FTS_SCHEMA),
        _connect(schema, None),
    ]
    for conn in conns:
        stack.callback(conn.close)
    return (
        {PLAIN["sqlite"]: (plain, plain_sqlite_step(conns[0]))}
        | hive_run
        | {
            "plain sqlite + fts5": (fts, plain_sqlite_step(conns[1])),
            "sqlite into hivemem schema": (schema, hivemem_schema_step(conns[2])),
        }
    )


def interleaved(steps: dict[RunKey, Step], texts: Sequence[str], batch: int) -> dict[RunKey, dict[str, Any]]:
    """Run every step on every batch, rotating the order per batch; the rate is over summed wall time."""
    keys = list(steps)
    times: dict[RunKey, list[float]] = {k: [] for k in keys}
    for b, start in enumerate(range(0, len(texts), batch)):
        part = texts[start : start + batch]
        for j in range(len(keys)):
            key = keys[(b + j) % len(keys)]
            t0 = time.perf_counter()
            steps[key](part, start)
            times[key].append(time.perf_counter() - t0)
    out = {}
    for (backend, name), spent in times.items():
        total = sum(spent)
        out[backend, name] = {
            "name": name,
            "backend": backend or None,
            "count": len(texts),
            "seconds": total,
            "per_s": len(texts) / total,
            "batch": latency_summary(spent),
        }
        label = f"{name} ({backend})" if backend else name
        log(f"  {label}: {len(texts):,} in {total:.2f} s = {len(texts) / total:,.0f}/s")
    return out


def ratios(kind: str, runs: dict[RunKey, dict[str, Any]]) -> list[dict[str, Any]]:
    """The backend's ratios of rates: HiveMem + MiniLM over the embedder alone, then HiveMem without an
    embedder over each of the backend's floors (only the plain one has a target)."""

    def ratio(numerator: RunKey, denominator: RunKey, target: float | None) -> dict[str, Any]:
        value = runs[numerator]["per_s"] / runs[denominator]["per_s"]
        return {
            "ratio": f"{numerator[1]} / {denominator[1]}",
            "backend": kind,
            "value": value,
            "target": target,
            "met": None if target is None else value >= target,
        }

    floors = [name for backend, name in runs if backend == kind and name not in (WITH_EMBEDDER, NO_EMBEDDER)]
    return [
        ratio((kind, WITH_EMBEDDER), ("", EMBEDDER_ALONE), TARGET_WITH_EMBEDDER),
        *(
            ratio((kind, NO_EMBEDDER), (kind, floor), TARGET_NO_EMBEDDER if floor == PLAIN[kind] else None)
            for floor in floors
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5_000, help="texts for the runs with embeddings")
    parser.add_argument("--count-plain", type=int, default=50_000, help="texts for the runs without embeddings")
    parser.add_argument("--batch", type=int, default=500, help="items per remember_many / transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    add_backend_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and both backends, for CI")
    args = parser.parse_args(argv)
    kinds = backend_kinds(args)
    if args.quick:
        args.count, args.count_plain, args.batch = 256, 3_000, 128

    gen = TextGenerator(args.seed)
    embed_texts = gen.sentences(args.count)
    plain_texts = gen.sentences(args.count_plain)
    embedder = hivemem.make_embedder("minilm")
    assert embedder is not None
    # Load the model and let onnxruntime size its buffers for a full batch; not timed.
    embedder.embed(TextGenerator(args.seed + 1000).sentences(min(args.batch, 256)))
    log(
        f"{len(embed_texts):,} texts with embeddings, {len(plain_texts):,} without; batch {args.batch}; "
        f"on {', '.join(kinds)}"
    )

    with (
        tempfile.TemporaryDirectory(dir=args.dir) as tmp,
        open_backends(kinds, Path(tmp), args.postgres_url) as backends,
    ):
        stores = {kind: backend.describe() for kind, backend in backends.items()}
        if "sqlite" in stores:
            stores["sqlite"] += " (synchronous=FULL, WAL)"
        written: list[tuple[Backend, str, int]] = []  # every store, to check its row count at the end
        with ExitStack() as stack:
            steps: dict[RunKey, Step] = {("", EMBEDDER_ALONE): lambda part, _offset: embedder.embed(part)}
            for kind, backend in backends.items():
                target = backend.target("emb")
                steps[kind, WITH_EMBEDDER] = remember_step(stack.enter_context(hivemem.open(target, embedder=embedder)))
                written.append((backend, target, len(embed_texts)))
            emb = interleaved(steps, embed_texts, args.batch)
        with ExitStack() as stack:
            per_backend = [
                [(backend, name, target, step) for name, (target, step) in no_embedder_runs(backend, stack).items()]
                for backend in backends.values()
            ]
            steps = {}
            for backend, name, target, step in side_by_side(per_backend):
                steps[backend.kind, name] = step
                written.append((backend, target, len(plain_texts)))
            noemb = interleaved(steps, plain_texts, args.batch)
        for backend, target, count in written:
            stored = backend.count(target)
            if stored != count:
                raise SystemExit(f"{target}: {stored} rows stored, expected {count}")

    runs = emb | noemb
    backend_ratios = {kind: ratios(kind, runs) for kind in kinds}
    print_table(
        f"remember_many throughput, batch {args.batch}; {'; '.join(stores.values())}",
        ["run", "backend", "memories", "per second", "batch p50 ms", "batch max ms"],
        [
            [r["name"], r["backend"], r["count"], r["per_s"], r["batch"]["p50_ms"], r["batch"]["max_ms"]]
            for r in runs.values()
        ],
    )
    print_table(
        "ratios",
        ["ratio", "backend", "value", "target", "met"],
        [[r["ratio"], r["backend"], r["value"], r["target"], r["met"]] for r in side_by_side(backend_ratios.values())],
    )
    path = write_results(
        "ingest",
        args,
        {
            "stores": stores,
            "embedder_alone": runs["", EMBEDDER_ALONE],
            "backends": {
                kind: {
                    "runs": {name: run for (backend, name), run in runs.items() if backend == kind},
                    "ratios": {r["ratio"]: {k: r[k] for k in ("value", "target", "met")} for r in backend_ratios[kind]},
                }
                for kind in kinds
            },
            "targets": {
                f"{WITH_EMBEDDER} / {EMBEDDER_ALONE}": TARGET_WITH_EMBEDDER,
                f"{NO_EMBEDDER} / {' or '.join(PLAIN[kind] for kind in kinds)}": TARGET_NO_EMBEDDER,
            },
        },
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
