"""Shared helpers for the benchmarks: deterministic text, timing, tables and JSON results.

Not a benchmark itself; each ``bench/<name>.py`` imports it (the script's own
folder is first on ``sys.path`` when run as ``python bench/<name>.py``).
"""

from __future__ import annotations

import argparse
import importlib.resources
import itertools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

import hivemem

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Bump when the text generator changes, so cached embeddings of old texts are not reused.
GENERATOR_VERSION = 1

T = TypeVar("T")


#: The stores a benchmark can run on, in the order their results are printed.
BACKENDS = ("sqlite", "postgres")


class Backend:
    """Where a benchmark's hives live: SQLite files in a folder, or fresh schemas of one PostgreSQL.

    PostgreSQL comes from ``--postgres-url`` (or ``HIVEMEM_BENCH_POSTGRES_URL``); without
    one, the PyPI package ``pgserver`` starts a private PostgreSQL 16 with pgvector for
    the run. Every call to :meth:`target` names a new, empty store; :meth:`discard`
    deletes one, and :meth:`close` deletes the schemas left on a server the run did not start.
    """

    def __init__(self, kind: str, directory: Path, postgres_url: str | None = None) -> None:
        if kind not in BACKENDS:
            raise SystemExit(f"--backend must be sqlite or postgres, not {kind!r}")
        self.kind = kind
        self.directory = directory
        self._count = 0
        self._server: Any = None
        self._schemas: dict[str, str] = {}  # target URL -> schema
        self.url = ""
        if kind == "postgres":
            self.url = postgres_url or os.environ.get("HIVEMEM_BENCH_POSTGRES_URL") or self._start_server()
            self._sql("CREATE EXTENSION IF NOT EXISTS vector")

    def _start_server(self) -> str:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        log("starting a private PostgreSQL (pgserver)")
        self._server = pgserver.get_server(self.directory / "pg", cleanup_mode="stop")
        url: str = self._server.get_uri()
        return url

    def _sql(self, statement: str, url: str | None = None) -> Any:
        """Run one statement in autocommit mode; returns the first row, if any."""
        import psycopg

        with psycopg.connect(url or self.url, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchone() if cursor.description else None

    def target(self, name: str) -> str:
        """A new store's target: a file path, or a URL whose search_path is a new schema."""
        self._count += 1
        if self.kind == "sqlite":
            return str(self.directory / f"{name}-{self._count}.db")
        import urllib.parse

        schema = f"bench_{name.replace('-', '_')}_{os.getpid()}_{self._count}"
        self._sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self._sql(f"CREATE SCHEMA {schema}")
        parts = urllib.parse.urlsplit(self.url)
        query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema},public")]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        self._schemas[url] = schema
        return url

    def describe(self) -> str:
        """The server and its durability settings, for tables and JSON."""
        if self.kind == "sqlite":
            import apsw

            return f"SQLite {apsw.sqlite_lib_version()}"
        version, fsync, commit = self._sql(
            "SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')"
        )
        return f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={commit}"

    def count(self, target: str, table: str = "memories") -> int:
        """Rows in ``table`` of a store made by :meth:`target`."""
        if self.kind == "postgres":
            return int(self._sql(f"SELECT count(*) FROM {table}", target)[0])
        import apsw

        conn = apsw.Connection(target)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    def settle(self, target: str, table: str = "memories") -> None:
        """Leave a freshly filled PostgreSQL table as autovacuum soon would: ``VACUUM ANALYZE``.

        Until then the planner, with no statistics, takes the table for empty and scans
        it instead of using the HNSW and GIN indexes, and keyword search also reads GIN's
        pending list linearly. At 10k memories that made recall 3 to 10 times slower.
        """
        if self.kind == "postgres":
            self._sql(f"VACUUM ANALYZE {table}", target)

    def discard(self, target: str) -> None:
        """Delete a store made by :meth:`target` (its connections must be closed)."""
        if self.kind == "sqlite":
            Path(target).unlink()
        else:
            self._sql(f"DROP SCHEMA {self._schemas.pop(target)} CASCADE")

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # its data lives in the run's temporary folder
        else:
            for target in list(self._schemas):
                self.discard(target)


def add_backend_arguments(parser: argparse.ArgumentParser, default: Sequence[str] = ("sqlite",)) -> None:
    """``--backend`` (repeatable or comma-separated) and ``--postgres-url``; read them with :func:`backend_kinds`.

    ``default`` only words the help; pass the same one to :func:`backend_kinds`.
    """
    parser.add_argument(
        "--backend",
        action="append",
        metavar="sqlite|postgres",
        help="store(s) to measure, repeatable or comma-separated "
        f"(default: {','.join(default)}; with --quick: sqlite,postgres)",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="PostgreSQL with pgvector whose database gets a fresh schema per store "
        "(default: $HIVEMEM_BENCH_POSTGRES_URL, else a private server started with pgserver)",
    )


def backend_kinds(args: argparse.Namespace, default: Sequence[str] = ("sqlite",)) -> list[str]:
    """The backends asked for, in :data:`BACKENDS` order; also stored back in ``args.backend`` for the JSON.

    Without ``--backend``: ``default``, or every backend with ``--quick``.
    """
    asked = {kind.strip() for value in args.backend or [] for kind in value.split(",") if kind.strip()}
    unknown = sorted(asked - set(BACKENDS))
    if unknown:
        raise SystemExit(f"--backend must be sqlite or postgres, not {', '.join(map(repr, unknown))}")
    if not asked:
        asked = set(BACKENDS) if args.quick else set(default)
    args.backend = [kind for kind in BACKENDS if kind in asked]
    return list(args.backend)


@contextmanager
def open_backends(kinds: Sequence[str], directory: Path, postgres_url: str | None) -> Iterator[dict[str, Backend]]:
    """A :class:`Backend` per kind, all closed on exit."""
    backends: dict[str, Backend] = {}
    try:
        for kind in kinds:
            backends[kind] = Backend(kind, directory, postgres_url)
        yield backends
    finally:
        for backend in backends.values():
            backend.close()


_MISSING: Any = object()


def side_by_side(groups: Iterable[Sequence[T]]) -> list[T]:
    """The groups' items interleaved: every first item, then every second one...; shorter groups drop out.

    With one group per backend, the same run or ratio of each backend lands on adjacent rows.
    """
    return [
        item for rank in itertools.zip_longest(*groups, fillvalue=_MISSING) for item in rank if item is not _MISSING
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def hivemem_server(target: str, embedder: str = "none") -> Iterator[tuple[str, str]]:
    """A real ``python -m hivemem serve`` process on loopback over ``target``, API keys on.

    Yields the server's URL and an ``admin:*`` key, made on the database as
    ``hivemem keys create`` would (in this process: a second Python start-up would
    cost seconds); the server is stopped on exit. Its stderr is this process's, so
    a server-side traceback shows up next to the benchmark's progress.

    Args:
        target: What the server opens (``--db``): a SQLite file or a PostgreSQL URL.
        embedder: The server's ``--embedder``; it must be the one that made any stored vectors.
    """
    with hivemem.open(target, embedder=embedder) as hive:
        _, key = hive.create_api_key("bench", ["admin:*"])
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "hivemem", "--db", target, "--embedder", embedder, "serve", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        yield url, key
    finally:
        server.terminate()
        server.wait(timeout=10)


def settle_wal(conn: Any) -> None:
    """Commit throwaway rows on an apsw connection until its WAL file stops growing.

    A bare SQLite baseline calls this before it is timed. A commit that extends
    the WAL costs about twice one that overwrites it (fdatasync must then also
    journal the file's new size and blocks), and on a database in use the WAL
    has long reached the size it keeps. HiveMem sizes its WAL to that at open,
    so a baseline on a new file would be slower than it is in use.
    """
    wal = Path(conn.filename_wal)
    conn.execute("CREATE TABLE IF NOT EXISTS settle_wal (v BLOB)")
    previous = -1
    while True:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO settle_wal VALUES (zeroblob(65536))")
        conn.execute("COMMIT")
        size = wal.stat().st_size
        if size == previous:  # the WAL started over at its beginning
            return
        previous = size


def log(message: str) -> None:
    """Progress goes to stderr so stdout keeps only the tables."""
    print(message, file=sys.stderr, flush=True)


def results_dir() -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "hivemem": hivemem.__version__,
        "numpy": np.__version__,
    }


def write_results(name: str, args: Any, results: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the run's arguments and machine facts."""
    payload = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args) if not isinstance(args, dict) else args,
        "machine": machine(),
        **results,
    }
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path | datetime):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table on stdout: numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    print()
    print(title)
    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    sys.stdout.flush()


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)) or value is None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        x = float(value)
        if math.isnan(x):
            return "-"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.1f}"
        if abs(x) >= 1:
            return f"{x:.2f}"
        return f"{x:.3f}"
    return str(value)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), p))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": float(np.mean(ms)) if ms else float("nan"),
        "max_ms": max(ms) if ms else float("nan"),
    }


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- deterministic text ------------------------------------------------------------------------


def _vocabulary() -> list[str]:
    """Whole English words from the MiniLM WordPiece vocabulary, roughly in frequency order.

    BERT's vocabulary lists its whole words after the special tokens and single
    characters, most frequent first ("the", "of", "and"...), which gives a
    natural Zipf-like word distribution when words are drawn by rank.
    """
    text = importlib.resources.files("hivemem.data").joinpath("minilm-vocab.txt").read_text(encoding="utf-8")
    tokens = text.split("\n")
    start = tokens.index("the")
    return [t for t in tokens[start:] if t.isascii() and t.isalpha() and t.islower() and (len(t) > 1 or t in "ai")]


class TextGenerator:
    """Distinct, varied English-like sentences from a seeded RNG.

    Words are drawn from the MiniLM vocabulary with Zipf weights (rank ** -1.05),
    so common words ("the", "was") are common and posting lists have realistic
    lengths; a few sentences carry a number or a ticket id. Every text returned
    by one generator is distinct (HiveMem caches embeddings by content hash, so
    duplicates would make ingestion look cheaper than it is).

    Args:
        seed: RNG seed; the same seed gives the same texts on any machine.
        min_words: Shortest sentence.
        max_words: Longest sentence.
    """

    def __init__(self, seed: int, min_words: int = 10, max_words: int = 30) -> None:
        self.words = _vocabulary()
        ranks = np.arange(1, len(self.words) + 1, dtype=np.float64)
        weights = ranks**-1.05
        self._cdf = np.cumsum(weights / weights.sum())
        self._rng = np.random.default_rng(seed)
        self.min_words = min_words
        self.max_words = max_words
        self._seen: set[str] = set()

    def _draw(self, n: int) -> list[str]:
        idx = np.searchsorted(self._cdf, self._rng.random(n), side="right")
        return [self.words[min(int(i), len(self.words) - 1)] for i in idx]

    def sentence(self) -> str:
        while True:
            n = int(self._rng.integers(self.min_words, self.max_words + 1))
            words = self._draw(n)
            roll = self._rng.random()
            if roll < 0.15:
                words.insert(int(self._rng.integers(0, n)), str(int(self._rng.integers(2, 5000))))
            elif roll < 0.2:
                words.insert(int(self._rng.integers(0, n)), f"ticket-{int(self._rng.integers(1000, 99999))}")
            text = " ".join(words)
            text = text[0].upper() + text[1:] + "."
            if text not in self._seen:
                self._seen.add(text)
                return text

    def sentences(self, count: int) -> list[str]:
        return [self.sentence() for _ in range(count)]

    def queries(self, count: int, min_words: int = 4, max_words: int = 10) -> list[str]:
        """Distinct question-like queries (shorter than the corpus sentences)."""
        openers = ["what did we learn about", "how do we handle", "why did", "when was", "notes on", "find", ""]
        out: list[str] = []
        while len(out) < count:
            n = int(self._rng.integers(min_words, max_words + 1))
            opener = openers[int(self._rng.integers(0, len(openers)))]
            text = (opener + " " + " ".join(self._draw(n))).strip() + "?"
            if text not in self._seen:
                self._seen.add(text)
                out.append(text)
        return out
