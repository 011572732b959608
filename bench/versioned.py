"""Versioned update throughput under contention: 1, 4 and 16 threads on one record.

Every thread shares one Hive (no embedder) and increments ``data["n"]`` of the
same memory, each update a read-modify-write with ``expected_version``. Three
ways to get there, each on a fresh record:

* ``reject``: read, update with the version read, and on VersionConflict read
  again and retry (the default strategy; how most agents would do it);
* ``function``: read, update with ``on_conflict=`` a function that adds what
  this writer added to the stored value: one call, never a retry;
* ``unversioned`` (reference): an update without ``expected_version`` and no
  read, which cannot count correctly; it shows what versioning costs.

Reported per run: successful updates per second (wall time from a barrier to
the last thread's finish), conflicts per successful update (retries for
``reject``, resolutions for ``function``) and the latency of one successful
update, from its first read to its success, retries included (p50, p99). The
record's final ``n`` is checked against the successful updates: a lost update
fails the run.

    python bench/versioned.py                     # SQLite and PostgreSQL, 1/4/16 threads
    python bench/versioned.py --backend postgres --threads 16 --ops 200
    python bench/versioned.py --quick             # tiny, for CI
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import hivemem
from _common import (
    BACKENDS,
    add_backend_arguments,
    backend_kinds,
    latency_summary,
    log,
    open_backends,
    print_table,
    side_by_side,
    write_results,
)
from hivemem import Hive, Memory, VersionConflict

NAMESPACE = "bench/versioned"
MODES = ("reject", "function", "unversioned")


def _add_what_ours_added(base: Memory, ours: Memory, theirs: Memory) -> dict[str, Any]:
    return {"data": {"n": theirs.data["n"] + ours.data["n"] - base.data["n"]}}


def _increment(hive: Hive, mode: str, record: str) -> int:
    """One successful increment; returns how many conflicts it met."""
    if mode == "unversioned":
        hive.update(record, importance=0.5)
        return 0
    conflicts = 0
    while True:
        read = hive.get(record)
        on_conflict = _add_what_ours_added if mode == "function" else "reject"
        try:
            written = hive.update(
                record, data={"n": read.data["n"] + 1}, expected_version=read.version, on_conflict=on_conflict
            )
        except VersionConflict:
            conflicts += 1
            continue
        return conflicts + int(written.version > read.version + 1)


def run(hive: Hive, mode: str, threads: int, ops: int) -> dict[str, Any]:
    """``threads`` threads each making ``ops`` successful increments of one new record."""
    record = hive.remember(NAMESPACE, f"{mode} counter", data={"n": 0}).id
    barrier = threading.Barrier(threads + 1)
    times: list[float] = []
    conflicts: list[int] = []
    finished: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=120)
            for _ in range(ops):
                start = time.perf_counter()
                conflicts.append(_increment(hive, mode, record))
                times.append(time.perf_counter() - start)
            finished.append(time.perf_counter())
        except BaseException as exc:
            errors.append(exc)
            raise

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait(timeout=120)
    start = time.perf_counter()
    for t in pool:
        t.join()
    if errors:
        raise SystemExit(f"a {mode} writer failed: {errors[0]!r}")
    wall = max(finished) - start
    stored = hive.get(record)
    if stored.version != threads * ops + 1 or (mode != "unversioned" and stored.data["n"] != threads * ops):
        raise SystemExit(f"{mode}: {threads * ops} updates succeeded but the record is {stored.to_dict()}")
    return {
        "updates_per_s": len(times) / wall,
        "conflicts_per_update": sum(conflicts) / len(times),
        **latency_summary(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser)
    parser.add_argument("--threads", default="1,4,16", help="comma-separated thread counts")
    parser.add_argument("--ops", type=int, default=100, help="successful updates per thread")
    parser.add_argument("--quick", action="store_true", help="1 and 4 threads, 10 updates each, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.threads, args.ops = "1,4", 10
    if not args.backend:
        args.backend = list(BACKENDS)  # both, unlike the other benchmarks: contention differs most between them
    counts = [int(t) for t in args.threads.split(",")]
    results: dict[str, Any] = {"backends": {}}
    groups: list[list[list[Any]]] = []
    kinds = backend_kinds(args)
    with tempfile.TemporaryDirectory() as tmp, open_backends(kinds, Path(tmp), args.postgres_url) as backends:
        for kind, backend in backends.items():
            rows: list[list[Any]] = []
            per_backend: dict[str, Any] = {"store": backend.describe()}
            # A pool as large as the most threads: the record is what they contend for, not connections.
            with hivemem.open(backend.target("versioned"), embedder=None, pool_size=max(counts)) as hive:
                for threads in counts:
                    for mode in MODES:
                        log(f"{kind}: {threads} thread(s), {mode}")
                        measured = run(hive, mode, threads, args.ops)
                        per_backend[f"{threads}/{mode}"] = measured
                        rows.append(
                            [
                                kind,
                                threads,
                                mode,
                                measured["updates_per_s"],
                                measured["conflicts_per_update"],
                                measured["p50_ms"],
                                measured["p99_ms"],
                                measured["n"],
                            ]
                        )
            results["backends"][kind] = per_backend
            groups.append(rows)
    print_table(
        "versioned updates of one record (no embedder): threads on one Hive, each update a read-modify-write",
        ["backend", "threads", "mode", "updates/s", "conflicts/update", "p50 ms", "p99 ms", "updates"],
        side_by_side(groups),
    )
    path = write_results("versioned", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
