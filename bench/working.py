"""Working memory: append and messages() latency with 1 and 8 writers, token counting speed, and the guarantees.

Each writer is its own process with its own Hive (no embedder), as separate
agents would be, all appending to ONE buffer (the contended case: appends to a
buffer take turns on its row). A buffer holds at most ``--max-tokens`` tokens
(MiniLM-counted) and flushes at 0.8 of that with the extractive summarizer, so
the run includes evictions and inline flushes. Every message carries a secret
that the buffer's redaction pattern must remove.

* append: latency of ``WorkingMemory.append`` (one transaction: read the
  buffer, redact, count, evict or flush, write), 1 and 8 writers;
* messages: latency of ``WorkingMemory.messages(token_budget=...)`` (a write
  transaction too: it counts the read for lru/lfu), 1 and 8 readers;
* overruns: appends whose returned stats, or reads whose messages, exceed the
  limits (must be 0);
* leaks: on SQLite, occurrences of the secret in the database file and its WAL
  after the run (must be 0);
* token counting: tokens per second of each counter on the same messages.

SQLite runs with HiveMem's default ``synchronous=full`` (each commit waits for
fsync) and with ``normal`` (durable across process crashes, not power loss).
The floor in the same run is one bare durable commit (``bench/writers.py``'s
``bare`` writer, the default durability): an append cannot be cheaper.

    python bench/working.py                  # sqlite and postgres
    python bench/working.py --quick          # tiny, for CI
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
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
from hivemem.tokens import counter_for
from writers import run as bare_commits

SPAWN = multiprocessing.get_context("spawn")
KEY = "bench/session"
SECRET = "SECRET-4411-OMEGA"
PATTERN = r"SECRET-\d+-[A-Z]+"
TARGET_APPEND_P50_MS = 2.0
_WORDS = (
    "deploy migration cache rate limit payments invoice refund retry backoff token bucket agent "
    "review schema index replica failover lease fence event inbox summary budget window"
).split()


def _message(rng: random.Random, n: int) -> str:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 30)))
    return f"Turn {n}: {words}. The key {SECRET} must never be stored."


def _settings(max_tokens: int) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "redact_patterns": [PATTERN], "counter": "minilm"}


def _worker(
    target: str, options: dict[str, Any], n: int, count: int, max_tokens: int, barrier: Any, results: Any
) -> None:
    rng = random.Random(n)
    with hivemem.open(target, embedder=None, **options) as hive:
        w = hive.working(KEY, **_settings(max_tokens))
        # Warm up (connection, schema check); the first writer also pins a system message.
        if n == 0:
            w.append("system", "You are a benchmark agent.")
        else:
            w.stats()
        barrier.wait(timeout=120)
        appends: list[float] = []
        reads: list[float] = []
        overruns = 0
        for i in range(count):
            start = time.perf_counter()
            stats = w.append("user", _message(rng, i))
            appends.append(time.perf_counter() - start)
            overruns += stats.tokens > max_tokens
        for _ in range(count):
            start = time.perf_counter()
            got = w.messages(token_budget=max_tokens // 2)
            reads.append(time.perf_counter() - start)
            overruns += sum(m.tokens for m in got) > max_tokens // 2
        results.put((appends, reads, overruns))


def measure(target: str, options: dict[str, Any], workers: int, count: int, max_tokens: int) -> dict[str, Any]:
    """``workers`` processes appending ``count`` messages each to one buffer, then reading it ``count`` times."""
    barrier, results = SPAWN.Barrier(workers + 1), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_worker, args=(target, options, n, count, max_tokens, barrier, results))
        for n in range(workers)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    reports = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    with hivemem.open(target, embedder=None) as hive:
        stats = hive.working_stats(KEY)
        final = hive.working_messages(KEY)
    overruns = sum(r[2] for r in reports) + (sum(m.tokens for m in final) > max_tokens)
    leaks = sum(SECRET in m.content for m in final)
    return {
        "append": latency_summary([t for r in reports for t in r[0]]),
        "messages": latency_summary([t for r in reports for t in r[1]]),
        "overruns": overruns,
        "leaks_in_results": leaks,
        "flushes": stats.flushes,
        "evictions": stats.evictions,
    }


def file_leaks(target: str) -> int:
    """Occurrences of the secret in a SQLite file and its WAL (and shared memory) file."""
    path = Path(target)
    return sum(p.read_bytes().count(SECRET.encode()) for p in path.parent.glob(path.name + "*"))


def counting_speed(messages: int) -> list[dict[str, Any]]:
    """Tokens per second of each offline counter over the same messages."""
    rng = random.Random(1)
    texts = [_message(rng, i) for i in range(messages)]
    out = []
    for name in ("minilm", "estimate"):
        counter = counter_for(name)
        counter.count(texts[0])  # load the vocabulary outside the timing
        start = time.perf_counter()
        tokens = sum(counter.count(t) for t in texts)
        elapsed = time.perf_counter() - start
        out.append({"counter": counter.name, "tokens": tokens, "tokens_per_s": tokens / elapsed})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser, BACKENDS)
    parser.add_argument("--appends", type=int, default=1000, help="appends (and reads) per writer")
    parser.add_argument("--writers", type=int, default=8, help="processes on one buffer")
    parser.add_argument("--max-tokens", type=int, default=2000, help="the buffer's token limit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.appends, args.writers = 60, 3
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in backend_kinds(args, BACKENDS):
            backend = Backend(kind, Path(tmp), args.postgres_url)
            try:
                variants = {"sqlite": {"synchronous": "full"}, "sqlite, synchronous=normal": {"synchronous": "normal"}}
                if kind == "postgres":
                    variants = {"postgres": {}}
                floor = bare_commits(f"bare-{kind}", backend.target("bare"), 1, max(50, args.appends // 4))
                rows.append([kind, "bare durable commit", 1, floor["p50_ms"], floor.get("p99_ms"), None, None])
                for name, options in variants.items():
                    for workers in (1, args.writers):
                        log(f"{name}: {workers} writer(s) x {args.appends} appends and reads")
                        target = backend.target("working")
                        m = measure(target, options, workers, args.appends, args.max_tokens)
                        m["leaks_in_file"] = file_leaks(target) if kind == "sqlite" else None
                        results[f"{name}/{workers}"] = m
                        for op in ("append", "messages"):
                            p50, p99 = m[op]["p50_ms"], m[op]["p99_ms"]
                            rows.append([name, op, workers, p50, p99, m["overruns"], m["leaks_in_file"]])
            finally:
                backend.close()
    print_table(
        f"working memory: latency per call, one buffer of {args.max_tokens} tokens shared by every writer "
        "(one process per writer)",
        ["backend", "call", "writers", "p50 ms", "p99 ms", "overruns", "leaks in file"],
        rows,
    )
    speed = counting_speed(200 if args.quick else 5000)
    results["token_counting"] = speed
    print_table("token counting", ["counter", "tokens", "tokens per s"], [list(s.values()) for s in speed])
    single = results.get("sqlite/1")
    if single is not None:
        p50 = single["append"]["p50_ms"]
        met = "met" if p50 <= TARGET_APPEND_P50_MS else "not met"
        print(f"\nSQLite (synchronous=full), 1 writer: append p50 {p50:.2f} ms; target <= 2 ms: {met}")
    path = write_results("working", args, results)
    print(f"results: {path}")
    clean = all(
        m["overruns"] == 0 and m["leaks_in_results"] == 0 and not m["leaks_in_file"]
        for k, m in results.items()
        if k != "token_counting"
    )
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
