"""Durable workflows: the cost of a step's checkpoint, against a bare commit, DBOS and LangGraph.

Every number comes from this one run, on files in one temporary folder:

* a bare durable SQLite commit (apsw, WAL, ``synchronous=FULL``: one insert per
  ``BEGIN IMMEDIATE ... COMMIT``), the floor of any durable checkpoint, on a
  WAL that has settled at its size (``_common.settle_wal``) as on a database
  in use and as HiveMem's is from its open;
* the same N trivial steps (each returns its number) as a plain loop, as a
  HiveMem workflow on SQLite (``synchronous=full``, the default; both
  durabilities), as a DBOS Transact workflow with a SQLite system database, and
  as a LangGraph graph of N nodes in a chain with ``SqliteSaver`` (each as its
  package sets SQLite up). DBOS and LangGraph each run in a process of their
  own, asked to run each round and reporting their own time: their background
  threads (DBOS polls its database all the time) would otherwise take the GIL
  from whatever is being timed;
* the same workflow with 10 ms steps, for the share a checkpoint adds to real work.

Per-step overhead is (workflow time - plain loop time) / N, the workflow's own
start and finish included, the median of ``--rounds`` fresh runs. The subjects
run in turn, round after round, so a disk whose fsync slows down during the run
(a shared machine) weighs on all of them alike; and each ratio is the median
of the ratios within a round, whose measurements lie a fraction of a second
apart, not a ratio of medians taken at different moments. LangGraph runs twice: with its
default ``durability="async"`` (a step's checkpoint is written while the next
step runs) and with ``durability="sync"`` (written before it, like the
others). HiveMem's targets: its per-step overhead at most 1.5x one bare
commit, at least 4x lower than DBOS and 3x lower than LangGraph, and at most 5%
of a 10 ms step.
A comparison whose package is not installed (``pip install 'hivemem[bench]'``)
is skipped with the reason printed.

    python bench/workflows.py               # 200 steps, 9 rounds
    python bench/workflows.py --quick       # seconds, for CI
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import apsw

import hivemem
from _common import log, print_table, settle_wal, write_results

TARGET_VS_COMMIT = 1.5
TARGET_VS_DBOS = 4.0
TARGET_VS_LANGGRAPH = 3.0
TARGET_SHARE_10MS = 0.05


class Subject:
    """One thing to time: ``run()`` does N steps (or N commits) once; ``close()`` frees what it holds."""

    def __init__(self, label: str, run: Callable[[], Any], close: Callable[[], Any] = lambda: None) -> None:
        self.label = label
        self.run = run
        self.close = close
        self.times: list[float] = []

    def measure(self) -> None:
        start = time.perf_counter()
        reported = self.run()
        # A subject in another process reports the time it took there (no queue round trip).
        self.times.append(reported if isinstance(reported, float) else time.perf_counter() - start)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def bare_commits(directory: Path, commits: int, pause: float = 0.0) -> Subject:
    """``commits`` durable commits of one row each (apsw, WAL, synchronous=FULL), each after ``pause`` s."""
    conn = apsw.Connection(str(directory / f"bare-{pause}.db"))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)")
    settle_wal(conn)

    def run() -> None:
        for _ in range(commits):
            if pause:
                time.sleep(pause)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 64,))
            conn.execute("COMMIT")

    label = "bare durable SQLite commit (WAL, synchronous=FULL)"
    return Subject(label + (f" after each {pause * 1000:g} ms step" if pause else ""), run, conn.close)


def plain(steps: int, pause: float = 0.0) -> Subject:
    """The N steps as a plain loop: what a workflow adds to."""

    def step(i: int) -> int:
        if pause:
            time.sleep(pause)
        return i

    return Subject("plain function, no checkpoint", lambda: [step(i) for i in range(steps)])


def hivemem_workflow(directory: Path, steps: int, durability: str, pause: float = 0.0) -> Subject:
    """The N steps as a HiveMem workflow on a SQLite file (a new run each time)."""

    @hivemem.step(f"bench.step.{pause}")
    def step(i: int) -> int:
        if pause:
            time.sleep(pause)
        return i

    @hivemem.workflow(f"bench.flow.{durability}.{pause}", namespace="bench", durability=durability)
    def flow(hive: hivemem.Hive, run: int, n: int) -> list[int]:
        return [step(i) for i in range(n)]

    hive = hivemem.open(str(directory / f"hive-{durability}-{pause}.db"), embedder=None)
    flow(hive, -1, 3)  # warm: schema, connection
    runs = iter(range(1_000_000))
    label = f"HiveMem workflow (SQLite, synchronous=full, durability={durability})"
    return Subject(label, lambda: flow(hive, next(runs), steps), hive.close)


def _dbos_subject(directory: Path, steps: int) -> Subject:
    from dbos import DBOS

    for name in ("dbos", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    DBOS(
        config={
            "name": "hivemem-bench",
            "system_database_url": f"sqlite:///{directory / 'dbos.sqlite'}",
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def dbos_step(i: int) -> int:
        return i

    @DBOS.workflow()
    def dbos_flow(n: int) -> list[int]:
        return [dbos_step(i) for i in range(n)]

    DBOS.launch()
    dbos_flow(3)  # warm
    return Subject("DBOS Transact (SQLite system database)", lambda: dbos_flow(steps), DBOS.destroy)


def _serve_subject(kind: str, directory: str, steps: int, requests: Any, answers: Any) -> None:
    """Run one comparison in a process of its own, once per request, reporting the seconds it took.

    DBOS keeps background threads polling its database and LangGraph keeps a
    background executor; in the timing process they would take the GIL from
    whatever is being timed.
    """
    where = Path(directory)
    subject = _dbos_subject(where, steps) if kind == "dbos" else langgraph_chain(where, steps, kind.split("-")[1])
    assert isinstance(subject, Subject)
    answers.put(subject.label)
    while requests.get() == "run":
        start = time.perf_counter()
        subject.run()
        answers.put(time.perf_counter() - start)
    subject.close()


def in_own_process(kind: str, directory: Path, steps: int, needs: str) -> Subject | str:
    """The comparison ``kind`` (dbos, langgraph-async, langgraph-sync) served by another process, or why not."""
    try:
        __import__(needs)
    except ImportError as exc:
        return f"skipped: {needs} is not installed ({exc}); pip install 'hivemem[bench]'"
    context = multiprocessing.get_context("spawn")
    requests, answers = context.Queue(), context.Queue()
    server = context.Process(target=_serve_subject, args=(kind, str(directory), steps, requests, answers), daemon=True)
    server.start()
    label = answers.get(timeout=300)

    def run() -> float:
        requests.put("run")
        took: float = answers.get(timeout=600)
        return took

    def close() -> None:
        requests.put("stop")
        server.join(timeout=60)

    return Subject(f"{label}, own process", run, close)


class _State(TypedDict):
    i: int


def langgraph_chain(directory: Path, steps: int, durability: str) -> Subject | str:
    """The N steps as a LangGraph chain of N nodes checkpointed by SqliteSaver, or why not."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        return f"skipped: langgraph/langgraph-checkpoint-sqlite not installed ({exc}); pip install 'hivemem[bench]'"

    def node(state: _State) -> dict[str, int]:
        return {"i": state["i"] + 1}

    graph: Any = StateGraph(_State)
    previous = START
    for k in range(steps):
        graph.add_node(f"s{k}", node)
        graph.add_edge(previous, f"s{k}")
        previous = f"s{k}"
    graph.add_edge(previous, END)
    conn = sqlite3.connect(str(directory / f"langgraph-{durability}.sqlite"), check_same_thread=False)
    app = graph.compile(checkpointer=SqliteSaver(conn))
    threads = iter(range(1_000_000))

    def invoke() -> None:
        config = {"configurable": {"thread_id": f"t{next(threads)}"}, "recursion_limit": steps + 10}
        app.invoke({"i": 0}, config, durability=durability)

    invoke()  # warm: its tables
    return Subject(f"LangGraph + SqliteSaver (durability={durability})", invoke, conn.close)


def interleaved(subjects: list[Subject], rounds: int) -> None:
    """Time every subject once per round, in turn: a disk that slows down mid-run slows all alike."""
    for _ in range(rounds):
        for subject in subjects:
            subject.measure()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="trivial steps per workflow")
    parser.add_argument("--rounds", type=int, default=9, help="runs of each, interleaved; the median is kept")
    parser.add_argument("--slow-steps", type=int, default=50, help="10 ms steps per workflow")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.slow_steps = 30, 3, 10
    n = args.steps
    results: dict[str, Any] = {"steps": n, "rounds": args.rounds}
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        directory = Path(tmp)
        bare, loop = bare_commits(directory, n), plain(n)
        ours, ours_async = hivemem_workflow(directory, n, "sync"), hivemem_workflow(directory, n, "async")
        subjects = [bare, loop, ours, ours_async]
        others: dict[str, Subject] = {}
        for name, made in (
            ("dbos", in_own_process("dbos", directory, n, "dbos")),
            ("langgraph_async", in_own_process("langgraph-async", directory, n, "langgraph.checkpoint.sqlite")),
            ("langgraph_sync", in_own_process("langgraph-sync", directory, n, "langgraph.checkpoint.sqlite")),
        ):
            if isinstance(made, str):
                skipped.append(f"{name}: {made}")
            else:
                others[name] = made
        subjects += others.values()
        log(f"{n} trivial steps x {args.rounds} rounds: {', '.join(s.label for s in subjects)}")
        interleaved(subjects, args.rounds)
        slow_loop, slow_bare = plain(args.slow_steps, 0.010), bare_commits(directory, args.slow_steps, 0.010)
        slow = {mode: hivemem_workflow(directory, args.slow_steps, mode, 0.010) for mode in ("sync", "async")}
        log(f"{args.slow_steps} steps of 10 ms x {args.rounds} rounds")
        interleaved([slow_loop, slow_bare, *slow.values()], args.rounds)
        for subject in [*subjects, slow_bare, *slow.values()]:
            subject.close()

    commit_us = bare.median / n * 1e6
    commit_rounds = [t / n * 1e6 for t in bare.times]

    def per_step(subject: Subject) -> float:
        return (subject.median - loop.median) / n * 1e6

    def rounds_of(subject: Subject) -> list[float]:
        """The subject's cost per step in each round, over the plain loop of the same round."""
        return [(t - plain_t) / n * 1e6 for t, plain_t in zip(subject.times, loop.times, strict=True)]

    def paired(costs: list[float], baseline: list[float]) -> float:
        """The median over rounds of one cost over another measured in the same round."""
        return statistics.median(a / b for a, b in zip(costs, baseline, strict=True))

    ours_us = {"sync": per_step(ours), "async": per_step(ours_async)}
    ours_rounds = {"sync": rounds_of(ours), "async": rounds_of(ours_async)}
    vs_commit = {mode: paired(ours_rounds[mode], commit_rounds) for mode in ("sync", "async")}
    shares = {mode: (s.median - slow_loop.median) / slow_loop.median for mode, s in slow.items()}
    bare_share = (slow_bare.median - slow_loop.median) / slow_loop.median
    results.update(bare_commit_us=commit_us, plain_per_step_us=loop.median / n * 1e6, bare_share_10ms=bare_share)
    for mode in ("sync", "async"):
        results[f"hivemem_{mode}_per_step_us"] = ours_us[mode]
        results[f"hivemem_{mode}_vs_commit"] = vs_commit[mode]
        results[f"hivemem_{mode}_share_10ms"] = shares[mode]
    rows: list[list[Any]] = [
        [bare.label, commit_us, 1.0, None, None],
        [loop.label, loop.median / n * 1e6, None, None, None],
        [ours.label, ours_us["sync"], vs_commit["sync"], 1.0, None],
        [ours_async.label, ours_us["async"], vs_commit["async"], None, 1.0],
    ]
    for name, subject in others.items():
        theirs, their_rounds = per_step(subject), rounds_of(subject)
        results[f"{name}_per_step_us"] = theirs
        vs_ours = {mode: paired(their_rounds, ours_rounds[mode]) for mode in ("sync", "async")}
        for mode in ("sync", "async"):
            results[f"{name}_vs_hivemem_{mode}"] = vs_ours[mode]
        rows.append([subject.label, theirs, paired(their_rounds, commit_rounds), vs_ours["sync"], vs_ours["async"]])
    print_table(
        f"workflows: checkpoint overhead per step, {n} trivial steps (medians of {args.rounds} interleaved rounds; "
        "ratios paired within a round)",
        ["system", "us per step", "x bare commit", "x HiveMem sync", "x HiveMem async"],
        rows,
    )
    for line in skipped:
        print(line)
    print(f"\n10 ms steps ({args.slow_steps} per run): what each adds to the plain loop")
    print(f"  one bare durable commit per step (the floor of a durable checkpoint): {bare_share * 100:.2f}%")
    for mode in ("sync", "async"):
        print(f"  HiveMem, durability={mode}: {shares[mode] * 100:.2f}%")
    print("\ntargets:")
    checks = []
    for mode in ("sync", "async"):
        checks += [
            (f"{mode}: overhead <= {TARGET_VS_COMMIT}x a bare commit", vs_commit[mode] <= TARGET_VS_COMMIT),
            (f"{mode}: <= {TARGET_SHARE_10MS * 100:.0f}% of a 10 ms step", shares[mode] <= TARGET_SHARE_10MS),
        ]
        for name, label, target in (
            ("dbos", "DBOS", TARGET_VS_DBOS),
            ("langgraph_async", "LangGraph + SqliteSaver (its default durability=async)", TARGET_VS_LANGGRAPH),
            ("langgraph_sync", "LangGraph + SqliteSaver (durability=sync)", TARGET_VS_LANGGRAPH),
        ):
            ratio = results.get(f"{name}_vs_hivemem_{mode}")
            if ratio is not None:
                checks.append((f"{mode}: >= {target}x lower than {label} ({ratio:.2f}x)", ratio >= target))
    for label, met in checks:
        print(f"  {label}: {'met' if met else 'not met'}")
    results["targets"] = {label: met for label, met in checks}
    path = write_results("workflows", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
