"""Single-record writes: ``remember`` latency and throughput with 1, 4 and 16 concurrent writers.

Each writer is its own process (as separate agents or servers would be) with its
own Hive, writing one memory per call, no embedder (the write path alone). The
floor in the same run is a bare single-row ``INSERT`` + ``COMMIT`` per record
on the same backend, in the same kind of process:

* PostgreSQL: psycopg, one connection per writer, into a table with a text
  primary key and the columns a memory's identity needs (id, namespace,
  content, data as json, created_at), in a fresh schema of the same server;
* SQLite: apsw on a WAL file with ``synchronous=FULL`` (HiveMem's default),
  ``BEGIN IMMEDIATE`` + ``INSERT`` + ``COMMIT`` with a busy timeout.

On PostgreSQL a third writer, ``row-postgres``, shows what HiveMem's own row
costs: the same psycopg single-row INSERT (autocommit) but of a whole memory
(21 columns) into HiveMem's table, with its keyword index and btree indexes.
HiveMem can only be as fast as that; the gap between it and ``hivemem`` is
HiveMem's own work (validation, building the record, the pool, retries).

Writers start together at a barrier; throughput is records over the wall time
from the barrier to the last writer's finish. For each backend and writer count
the bare floor and HiveMem run back to back, the order alternating.

    python bench/writers.py                          # both backends, 1/4/16 writers
    python bench/writers.py --backend postgres --writers 1,4,16 --ops 500
    python bench/writers.py --quick                  # tiny, for CI
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    BACKENDS,
    Backend,
    add_backend_arguments,
    backend_kinds,
    latency_summary,
    log,
    print_table,
    settle_wal,
    write_results,
)

SPAWN = multiprocessing.get_context("spawn")
NAMESPACE = "bench/writers"
TARGET_RATIO = 0.7
_BARE_TABLE = (
    "CREATE TABLE IF NOT EXISTS bare (id text PRIMARY KEY, namespace text NOT NULL, "
    "content text NOT NULL, data {json} NOT NULL, created_at double precision NOT NULL)"
)


def _bare_postgres(target: str) -> tuple[Any, Any]:
    import psycopg

    conn = psycopg.connect(target)
    conn.execute(_BARE_TABLE.format(json="json"))
    conn.commit()

    def write(record_id: str, content: str) -> None:
        conn.execute("INSERT INTO bare VALUES (%s, %s, %s, %s, %s)", (record_id, NAMESPACE, content, "{}", time.time()))
        conn.commit()

    return write, conn.close


def _bare_sqlite(target: str) -> tuple[Any, Any]:
    import apsw

    conn = apsw.Connection(target)
    conn.setbusytimeout(30_000)
    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL")
    conn.execute(_BARE_TABLE.format(json="TEXT"))
    settle_wal(conn)

    def write(record_id: str, content: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO bare VALUES (?, ?, ?, ?, ?)", (record_id, NAMESPACE, content, "{}", time.time()))
        conn.execute("COMMIT")

    return write, conn.close


def _row_postgres(target: str) -> tuple[Any, Any]:
    import hashlib

    import psycopg

    import hivemem
    from hivemem.storage.base import MEMORY_COLUMNS

    hivemem.open(target, embedder=None).close()  # HiveMem's schema
    conn = psycopg.connect(target, autocommit=True)
    columns = [*MEMORY_COLUMNS, "root"]
    insert = f"INSERT INTO memories ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    fixed = {"kind": "note", "tier": "short", "data": "{}", "tags": [], "importance": 0.5, "access_count": 0}
    fixed |= {"version": 1, "sensitive": False, "root": NAMESPACE.partition("/")[0], "namespace": NAMESPACE}

    def write(record_id: str, content: str) -> None:
        now = time.time()
        row = fixed | {"id": record_id, "content": content, "created_at": now, "updated_at": now}
        row["content_hash"] = hashlib.sha256(content.encode()).hexdigest()
        conn.execute(insert, [row.get(c) for c in columns])

    return write, conn.close


def _hivemem(target: str) -> tuple[Any, Any]:
    import hivemem

    hive = hivemem.open(target, embedder=None, pool_size=1)

    def write(_record_id: str, content: str) -> None:
        hive.remember(NAMESPACE, content)

    return write, hive.close


OPENERS = {
    "bare-postgres": _bare_postgres,
    "row-postgres": _row_postgres,
    "bare-sqlite": _bare_sqlite,
    "hivemem": _hivemem,
}


def _writer(mode: str, target: str, worker: int, ops: int, barrier: Any, results: Any) -> None:
    from hivemem.clock import new_id

    write, close = OPENERS[mode](target)
    try:
        write(new_id(), f"warm-up record from writer {worker}")
        barrier.wait(timeout=120)
        times = []
        for i in range(ops):
            content = f"writer {worker} record {i}: the deploy of service {i % 17} finished"
            start = time.perf_counter()
            write(new_id(), content)
            times.append(time.perf_counter() - start)
        results.put((worker, time.perf_counter(), times))
    finally:
        close()


def run(mode: str, target: str, writers: int, ops: int) -> dict[str, Any]:
    """``writers`` processes each writing ``ops`` records; throughput and per-write latency."""
    # Create the table (or migrate the hive) once here, not racing in every writer.
    _, close = OPENERS[mode](target)
    close()
    barrier = SPAWN.Barrier(writers + 1)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=_writer, args=(mode, target, w, ops, barrier, results)) for w in range(writers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    start = time.perf_counter()
    reports = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"a {mode} writer failed")
    wall = max(finished for _, finished, _ in reports) - start
    latencies = [t for _, _, times in reports for t in times]
    return {"writes_per_s": len(latencies) / wall, **latency_summary(latencies)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, and how far the runs spread."""
    ordered = sorted(runs, key=lambda r: r["writes_per_s"])
    spread = [round(r["writes_per_s"]) for r in ordered]
    return {**ordered[len(ordered) // 2], "rounds_writes_per_s": spread}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser, BACKENDS)
    parser.add_argument("--writers", default="1,4,16", help="comma-separated writer counts")
    parser.add_argument("--ops", type=int, default=300, help="writes per writer")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each writer, interleaved; the median is kept")
    parser.add_argument("--quick", action="store_true", help="1 and 4 writers, 20 writes each, 1 round, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.writers, args.ops, args.rounds = "1,4", 20, 1
    counts = [int(w) for w in args.writers.split(",")]
    results: dict[str, Any] = {"backends": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in backend_kinds(args, BACKENDS):
            backend = Backend(kind, Path(tmp), args.postgres_url)
            try:
                bare = f"bare-{kind}"
                modes = [bare, "row-postgres", "hivemem"] if kind == "postgres" else [bare, "hivemem"]
                per_backend: dict[str, Any] = {}
                for writers in counts:
                    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
                    for round_ in range(args.rounds):
                        # Rotate the order each round: the disk's fsync time drifts during a run.
                        for mode in modes[round_ % len(modes) :] + modes[: round_ % len(modes)]:
                            log(f"{kind}: {writers} writer(s), {mode}, round {round_ + 1}/{args.rounds}")
                            runs[mode].append(run(mode, backend.target(mode.split("-")[0]), writers, args.ops))
                    measured = {mode: _median_run(r) for mode, r in runs.items()}
                    ratio = measured["hivemem"]["writes_per_s"] / measured[bare]["writes_per_s"]
                    per_backend[str(writers)] = {**measured, "ratio": ratio}
                    for mode in modes:
                        m = measured[mode]
                        rows.append([kind, writers, mode, m["writes_per_s"], m["p50_ms"], m["p95_ms"], m["n"]])
                    rows.append([kind, writers, "ratio hivemem / bare", ratio, None, None, None])
                    if "row-postgres" in measured:
                        row_ratio = measured["row-postgres"]["writes_per_s"] / measured[bare]["writes_per_s"]
                        rows.append([kind, writers, "ratio row / bare", row_ratio, None, None, None])
                results["backends"][kind] = per_backend
            finally:
                backend.close()
    print_table(
        "single-record writes (no embedder): one process per writer, each write its own transaction",
        ["backend", "writers", "writer", "writes/s", "p50 ms", "p95 ms", "writes"],
        rows,
    )
    single = results["backends"].get("postgres", {}).get("1")
    if single is not None:
        print(f"\nPostgreSQL, 1 writer: hivemem / bare INSERT+COMMIT = {single['ratio']:.2f}; target >= {TARGET_RATIO}")
    path = write_results("writers", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
