"""Event delivery latency: from a write's commit in one process to a subscriber in another.

A subscriber process follows ``hive.subscribe("bench")`` and notes when each
event arrives (``time.monotonic()``, which all processes on the machine share).
The writer, in this process, remembers one memory at a time, ``--gap`` apart so
each is delivered alone, and notes when each ``remember`` returned, that is,
when its commit was done. Latency is arrival minus that return: it can be a
little below zero when the wake-up beats the writer's own return.

Deployments: SQLite (the subscriber polls the table every 20 ms, being in another
process), PostgreSQL (LISTEN/NOTIFY wakes it), and HTTP (a real ``hivemem
serve`` over SQLite; the subscriber reads server-sent events, so the server's
own waiting applies, plus the wire).

    python bench/events.py                 # 200 events per deployment
    python bench/events.py --quick         # tiny, for CI
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hivemem
from _common import Backend, hivemem_server, latency_summary, log, print_table, write_results

SPAWN = multiprocessing.get_context("spawn")
TARGET_P50_MS = 50.0


def _subscriber(target: str, api_key: str | None, count: int, ready: Any, arrivals: Any) -> None:
    options = {"api_key": api_key} if api_key else {"embedder": None}
    with hivemem.open(target, **options) as hive:
        ready.set()
        for seen, event in enumerate(hive.subscribe("bench", poll=1.0), start=1):
            arrivals.put((event.subject, time.monotonic()))
            if seen == count:
                return


@contextmanager
def _deployment(kind: str, backend: Backend) -> Iterator[tuple[str, str | None]]:
    """What the writer and the subscriber open: a store's target, or a server's URL and key."""
    target = backend.target("events")
    if kind != "http":
        yield target, None
        return
    with hivemem_server(target) as served:
        yield served


def measure(target: str, api_key: str | None, count: int, gap: float) -> dict[str, Any]:
    """``count`` writes, ``gap`` seconds apart, each timed from its commit to its arrival at the subscriber."""
    ready, arrivals = SPAWN.Event(), SPAWN.Queue()
    subscriber = SPAWN.Process(target=_subscriber, args=(target, api_key, count, ready, arrivals))
    subscriber.start()
    options = {"api_key": api_key} if api_key else {"embedder": None}
    committed: dict[str, float] = {}
    try:
        with hivemem.open(target, **options) as hive:
            if not ready.wait(timeout=60):
                raise SystemExit("the subscriber did not start")
            time.sleep(0.5)  # let it reach its first wait
            for i in range(count):
                memory = hive.remember("bench", f"event {i}")
                committed[memory.id] = time.monotonic()
                time.sleep(gap)
        received = dict(arrivals.get(timeout=60) for _ in range(count))
    finally:
        subscriber.join(timeout=30)
        if subscriber.is_alive():
            subscriber.kill()
    latencies = [received[memory_id] - done for memory_id, done in committed.items()]
    return latency_summary(latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", default="sqlite,postgres,http", help="comma-separated: sqlite, postgres, http")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL server to use instead of pgserver")
    parser.add_argument("--count", type=int, default=200, help="events per deployment")
    parser.add_argument("--gap", type=float, default=0.03, help="seconds between writes")
    parser.add_argument("--quick", action="store_true", help="20 events per deployment, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.count = 20
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.deployments.split(","):
            directory = Path(tmp) / kind  # a fresh store per deployment
            directory.mkdir()
            backend = Backend("postgres" if kind == "postgres" else "sqlite", directory, args.postgres_url)
            try:
                log(f"{kind}: {args.count} events")
                with _deployment(kind, backend) as (target, key):
                    m = measure(target, key, args.count, args.gap)
            finally:
                backend.close()
            results[kind] = m
            rows.append([kind, m["n"], m["p50_ms"], m["p95_ms"], m["p99_ms"], m["max_ms"]])
    print_table(
        "event delivery: commit (remember returned) to arrival at a subscriber in another process",
        ["deployment", "events", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows,
    )
    worst = max(m["p50_ms"] for m in results.values())
    met = "met" if worst <= TARGET_P50_MS else "not met"
    print(f"\nworst p50 {worst:.1f} ms; target <= {TARGET_P50_MS:.0f} ms: {met}")
    path = write_results("events", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
