"""Many writers at once: real processes on one SQLite file or one PostgreSQL database,
threads on one Hive, and the in-process vector index following changes made by other processes.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import hivemem
from fakes import HashEmbedder
from hivemem import Hive, VersionConflict
from hivemem.storage.base import MemoryFilter, RankFacts
from hivemem.storage.sql import SqlTx

PROCESSES = 4
N = 200  # plain memories per process
UPSERTS = 50  # keyed upserts per process, spread over SHARED_KEYS
SHARED_KEYS = 10
INCREMENTS = 25  # successful counter increments per process
JOIN_TIMEOUT = 240

SPAWN = multiprocessing.get_context("spawn")


def _increment(hive: Hive, counter_id: str, think: float = 0.0) -> int:
    """Add one to the counter with optimistic concurrency; returns how many conflicts it took."""
    conflicts = 0
    while True:
        current = hive.get(counter_id)
        time.sleep(think)  # an agent deciding what to write: others get to write meanwhile
        try:
            hive.update(counter_id, data={"n": current.data["n"] + 1}, expected_version=current.version)
        except VersionConflict as exc:
            assert exc.current_version > current.version
            conflicts += 1
            continue
        return conflicts


def _workload(
    hive: Hive, worker: int, n: int, upserts: int, increments: int, counter_id: str, barrier: Any
) -> dict[str, int]:
    """One writer's share: a shuffled mix of all writes, then (after ``barrier``) a burst of
    counter increments at the same time as every other writer, so that conflicts do happen."""
    mixed = increments // 5
    ops = ["remember"] * n + ["upsert"] * upserts + ["increment"] * mixed
    random.Random(worker).shuffle(ops)
    done = {"remember": 0, "upsert": 0, "increment": 0, "conflicts": 0}
    barrier.wait(timeout=120)
    for op in ops:
        if op == "remember":
            i = done["remember"]
            hive.remember(f"conc/w{worker}", f"worker {worker} note {i}", data={"w": worker, "i": i})
        elif op == "upsert":
            j = done["upsert"]
            hive.remember("conc/shared", f"worker {worker} wrote {j}", key=f"key-{j % SHARED_KEYS}")
        else:
            done["conflicts"] += _increment(hive, counter_id)
        done[op] += 1
    barrier.wait(timeout=120)
    for _ in range(increments - mixed):
        done["conflicts"] += _increment(hive, counter_id, think=0.002)
        done["increment"] += 1
    return done


def _process_worker(target: str, worker: int, counter_id: str, barrier: Any, results: Any) -> None:
    try:
        with hivemem.open(target, embedder=None) as hive:
            done = _workload(hive, worker, N, UPSERTS, INCREMENTS, counter_id, barrier)
        results.put((worker, "ok", done))
    except BaseException:
        results.put((worker, "error", traceback.format_exc()))
        raise SystemExit(1) from None


def _run_processes(target: Any, args_for: list[tuple[Any, ...]], results: Any) -> list[tuple[int, str, Any]]:
    return _collect(_start_processes(target, args_for), results)


def _start_processes(target: Any, args_for: list[tuple[Any, ...]]) -> list[Any]:
    procs = [SPAWN.Process(target=target, args=args) for args in args_for]
    for p in procs:
        p.start()
    return procs


def _collect(procs: list[Any], results: Any) -> list[tuple[int, str, Any]]:
    """Every process's report from ``results``; fail with their tracebacks if any failed."""
    reports: list[tuple[int, str, Any]] = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=JOIN_TIMEOUT))
    except queue.Empty:
        pass
    finally:
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [r[2] for r in reports if r[1] != "ok"]
    assert not errors, "worker failed:\n" + "\n".join(errors)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert len(reports) == len(procs)
    return reports


def _check_final_state(hive: Hive, workers: int, n: int, upserts: int, increments: int, counter_id: str) -> None:
    assert hive.stats()["memories"] == workers * n + SHARED_KEYS + 1
    for w in range(workers):
        mine = hive.list(f"conc/w{w}", limit=1000)
        assert sorted(m.data["i"] for m in mine) == list(range(n))
        assert {m.data["w"] for m in mine} == {w}
    shared = hive.list("conc/shared", limit=1000)
    assert len(shared) == SHARED_KEYS
    per_key = workers * upserts // SHARED_KEYS
    for j in range(SHARED_KEYS):
        keyed = hive.get_by_key("conc/shared", f"key-{j}")
        assert keyed.version == per_key
        assert [m.version for m in hive.history(keyed.id)] == list(range(1, per_key + 1))
    counter = hive.get(counter_id)
    assert counter.data["n"] == workers * increments  # no lost update
    assert counter.version == workers * increments + 1


def _shared_target(kind: str, tmp_path: Path) -> str:
    """A target every process can open: a SQLite file, or a PostgreSQL schema of the test server."""
    if kind == "sqlite-file":
        return str(tmp_path / "shared.db")
    from pg_server import schema_url

    return schema_url(tmp_path)


SHARED_TARGETS = ["sqlite-file", "postgres"]


@pytest.mark.parametrize("kind", SHARED_TARGETS)
def test_processes_share_one_store(tmp_path: Path, kind: str) -> None:
    target = _shared_target(kind, tmp_path)
    with hivemem.open(target, embedder=None) as hive:
        counter_id = hive.remember("conc", "counter", data={"n": 0}).id
    barrier = SPAWN.Barrier(PROCESSES)
    results = SPAWN.Queue()
    reports = _run_processes(
        _process_worker, [(target, w, counter_id, barrier, results) for w in range(PROCESSES)], results
    )
    for _, _, done in reports:
        assert (done["remember"], done["upsert"], done["increment"]) == (N, UPSERTS, INCREMENTS)
    assert sum(done["conflicts"] for _, _, done in reports) > 0, "no conflict: the retry path was not exercised"
    with hivemem.open(target, embedder=None) as hive:
        _check_final_state(hive, PROCESSES, N, UPSERTS, INCREMENTS, counter_id)


def _sweep_worker(target: str, worker: int, now: float, barrier: Any, results: Any) -> None:
    try:
        with hivemem.open(target, embedder=None, clock=hivemem.ManualClock(now)) as hive:
            barrier.wait(timeout=120)
            results.put((worker, "ok", hive.sweep()["expired"]))
    except BaseException:
        results.put((worker, "error", traceback.format_exc()))
        raise SystemExit(1) from None


@pytest.mark.parametrize("kind", SHARED_TARGETS)
def test_sweeps_in_several_processes_delete_each_row_once(tmp_path: Path, kind: str) -> None:
    target = _shared_target(kind, tmp_path)
    start = 1_700_000_000.0
    expiring = 3000
    with hivemem.open(target, embedder=None, clock=hivemem.ManualClock(start)) as hive:
        for lo in range(0, expiring, 1000):
            hive.remember_many(
                [{"namespace": "sweep", "content": f"short-lived {i}", "ttl": 5} for i in range(lo, lo + 1000)]
            )
        kept = hive.remember("sweep", "stays")
    barrier = SPAWN.Barrier(PROCESSES)
    results = SPAWN.Queue()
    reports = _run_processes(
        _sweep_worker, [(target, w, start + 10, barrier, results) for w in range(PROCESSES)], results
    )
    assert sum(r[2] for r in reports) == expiring
    with hivemem.open(target, embedder=None, clock=hivemem.ManualClock(start + 10)) as hive:
        assert [m.id for m in hive.list("sweep", limit=10)] == [kept.id]
        assert hive.sweep()["expired"] == 0


def _run_threads(target: Callable[[int], None], count: int) -> None:
    """Run ``target(worker)`` on ``count`` threads; fail with every worker's traceback."""
    errors: list[str] = []

    def guarded(worker: int) -> None:
        try:
            target(worker)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=guarded, args=(w,)) for w in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert not errors, "\n".join(errors)


def test_threads_share_one_hive(hive: Hive) -> None:
    threads_n, n, upserts, increments = 8, 40, 20, 10
    counter_id = hive.remember("conc", "counter", data={"n": 0}).id
    barrier = threading.Barrier(threads_n)
    done: list[dict[str, int]] = []
    recalled: list[int] = []

    def run(worker: int) -> None:
        done.append(_workload(hive, worker, n, upserts, increments, counter_id, barrier))
        hits = hive.recall(f"worker {worker} note", namespace=f"conc/w{worker}", k=1000)
        recalled.append(len(hits))

    _run_threads(run, threads_n)
    assert len(done) == threads_n
    assert all((d["remember"], d["upsert"], d["increment"]) == (n, upserts, increments) for d in done)
    assert sum(d["conflicts"] for d in done) > 0, "no conflict: the retry path was not exercised"
    assert recalled == [n] * threads_n
    _check_final_state(hive, threads_n, n, upserts, increments, counter_id)


def test_threads_recall_while_others_write(hive: Hive) -> None:
    for i in range(20):
        hive.remember("seed", f"seed memory {i} about gardening")
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                hits = hive.recall("gardening", namespace="seed", k=50)
                assert len(hits) == 20
        except BaseException:
            errors.append(traceback.format_exc())

    def writer(worker: int) -> None:
        try:
            for i in range(30):
                m = hive.remember(f"busy/{worker}", f"writer {worker} item {i} about gardening")
                if i % 3 == 0:
                    hive.forget(m.id)
        except BaseException:
            errors.append(traceback.format_exc())

    readers = [threading.Thread(target=reader) for _ in range(3)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=JOIN_TIMEOUT)
    stop.set()
    for t in readers:
        t.join(timeout=JOIN_TIMEOUT)
    assert not errors, "\n".join(errors)
    assert hive.stats("busy")["memories"] == 4 * 20
    assert len(hive.recall("gardening", namespace="busy", k=1000)) == 4 * 20


def test_threads_upsert_one_entity(hive: Hive) -> None:
    threads_n, calls = 8, 5
    barrier = threading.Barrier(threads_n)

    def run(worker: int) -> None:
        barrier.wait(timeout=60)
        for i in range(calls):
            hive.upsert_entity("crm", "person", "Ada Lovelace", {f"w{worker}-{i}": i, "last": worker})

    _run_threads(run, threads_n)
    (entity,) = hive.list("crm", kinds="entity")
    assert entity.data["interactions"] == threads_n * calls
    assert entity.version == threads_n * calls
    props = entity.data["properties"]
    assert {k for k in props if k != "last"} == {f"w{w}-{i}" for w in range(threads_n) for i in range(calls)}


# --------------------------------------------------------------------------- the vector index across processes


def _index_child(path: str, action: str, argument: str, results: Any) -> None:
    try:
        with hivemem.open(path, embedder=HashEmbedder()) as hive:
            if action == "remember":
                value: Any = hive.remember("shared", argument).id
            elif action == "forget":
                value = hive.forget(argument)
            elif action == "update":
                memory_id, content = argument.split("|", 1)
                value = hive.update(memory_id, content=content).version
            else:
                raise ValueError(action)
        results.put((0, "ok", value))
    except BaseException:
        results.put((0, "error", traceback.format_exc()))
        raise SystemExit(1) from None


def _in_child(path: str, action: str, argument: str) -> Any:
    results = SPAWN.Queue()
    (report,) = _run_processes(_index_child, [(path, action, argument, results)], results)
    return report[2]


def _vector_ids(hive: Hive, embedder: HashEmbedder, text: str) -> dict[str, float]:
    found = hive.store.vector_search(embedder.vector(text), MemoryFilter(now=hive.clock.now()), 100)
    return {s.id: s.score for s in found}


@pytest.mark.parametrize("vector_search", ["matrix", "sqlite-vec"])
def test_vector_index_follows_other_processes(tmp_path: Path, vector_search: str) -> None:
    path = str(tmp_path / "index.db")
    embedder = HashEmbedder()
    with hivemem.open(path, embedder=embedder, vector_search=vector_search) as hive:
        base = hive.remember("shared", "apples and pears in the orchard")
        assert list(_vector_ids(hive, embedder, "apples and pears in the orchard")) == [base.id]  # index built

        text = "zebra crossing near the school"
        child_id = _in_child(path, "remember", text)
        vectors = _vector_ids(hive, embedder, text)
        assert vectors[child_id] == pytest.approx(1.0, abs=1e-5)
        hits = hive.recall(text, k=5)
        assert hits[0].memory.id == child_id
        assert hits[0].scores["vector"] == pytest.approx(1.0, abs=1e-5)

        new_text = "bananas ripen in the sun"
        assert _in_child(path, "update", f"{base.id}|{new_text}") == 2
        assert _vector_ids(hive, embedder, new_text)[base.id] == pytest.approx(1.0, abs=1e-5)
        assert hive.recall(new_text, k=1)[0].memory.id == base.id

        assert _in_child(path, "forget", child_id) == 1
        assert child_id not in _vector_ids(hive, embedder, text)
        assert child_id not in [h.memory.id for h in hive.recall(text, k=5)]
        assert list(_vector_ids(hive, embedder, new_text)) == [base.id]


@pytest.mark.parametrize("vector_search", ["matrix", "sqlite-vec"])
def test_vector_search_sees_a_memory_whose_content_was_embedded_later(tmp_path: Path, vector_search: str) -> None:
    # A keyword-only writer (embedder=None, as the ConfigError message suggests) stores a memory
    # without a vector; once the same text is embedded for another memory, the shared vector
    # (embeddings are by content hash) makes it findable: both vector search modes must agree.
    path = str(tmp_path / "mixed.db")
    embedder = HashEmbedder()
    with (
        hivemem.open(path, embedder=embedder, vector_search=vector_search) as hive,
        hivemem.open(path, embedder=None) as keyword_only,
    ):
        hive.remember("warm", "warm up the index")
        assert _vector_ids(hive, embedder, "warm up the index")  # the index is built and current
        text = "orange juice recipe"
        plain = keyword_only.remember("ns", text)
        assert _vector_ids(hive, embedder, "warm up the index")  # the index caught up past it
        hive.remember("other", text)  # embeds the text now
        found = hive.store.vector_search(embedder.vector(text), MemoryFilter(now=hive.clock.now(), namespace="ns"), 10)
        assert [s.id for s in found] == [plain.id]


# --------------------------------------------------------------------------- versioned updates, every strategy

VERSIONED_THREADS = 16  # in the test's own process, on one Hive
VERSIONED_PROCESSES = 4  # each with its own Hive
VERSIONED_EACH = 5  # successful updates per writer and strategy


def _count_merge(base: hivemem.Memory, ours: hivemem.Memory, theirs: hivemem.Memory) -> dict[str, Any]:
    """A counter's merge: what ours added to the base, added to theirs."""
    return {"data": {"n": theirs.data["n"] + ours.data["n"] - base.data["n"]}}


def _versioned_workload(hive: Hive, worker: int, ids: dict[str, str], barrier: Any) -> dict[str, int]:
    """Read-modify-write on one record per strategy, all writers at once; counts what happened.

    ``reject``: increment ``n`` with the version read, retry on VersionConflict.
    ``merge``: set this writer's own key to its count; a merge must keep every writer's key.
    ``function``: increment ``n`` resolving conflicts with :func:`_count_merge`, no retry.
    """
    done = {"retries": 0}
    rng = random.Random(worker)
    for strategy, record in ids.items():
        barrier.wait(timeout=120)
        resolved = 0
        for count in range(1, VERSIONED_EACH + 1):
            while True:
                read = hive.get(record)
                if strategy == "merge":
                    changes: dict[str, Any] = {"data": {**read.data, f"w{worker}": count}}
                else:
                    changes = {"data": {"n": read.data["n"] + 1}}
                on_conflict = _count_merge if strategy == "function" else strategy
                try:
                    written = hive.update(record, expected_version=read.version, on_conflict=on_conflict, **changes)
                except VersionConflict as exc:
                    assert strategy == "reject" and exc.current_version > read.version
                    done["retries"] += 1
                    time.sleep(rng.uniform(0, 0.002))  # back off a little, as a real agent would
                    continue
                resolved += written.version > read.version + 1
                break
        done[strategy] = resolved
    return done


def _versioned_process(target: str, worker: int, ids: dict[str, str], barrier: Any, results: Any) -> None:
    try:
        with hivemem.open(target, embedder=None) as hive:
            done = _versioned_workload(hive, worker, ids, barrier)
        results.put((worker, "ok", done))
    except BaseException:
        results.put((worker, "error", traceback.format_exc()))
        raise SystemExit(1) from None


@pytest.mark.parametrize("kind", [*SHARED_TARGETS, "http"])
def test_versioned_increments_from_threads_and_processes_lose_nothing(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "http":
        from http_server import ServeProcess

        server = ServeProcess(tmp_path / "served.db", "--no-auth")
        request.addfinalizer(server.stop)
        target = server.url
        strategies = ["reject", "merge"]  # a function cannot travel over HTTP
    else:
        target = _shared_target(kind, tmp_path)
        strategies = ["reject", "merge", "function"]
    with hivemem.open(target, embedder=None) as hive:
        ids = {s: hive.remember("versioned", s, data={} if s == "merge" else {"n": 0}).id for s in strategies}
        writers = VERSIONED_THREADS + VERSIONED_PROCESSES
        barrier = SPAWN.Barrier(writers)  # threads and processes start each strategy together
        results = SPAWN.Queue()
        procs = _start_processes(
            _versioned_process, [(target, w, ids, barrier, results) for w in range(VERSIONED_PROCESSES)]
        )
        done: list[dict[str, int]] = []

        def in_thread(worker: int) -> None:
            done.append(_versioned_workload(hive, VERSIONED_PROCESSES + worker, ids, barrier))

        _run_threads(in_thread, VERSIONED_THREADS)
        done += [report[2] for report in _collect(procs, results)]
        assert len(done) == writers
        successes = writers * VERSIONED_EACH

        counter = hive.get(ids["reject"])
        assert counter.data["n"] == successes  # no lost update
        assert counter.version == successes + 1
        assert sum(d["retries"] for d in done) > 0, "no conflict: the retry path was not exercised"
        assert hive.conflicts(ids["reject"], limit=1000) == []  # a rejected update records nothing

        merged = hive.get(ids["merge"])
        assert merged.data == {f"w{w}": VERSIONED_EACH for w in range(writers)}  # every writer's last write kept
        assert merged.version == successes + 1
        merge_conflicts = hive.conflicts(ids["merge"], limit=1000)
        assert len(merge_conflicts) == sum(d["merge"] for d in done) > 0
        assert {c.result_version for c in merge_conflicts} <= set(range(2, successes + 2))

        if "function" in ids:
            counted = hive.get(ids["function"])
            assert counted.data["n"] == successes
            assert counted.version == successes + 1
            assert len(hive.conflicts(ids["function"], limit=1000)) == sum(d["function"] for d in done) > 0
        assert hive.stats("versioned")["conflicts"] == sum(d.get("merge", 0) + d.get("function", 0) for d in done)


@pytest.mark.parametrize("kind", SHARED_TARGETS)
def test_a_memory_forgotten_while_recall_ranks_is_returned_whole_or_not_at_all(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another connection forgets a candidate right after recall read the ranking facts.
    # Recall ranks and fetches in one snapshot, taken before that forget committed: the
    # memory is ranked and returned whole, and no ranked hit goes missing.
    target = _shared_target(kind, tmp_path)
    embedder = HashEmbedder()
    with hivemem.open(target, embedder=embedder) as hive, hivemem.open(target, embedder=embedder) as other:
        made = hive.remember_many([{"namespace": "ns", "content": f"tomato harvest note {i}"} for i in range(5)])
        victim = made[0].id
        forgotten: list[int] = []
        rank_facts = SqlTx.rank_facts

        def rank_then_forget(tx: SqlTx, ids: Sequence[str], flt: MemoryFilter) -> dict[str, RankFacts]:
            facts = rank_facts(tx, ids, flt)
            if not forgotten:
                forgotten.append(other.forget(victim))
            return facts

        monkeypatch.setattr(SqlTx, "rank_facts", rank_then_forget)
        hits = hive.recall("tomato harvest", namespace="ns", k=5)
        assert forgotten == [1]
        assert sorted(h.memory.id for h in hits) == sorted(m.id for m in made)
        monkeypatch.undo()
        after = hive.recall("tomato harvest", namespace="ns", k=5)
        assert sorted(h.memory.id for h in after) == sorted(m.id for m in made[1:])
