"""The SQLite file itself: migrations from an older schema, the full-text index's integrity, the WAL's size."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import apsw

import hivemem
from hivemem.storage.sqlite import MIGRATIONS


def _fts_integrity_check(path: Path) -> None:
    conn = apsw.Connection(str(path))
    try:
        # FTS5 raises apsw.CorruptError when the index disagrees with the memories table.
        conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()


def test_full_text_index_matches_the_table_after_mixed_batches(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    clock = hivemem.ManualClock(1_700_000_000.0)
    with hivemem.open(str(path), embedder=None, clock=clock) as hive:
        first = hive.remember_many(
            [{"namespace": "ns", "content": f"note {i} about topic {i % 7}", "key": f"k{i % 5}"} for i in range(40)]
        )
        hive.update(first[0].id, content="rewritten note")
        hive.forget(first[1].id)
        hive.remember_many([{"namespace": "ns", "content": f"more {i}", "ttl": 1} for i in range(10)])
        clock.advance(5)
        assert hive.sweep()["expired"] == 10
    _fts_integrity_check(path)


def test_a_file_at_schema_version_1_is_migrated_on_open_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with hivemem.open(str(path), embedder=None) as hive:
        kept = hive.remember("ns", "written under the old schema")
    conn = apsw.Connection(str(path))
    # Turn the file back into what HiveMem's first schema left: version 1, its insert trigger, no later tables.
    conn.execute("DELETE FROM schema_migrations WHERE version > 1")
    later = (
        "api_keys",
        "idempotency",
        "fences",
        "leases",
        "lease_waiters",
        "event_seqs",
        "events",
        "inbox_cursors",
        "settings",
        "conflicts",
        "working_buffers",
        "working_messages",
        "workflows",
        "workflow_steps",
    )
    for table in later:
        conn.execute(f"DROP TABLE {table}")
    conn.execute(next(s for s in MIGRATIONS[0] if "TRIGGER memories_inserted" in s))
    conn.close()

    with hivemem.open(str(path), embedder=None) as hive:
        assert hive.get(kept.id) == kept
        added = hive.remember("ns", "written under the new schema")
        assert sorted(h.memory.id for h in hive.recall("schema", namespace="ns")) == sorted([kept.id, added.id])
    conn = apsw.Connection(str(path))
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    triggers = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    conn.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert "memories_inserted" not in triggers
    _fts_integrity_check(path)


# -- the WAL is sized at open, so commits overwrite it instead of extending it ----------------------


def _wal_size(path: Path) -> int:
    return Path(str(path) + "-wal").stat().st_size


def test_a_new_file_gets_its_settled_wal_size_at_open_and_commits_do_not_extend_it(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    with hivemem.open(str(path), embedder=None) as hive:
        sized = _wal_size(path)
        assert sized >= 32 + 1000 * (24 + 4096)  # the autocheckpoint threshold, in frames of 4 KiB pages
        for i in range(300):  # one commit each
            hive.remember("ns", f"note {i}")
        assert _wal_size(path) == sized
        assert len(hive.list(namespace="ns", limit=1000)) == 300


def _open_write_and_die(path: str, count: int, written: Any) -> None:
    hive = hivemem.open(path, embedder=None)
    for i in range(count):
        hive.remember("ns", f"note {i}")
    written.set()
    time.sleep(60)  # killed here: no checkpoint, no close


def _killed_after(path: Path, count: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    written = spawn.Event()
    proc = spawn.Process(target=_open_write_and_die, args=(str(path), count, written))
    proc.start()
    assert written.wait(timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()


def test_a_killed_process_leaves_a_sized_wal_every_sqlite_reader_recovers(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    _killed_after(path, 0)  # the WAL holds nothing but zeros past the schema's frames
    _killed_after(path, 50)  # now frames, then zeros
    # Another SQLite (the standard library's) finds every acknowledged write and a sound file.
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (50,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    with hivemem.open(str(path), embedder=None) as hive:
        assert sorted(m.content for m in hive.list(namespace="ns", limit=100)) == sorted(f"note {i}" for i in range(50))
        hive.remember("ns", "after the kills")
    _fts_integrity_check(path)


def test_a_step_checkpoint_waits_for_another_writer_then_commits(tmp_path: Path) -> None:
    # A checkpoint is one statement SQLite commits by itself; it waits for the write lock as a transaction does.
    path = tmp_path / "hive.db"
    other = apsw.Connection(str(path))
    released: list[float] = []

    @hivemem.step("locks_the_file")
    def locks_the_file() -> str:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock when this step's checkpoint begins
        threading.Timer(0.3, lambda: (released.append(time.monotonic()), other.execute("COMMIT"))).start()
        return "done"

    @hivemem.workflow("test.locked", namespace="ns")
    def flow(hive: hivemem.Hive) -> str:
        return locks_the_file()

    with hivemem.open(str(path), embedder=None) as hive:
        assert flow.with_id("locked")(hive) == "done"
        finished = time.monotonic()
        (step,) = hive.get_workflow("locked", namespace="ns").steps
    assert (step.name, step.status, step.result) == ("locks_the_file", "succeeded", "done")
    assert released and finished >= released[0]  # it committed only once the other writer let go
    other.close()
