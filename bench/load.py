"""Load on a real server: N client processes doing 70% recall, 25% remember, 5% update, on SQLite and PostgreSQL.

For each backend a real ``python -m hivemem serve`` process serves a fresh store
on loopback with API keys on. It gets ``--preload`` memories of seeded text
through the client's ``remember_many`` (the server embeds them). Then, for each
client count N, N processes (each with its own ``hivemem.open(url, api_key=...)``)
start together at a barrier and call for ``--seconds``. Each call is drawn with
a seeded RNG: ``recall(query, namespace=..., k=10)`` 70%, ``remember(namespace,
new text)`` 25%, ``update(preloaded id, content=new text)`` 5%. Every query and
text is new, so neither the server's query-vector cache nor its embedding cache hits.

Requests per second count the successful calls over the wall time from the
barrier to the last client's last answer. Latency is per call as the client sees
it, client retries included. Errors are counted, printed, and fail the run.
The runs of one backend share its server and store, in order of client count,
so the corpus grows by what earlier runs remembered; the table gives the count
each run started with. The client processes share the machine's cores with the
server (and with PostgreSQL), so with more clients than cores the numbers
measure the machine as much as HiveMem.

    python bench/load.py                                # both backends, 1/4/16 clients, 10 s each
    python bench/load.py --backend postgres --clients 8 --seconds 30
    python bench/load.py --embedder none                # keyword-only recall, no embedding cost
    python bench/load.py --quick                        # tiny, for CI
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import hivemem
from _common import (
    TextGenerator,
    add_backend_arguments,
    backend_kinds,
    hivemem_server,
    latency_summary,
    log,
    open_backends,
    print_table,
    write_results,
)

#: Clients fork from a process that has imported this script, hence hivemem, once: 16 clients
#: each importing it afresh would keep a small machine busy for seconds before every run.
PROCESSES = multiprocessing.get_context("forkserver")
NAMESPACE = "bench/load"
#: Share of each call kind in the load.
MIX = {"recall": 0.70, "remember": 0.25, "update": 0.05}
DEFAULT_BACKENDS = ("sqlite", "postgres")
PRELOAD_BATCH = 500
#: Distinct error messages a client sends back; the count covers every error.
MAX_MESSAGES = 5


def client_seed(seed: int, clients: int, worker: int) -> int:
    """A seed for one client of one run: runs never repeat a text, so caches never hit."""
    return int(np.random.SeedSequence([seed, clients, worker]).generate_state(1)[0])


def _client(url: str, key: str, seed: int, ids: Sequence[str], seconds: float, barrier: Any, results: Any) -> None:
    """One client process: calls until ``seconds`` after the barrier, then sends its latencies."""
    rng = np.random.default_rng(seed)
    texts = TextGenerator(seed)
    kinds = list(MIX)
    weights = list(MIX.values())
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    with hivemem.open(url, api_key=key) as hive:
        hive.get(ids[0])  # opens the connection outside the timed calls
        barrier.wait(timeout=300)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            kind = kinds[int(rng.choice(len(kinds), p=weights))]
            # The arguments are drawn before the clock starts: only the call is timed.
            call: Callable[[], object]
            if kind == "recall":
                call = functools.partial(hive.recall, texts.queries(1)[0], namespace=NAMESPACE, k=10)
            elif kind == "remember":
                call = functools.partial(hive.remember, NAMESPACE, texts.sentence())
            else:
                call = functools.partial(hive.update, ids[int(rng.integers(len(ids)))], content=texts.sentence())
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # every failure is counted and shown; the run must have none
                errors[kind] += 1
                message = f"{kind}: {type(exc).__name__}: {exc}"
                if message in messages or len(messages) < MAX_MESSAGES:
                    messages[message] += 1
                continue
            latencies[kind].append(time.perf_counter() - start)
    results.put({"finished": time.perf_counter(), "latencies": latencies, "errors": errors, "messages": messages})


def run(url: str, key: str, clients: int, seconds: float, ids: Sequence[str], seed: int) -> dict[str, Any]:
    """``clients`` processes calling the server for ``seconds``: throughput, latency and errors, all and per kind."""
    barrier = PROCESSES.Barrier(clients + 1)
    out = PROCESSES.Queue()
    procs = [
        PROCESSES.Process(target=_client, args=(url, key, client_seed(seed, clients, w), ids, seconds, barrier, out))
        for w in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    start = time.perf_counter()
    reports = [out.get(timeout=seconds + 600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit("a client process failed")
    wall = max(report["finished"] for report in reports) - start
    messages: Counter[str] = sum((report["messages"] for report in reports), Counter())

    def summary(kinds: Sequence[str]) -> dict[str, Any]:
        times = [t for report in reports for kind in kinds for t in report["latencies"][kind]]
        errors = sum(report["errors"][kind] for report in reports for kind in kinds)
        return {"requests_per_s": len(times) / wall, "errors": errors, **latency_summary(times)}

    return {
        "wall_s": wall,
        "all": summary(list(MIX)),
        **{kind: summary([kind]) for kind in MIX},
        "error_messages": dict(messages),
    }


def preload(hive: hivemem.Hive, count: int, seed: int) -> list[str]:
    """Fill the served store with ``count`` memories of seeded text; returns their ids."""
    texts = TextGenerator(seed)
    ids: list[str] = []
    while len(ids) < count:
        batch = texts.sentences(min(PRELOAD_BATCH, count - len(ids)))
        ids += [m.id for m in hive.remember_many({"namespace": NAMESPACE, "content": t} for t in batch)]
        log(f"  preloaded {len(ids):,}/{count:,}")
    return ids


def table_rows(backends: dict[str, Any]) -> list[list[Any]]:
    """One row per backend, client count and call kind (``all`` first, with the memories at the start)."""
    rows = []
    for kind, per_backend in backends.items():
        for clients, measured in per_backend["runs"].items():
            for op in ("all", *MIX):
                m = measured[op]
                memories = measured["memories_at_start"] if op == "all" else None
                latency = [m["p50_ms"], m["p99_ms"]]
                rows.append([kind, int(clients), memories, op, m["n"], m["requests_per_s"], *latency, m["errors"]])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser, DEFAULT_BACKENDS)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client process counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each run calls")
    parser.add_argument("--preload", type=int, default=2000, help="memories in the store before the first run")
    parser.add_argument(
        "--embedder",
        choices=["minilm", "none"],
        default="minilm",
        help="the server's embedder (default: minilm, what a user gets; none: keyword-only recall)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="50 memories, 1 and 2 clients, 2 s each, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.preload = "1,2", 2.0, 50
    if args.preload < 1:
        raise SystemExit("--preload must be at least 1: updates pick from the preloaded memories")
    kinds = backend_kinds(args, DEFAULT_BACKENDS)
    counts = [int(c) for c in args.clients.split(",")]
    log(f"embedder: {args.embedder}; {os.cpu_count()} CPUs shared by the server and every client process")
    results: dict[str, Any] = {"embedder": args.embedder, "mix": MIX, "backends": {}}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, open_backends(kinds, Path(tmp), args.postgres_url) as stores:
        for kind, backend in stores.items():
            target = backend.target("load")
            per_backend: dict[str, Any] = {"store": backend.describe(), "runs": {}}
            with hivemem_server(target, args.embedder) as (url, key):
                with hivemem.open(url, api_key=key) as hive:
                    # Through the server, so its embedder makes the stored vectors and loads its model once.
                    log(f"{kind}: preloading {args.preload:,} memories")
                    ids = preload(hive, args.preload, args.seed)
                    backend.settle(target)
                    # The server loads its vector index on the first recall; no run should pay for that.
                    hive.recall("warm-up query", namespace=NAMESPACE, k=10)
                for clients in counts:
                    memories = backend.count(target)
                    log(f"{kind}: {clients} client(s), {args.seconds:g} s, {memories:,} memories")
                    measured = run(url, key, clients, args.seconds, ids, args.seed)
                    per_backend["runs"][str(clients)] = {"memories_at_start": memories, **measured}
            results["backends"][kind] = per_backend
    print_table(
        f"load over HTTP on loopback: {', '.join(f'{share:.0%} {kind}' for kind, share in MIX.items())}; "
        f"k=10; embedder {args.embedder}; {args.seconds:g} s per run",
        ["backend", "clients", "memories at start", "call", "requests", "req/s", "p50 ms", "p99 ms", "errors"],
        table_rows(results["backends"]),
    )
    print(
        f"\nThe client processes share this machine's {os.cpu_count()} CPUs with the server"
        f"{' and PostgreSQL' if 'postgres' in kinds else ''}: with more clients than CPUs they compete for them."
    )
    for kind, per_backend in results["backends"].items():
        print(f"{kind}: {per_backend['store']}")
    errors = 0
    for kind, per_backend in results["backends"].items():
        for clients, measured in per_backend["runs"].items():
            errors += measured["all"]["errors"]
            for message, n in measured["error_messages"].items():
                print(f"ERROR {kind}, {clients} client(s), {n}x: {message}")
    print(f"errors: {errors}")
    print(f"results: {write_results('load', args, results)}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
