"""The SQLite file itself: migrations from an older schema and the full-text index's integrity."""

from __future__ import annotations

from pathlib import Path

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
