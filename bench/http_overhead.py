"""What HTTP adds to a call: remember and get through `hivemem serve` against the same calls embedded.

The server is a real ``python -m hivemem serve`` process on loopback with API
keys on, over a SQLite file; the client is ``hivemem.open("http://...",
api_key=...)``. The embedded Hive uses another file of the same kind. No
embedder on either side (the transport and the server are what is measured).
Calls alternate in rounds between the two so drift in fsync time hits both.

    python bench/http_overhead.py            # 2,000 calls of each kind
    python bench/http_overhead.py --quick    # 100, for CI

The target: p50 over HTTP at most 2 ms above the embedded p50, for remember and get.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hivemem
from _common import hivemem_server, latency_summary, log, print_table, write_results

TARGET_MS = 2.0


def _measure(hive: hivemem.Hive, calls: int, rounds: int, times: dict[str, list[float]]) -> None:
    ids = [hive.remember("bench/http", f"warm-up {i}").id for i in range(20)]
    operations: dict[str, Callable[[int], Any]] = {
        "remember": lambda i: hive.remember("bench/http", f"record {i}: the deploy of service {i % 17} finished"),
        "get": lambda i: hive.get(ids[i % len(ids)]),
    }
    for name, operation in operations.items():
        for i in range(calls // rounds):
            start = time.perf_counter()
            operation(i)
            times[name].append(time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls of each kind on each side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 calls, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 100, 2
    times: dict[str, dict[str, list[float]]] = {side: {"remember": [], "get": []} for side in ("embedded", "http")}
    with (
        tempfile.TemporaryDirectory() as tmp,
        hivemem_server(str(Path(tmp) / "served.db")) as (url, key),
        hivemem.open(str(Path(tmp) / "embedded.db"), embedder=None) as embedded,
        hivemem.open(url, api_key=key) as remote,
    ):
        for round_ in range(args.rounds):
            log(f"round {round_ + 1}/{args.rounds}")
            _measure(embedded, args.calls, args.rounds, times["embedded"])
            _measure(remote, args.calls, args.rounds, times["http"])
    results: dict[str, Any] = {}
    rows = []
    for operation in ("remember", "get"):
        local = latency_summary(times["embedded"][operation])
        remote = latency_summary(times["http"][operation])
        added = remote["p50_ms"] - local["p50_ms"]
        results[operation] = {"embedded": local, "http": remote, "added_p50_ms": added}
        rows.append([operation, local["p50_ms"], remote["p50_ms"], added, local["p99_ms"], remote["p99_ms"]])
    print_table(
        "HTTP overhead on loopback (SQLite, no embedder, API keys on)",
        ["call", "embedded p50 ms", "http p50 ms", "added p50 ms", "embedded p99 ms", "http p99 ms"],
        rows,
    )
    worst = max(r["added_p50_ms"] for r in results.values())
    print(f"\nadded p50 at most {worst:.2f} ms; target <= {TARGET_MS} ms")
    print(f"results: {write_results('http_overhead', args, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
