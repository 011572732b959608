"""Leases with fencing tokens, on every deployment.

The contract part runs on each deployment of conftest.DEPLOYMENTS. The
concurrency part uses real processes and threads on one shared store (a SQLite
file, a PostgreSQL schema, or a server over a SQLite file): readers and writers
never overlap, a writer is not starved by readers, and a holder paused past its
lease (SIGSTOP) has every later fenced write refused while its successor's land.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hivemem
from hivemem import Hive, InvalidInput, LeaseExpired, LockHeld, StaleFencingToken

SPAWN = multiprocessing.get_context("spawn")


# -- the contract, on every deployment -----------------------------------------------------------


def test_a_writer_excludes_and_readers_share(hive: Hive) -> None:
    with hive.lock("team-a/deploy", ttl=30) as lease:
        assert (lease.resource, lease.mode, lease.token) == ("team-a/deploy", "write", 1)
        with pytest.raises(LockHeld) as held:
            hive.lock("team-a/deploy", wait=0)
        assert held.value.details["resource"] == "team-a/deploy"
        with pytest.raises(LockHeld):
            hive.lock("team-a/deploy", mode="read", wait=0.05)
    first, second = hive.lock("team-a/deploy", mode="read"), hive.lock("team-a/deploy", mode="read")
    assert (first.token, second.token) == (2, 3)  # every grant takes the next token
    with pytest.raises(LockHeld):
        hive.lock("team-a/deploy", wait=0)
    assert first.release() and second.release()
    assert not first.release()  # a second release finds nothing
    assert hive.lock("team-a/deploy", wait=0).token == 4


def test_tokens_never_go_back_and_live_in_the_store(open_hive: Any) -> None:
    hive = open_hive()
    if not hive.store.durable:
        pytest.skip("this deployment keeps no data after close (store.durable is False)")
    for _ in range(3):
        hive.lock("team-a/x").release()
    hive.close()
    assert open_hive().lock("team-a/x").token == 4


def test_a_fenced_write_is_refused_once_a_newer_lease_exists(hive: Hive) -> None:
    record = hive.remember("team-a", "the deploy target", data={"by": None})
    old = hive.lock("team-a/deploy", ttl=0.3)
    assert hive.update(record.id, data={"by": "old"}, fence=old).version == 2
    time.sleep(0.6)  # the lease lapses by the database's clock
    new = hive.lock("team-a/deploy", wait=0)
    assert new.token == old.token + 1
    with pytest.raises(StaleFencingToken) as stale:
        hive.update(record.id, data={"by": "old, late"}, fence=old)
    assert stale.value.details == {"resource": "team-a/deploy", "token": old.token, "current_token": new.token}
    with pytest.raises(StaleFencingToken):
        hive.remember("team-a", "written by a holder that lost its lease", fence=old)
    assert hive.update(record.id, data={"by": "new"}, fence=new).data == {"by": "new"}
    assert hive.remember("team-a", "fenced note", fence=new.fence).content == "fenced note"
    assert hive.get(record.id).version == 3
    assert [m.content for m in hive.list("team-a")].count("written by a holder that lost its lease") == 0


def test_renew_extends_and_a_lapsed_lease_cannot_be_renewed(hive: Hive) -> None:
    lease = hive.lock("team-a/job", ttl=0.5)
    renewed = lease.renew(ttl=60)
    assert renewed.expires_at > lease.expires_at and renewed.ttl == 60
    time.sleep(0.7)  # past the first ttl: the renewal keeps it
    with pytest.raises(LockHeld):
        hive.lock("team-a/job", wait=0)
    renewed.release()
    with pytest.raises(LeaseExpired):
        renewed.renew()
    short = hive.lock("team-a/job", ttl=0.2)
    time.sleep(0.4)
    with pytest.raises(LeaseExpired):
        hive.renew_lease(short)
    assert not short.release()


def test_acquire_all_takes_every_resource_in_one_order_or_none(hive: Hive) -> None:
    with hive.acquire_all(["team-a/c", "team-a/a", "team-a/b", "team-a/a"]) as taken:
        assert [lease.resource for lease in taken] == ["team-a/a", "team-a/b", "team-a/c"]
        assert taken["team-a/b"].mode == "write"
        assert {lease.resource for lease in hive.locks("team-a")} == {"team-a/a", "team-a/b", "team-a/c"}
    assert hive.locks() == []
    blocker = hive.lock("team-a/b")
    with pytest.raises(LockHeld):
        hive.acquire_all(["team-a/a", "team-a/b"], wait=0.05)
    assert [lease.resource for lease in hive.locks()] == ["team-a/b"]  # team-a/a was given back
    blocker.release()


def test_locks_lists_live_leases_under_a_prefix(hive: Hive) -> None:
    mine = hive.lock("team-a/deploy", owner="agent-7")
    hive.lock("team-b/deploy", mode="read", ttl=0.2)
    time.sleep(0.4)
    listed = hive.locks()
    assert [(lease.resource, lease.token, lease.holder) for lease in listed] == [
        ("team-a/deploy", mine.token, mine.holder)
    ]
    assert mine.holder.endswith(":agent-7")
    assert hive.locks("team-b") == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"resource": ""}, "resource"),
        ({"resource": "a//b"}, "resource"),
        ({"mode": "exclusive"}, "mode"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"wait": -1}, "wait"),
        ({"wait": True}, "wait"),
        ({"owner": ""}, "owner"),
    ],
)
def test_bad_lock_arguments_are_refused(hive: Hive, arguments: dict[str, Any], field: str) -> None:
    call = {"resource": "team-a/x", **arguments}
    with pytest.raises(InvalidInput) as bad:
        hive.lock(call.pop("resource"), **call)
    assert bad.value.details["field"] == field
    assert hive.locks() == []


def test_a_bad_fence_is_refused_and_writes_nothing(hive: Hive) -> None:
    record = hive.remember("team-a", "x")
    for fence in ({"resource": "team-a/x"}, {"resource": "team-a/x", "token": 0}, "team-a/x"):
        with pytest.raises(InvalidInput):
            hive.update(record.id, content="y", fence=fence)  # type: ignore[arg-type]
    assert hive.get(record.id).version == 1


# -- many processes and threads on one store ----------------------------------------------------


def _holder(target: str, worker: int, mode: str, rounds: int, log: Any, start: Any) -> None:
    """Take the resource ``rounds`` times, logging (enter, exit) on the monotonic clock, which all processes share."""
    with hivemem.open(target, embedder=None) as hive:
        start.wait(timeout=60)
        for _ in range(rounds):
            with hive.lock("team-a/shared", mode=mode, ttl=30, wait=60):
                entered = time.monotonic()
                time.sleep(0.005)
                log.put((worker, mode, entered, time.monotonic()))


def test_readers_and_writers_never_overlap(shared: str) -> None:
    log, start = SPAWN.Queue(), SPAWN.Event()
    roles = ["write", "read", "write", "read"]
    rounds = 15
    procs = [SPAWN.Process(target=_holder, args=(shared, w, mode, rounds, log, start)) for w, mode in enumerate(roles)]
    for p in procs:
        p.start()
    start.set()
    intervals = [log.get(timeout=120) for _ in range(len(roles) * rounds)]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    overlaps = [
        (a, b)
        for i, a in enumerate(intervals)
        for b in intervals[i + 1 :]
        if "write" in (a[1], b[1]) and a[2] < b[3] and b[2] < a[3]
    ]
    assert overlaps == []  # readers may overlap each other; a writer overlaps no one


def test_a_writer_is_not_starved_by_a_stream_of_readers(shared: str) -> None:
    stop = threading.Event()
    hive = hivemem.open(shared, embedder=None)
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            with hive.lock("team-a/hot", mode="read", wait=30):
                reads[0] += 1
                time.sleep(0.02)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    try:
        for t in readers:
            t.start()
            time.sleep(0.007)  # staggered, so some reader always holds the resource
        time.sleep(0.2)
        before = reads[0]
        writer = hive.lock("team-a/hot", wait=10)  # LockHeld here would be starvation
        assert [held.mode for held in hive.locks("team-a/hot")] == ["write"]
        writer.release()
        assert before > 0
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=30)
        hive.close()


def _paused_holder(target: str, record_id: str, ready_path: str, log_path: str, stop_path: str) -> None:
    """Hold a 1 s lease and keep writing under its fence, logging each attempt's start and outcome."""
    with hivemem.open(target, embedder=None) as hive, open(log_path, "a") as log:
        lease = hive.lock("team-a/job", ttl=1.0, wait=30)
        Path(ready_path).write_text(str(lease.token))
        i = 0
        while not os.path.exists(stop_path):
            started = time.monotonic()
            try:
                hive.update(record_id, data={"by": "paused", "i": i}, fence=lease)
                outcome = "ok"
            except StaleFencingToken:
                outcome = "stale"
            log.write(f"{started} {outcome}\n")
            log.flush()
            i += 1
            time.sleep(0.01)


def test_a_holder_paused_past_its_lease_cannot_overwrite_its_successor(shared: str, tmp_path: Path) -> None:
    hive = hivemem.open(shared, embedder=None)
    record = hive.remember("team-a", "job state", data={"by": None})
    ready, log, stop = (str(tmp_path / name) for name in ("ready", "log", "stop"))
    holder = SPAWN.Process(target=_paused_holder, args=(shared, record.id, ready, log, stop))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not (os.path.exists(ready) and Path(log).read_text().count("ok") >= 5):
            assert time.monotonic() < deadline and holder.is_alive(), "the holder did not start writing"
            time.sleep(0.02)
        os.kill(holder.pid, signal.SIGSTOP)
        time.sleep(1.3)  # past the holder's ttl
        granted: list[Any] = []
        taker = threading.Thread(target=lambda: granted.append(hive.lock("team-a/job", wait=30)))
        taker.start()
        # If the pause caught the holder inside a transaction, the grant waits for it to finish.
        taker.join(timeout=3)
        os.kill(holder.pid, signal.SIGCONT)
        taker.join(timeout=30)
        successor = granted[0]
        granted_at = time.monotonic()
        assert successor.token > int(Path(ready).read_text())
        for i in range(20):
            hive.update(record.id, data={"by": "successor", "i": i}, fence=successor)
        time.sleep(0.5)
        Path(stop).touch()
        holder.join(timeout=30)
        attempts = [line.split() for line in Path(log).read_text().splitlines()]
        late = [outcome for started, outcome in attempts if float(started) > granted_at]
        assert len(late) >= 5, "the resumed holder made too few attempts to judge"
        assert set(late) == {"stale"}  # every fenced write after the new grant refused
        assert hive.get(record.id).data == {"by": "successor", "i": 19}
    finally:
        if holder.is_alive():
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
        holder.join()
        hive.close()


def test_sweep_prunes_lapsed_leases(hive: Hive) -> None:
    hive.lock("team-a/one", ttl=0.2)
    kept = hive.lock("team-a/two", ttl=60)
    time.sleep(0.4)
    assert hive.sweep()["leases_pruned"] == 1
    assert hive.sweep()["leases_pruned"] == 0
    assert hive.locks() == [kept]


@pytest.mark.parametrize(
    "broken",
    [
        {"mode": "exclusive"},
        {"ttl": -1.0},
        {"token": "1"},
        {"lease_id": ""},
        {"acquired_at": "yesterday"},
        {"resource": ""},
    ],
)
def test_a_malformed_lease_is_refused_by_renew_and_release(hive: Hive, broken: dict[str, Any]) -> None:
    lease = hive.lock("team-a/job")
    forged = {**lease.to_dict(), **broken}
    with pytest.raises(InvalidInput):
        hive.renew_lease(forged)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        hive.release_lease(forged)  # type: ignore[arg-type]
    assert [held.lease_id for held in hive.locks()] == [lease.lease_id]


def test_a_fence_beyond_64_bits_is_refused(hive: Hive) -> None:
    record = hive.remember("team-a", "x")
    with pytest.raises(InvalidInput):
        hive.update(record.id, content="y", fence={"resource": "team-a/x", "token": 2**64})  # type: ignore[arg-type]
    assert hive.get(record.id).version == 1


# -- a release commits without waiting for fsync (SQLite) -----------------------------------------


def _release_then_die(path: str, released: Any) -> None:
    hive = hivemem.open(path, embedder=None)
    hive.lock("team-a/job", ttl=600).release()
    released.set()
    time.sleep(60)  # killed here, before any later commit could sync the release


def test_an_unsynced_release_survives_a_killed_process_and_later_writes_stay_synced(tmp_path: Path) -> None:
    path = str(tmp_path / "hive.db")
    released = SPAWN.Event()
    proc = SPAWN.Process(target=_release_then_die, args=(path, released))
    proc.start()
    assert released.wait(timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with hivemem.open(path, embedder=None) as hive:
        lease = hive.lock("team-a/job", wait=0)  # the ttl was 600 s: only the release can have freed it
        assert lease.token == 2
        lease.release()
        # The release lowered synchronous for its own commit only.
        assert hive.store._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
