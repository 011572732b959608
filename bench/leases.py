"""Leases: acquire + release per second, uncontended and with 8 contenders on one resource.

Each worker is its own process with its own Hive (no embedder), as separate
agents would be. A cycle is ``hive.lock(resource)`` followed by
``lease.release()``: two write transactions, the grant durable (its fencing
token must never go back after a crash), the release on SQLite committed
without waiting for fsync (a release lost in a power failure lapses at its ttl).

* uncontended: one process, each cycle on the same resource, nothing waiting;
* contended: 8 processes cycling on one resource at once (``wait`` long
  enough that none gives up); latency is from asking to holding, waits
  included. Every grant's token is checked to be unique and the last token to
  equal the number of grants (no grant lost or doubled).

The floor in the same run is one bare durable commit (``bench/writers.py``'s
``bare`` writer): a grant cannot be cheaper than that. SQLite runs twice, with
HiveMem's default ``synchronous=full`` (a commit waits for fsync) and with
``normal`` (durable across process crashes, not power loss), since on SQLite the
fsync decides the rate.

    python bench/leases.py                  # sqlite and postgres
    python bench/leases.py --quick          # tiny, for CI
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import hivemem
from _common import (
    BACKENDS,
    Backend,
    add_backend_arguments,
    backend_kinds,
    latency_summary,
    log,
    print_table,
    write_results,
)
from writers import run as bare_commits

SPAWN = multiprocessing.get_context("spawn")
RESOURCE = "bench/lease"
TARGET_SQLITE = 1000.0


def _cycle(target: str, options: dict[str, Any], cycles: int, barrier: Any, results: Any) -> None:
    with hivemem.open(target, embedder=None, **options) as hive:
        hive.lock(RESOURCE, wait=60).release()  # warm: connection, schema check
        barrier.wait(timeout=120)
        took: list[float] = []
        tokens: list[int] = []
        for _ in range(cycles):
            start = time.perf_counter()
            lease = hive.lock(RESOURCE, ttl=30, wait=120)
            took.append(time.perf_counter() - start)
            tokens.append(lease.token)
            lease.release()
        results.put((took, tokens, time.perf_counter()))


def measure(target: str, options: dict[str, Any], workers: int, cycles: int) -> dict[str, Any]:
    """``workers`` processes doing ``cycles`` lock + release each; rates, latency, token check."""
    barrier, results = SPAWN.Barrier(workers + 1), SPAWN.Queue()
    procs = [SPAWN.Process(target=_cycle, args=(target, options, cycles, barrier, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    start = time.perf_counter()
    reports = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    elapsed = max(r[2] for r in reports) - start
    took = [t for r in reports for t in r[0]]
    tokens = sorted(t for r in reports for t in r[1])
    with hivemem.open(target, embedder=None) as hive:
        last = hive.lock(RESOURCE, wait=0)
        last.release()
    grants = workers * cycles
    ok = len(set(tokens)) == grants and last.token == grants + workers + 1  # + the warm-ups, + this one
    return {"cycles_per_s": grants / elapsed, **latency_summary(took), "tokens_ok": ok, "n": grants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser, BACKENDS)
    parser.add_argument("--cycles", type=int, default=1000, help="lock + release cycles, uncontended")
    parser.add_argument("--contenders", type=int, default=8, help="processes on one resource")
    parser.add_argument("--contended-cycles", type=int, default=100, help="cycles per contender")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.cycles, args.contenders, args.contended_cycles = 50, 3, 10
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in backend_kinds(args, BACKENDS):
            backend = Backend(kind, Path(tmp), args.postgres_url)
            try:
                variants = {"sqlite": {"synchronous": "full"}, "sqlite, synchronous=normal": {"synchronous": "normal"}}
                if kind == "postgres":
                    variants = {"postgres": {}}
                floor = bare_commits(f"bare-{kind}", backend.target("bare"), 1, max(50, args.cycles // 4))
                rows.append([kind, "bare durable commit", 1, floor["writes_per_s"], floor["p50_ms"], None, None])
                for name, options in variants.items():
                    for workers, cycles in ((1, args.cycles), (args.contenders, args.contended_cycles)):
                        log(f"{name}: {workers} worker(s) x {cycles} cycles")
                        m = measure(backend.target("leases"), options, workers, cycles)
                        results[f"{name}/{workers}"] = m
                        rows.append(
                            [
                                name,
                                "lock + release",
                                workers,
                                m["cycles_per_s"],
                                m["p50_ms"],
                                m["p99_ms"],
                                m["tokens_ok"],
                            ]
                        )
            finally:
                backend.close()
    print_table(
        "leases: lock + release cycles per second (one process per worker; lock latency includes waiting)",
        ["backend", "what", "workers", "per s", "p50 ms", "p99 ms", "tokens ok"],
        rows,
    )
    uncontended = results.get("sqlite/1")
    if uncontended is not None:
        met = "met" if uncontended["cycles_per_s"] >= TARGET_SQLITE else "not met"
        print(f"\nSQLite (synchronous=full), uncontended: {uncontended['cycles_per_s']:.0f}/s; target >= 1000: {met}")
    path = write_results("leases", args, results)
    print(f"results: {path}")
    return 0 if all(m["tokens_ok"] for m in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
