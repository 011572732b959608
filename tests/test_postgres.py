"""PostgreSQL-only behaviour: migrations and the verify-only mode, a server without pgvector,
moving data between SQLite and PostgreSQL with the CLI, and how reads and searches use transactions.

The contract suite (test_contract.py) already runs every Hive method on PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import hivemem
from fakes import HashEmbedder
from hivemem import ConfigError, HiveConfig, StorageUnavailable, VersionConflict
from hivemem.cli import main
from hivemem.storage.base import MemoryFilter, StoreTx
from hivemem.storage.postgres import MIGRATIONS, PREPARE_THRESHOLD
from pg_server import schema_url, with_options

#: The machine's own PostgreSQL 15, which has no pgvector (see env/machines).
PLAIN_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def cli(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", db, "--embedder", "none", *args])


def test_migrate_applies_the_schema_and_check_mode_only_verifies(tmp_path: Path) -> None:
    url = schema_url(tmp_path)
    behind = cli(url, "migrate", "--check")
    assert behind.exit_code == 1
    assert "run `hivemem migrate`" in behind.output
    with pytest.raises(ConfigError, match="hivemem migrate"):
        hivemem.open(url, embedder=None, auto_migrate=False)

    applied = cli(url, "--json", "migrate")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout) == {"backend": "postgresql", "version_before": 0, "version": len(MIGRATIONS)}
    assert cli(url, "migrate", "--check").exit_code == 0
    with hivemem.open(url, embedder=None, auto_migrate=False) as hive:
        assert hive.remember("ns", "schema in place").version == 1


def _plain_postgres_schema() -> str:
    try:
        with psycopg.connect(PLAIN_POSTGRES, autocommit=True, connect_timeout=3) as conn:
            if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
                pytest.skip("the PostgreSQL on 127.0.0.1:5432 has pgvector; this test needs one without")
            schema = "t_" + uuid.uuid4().hex[:16]
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL without pgvector on 127.0.0.1:5432: {exc}")
    return with_options(PLAIN_POSTGRES, options=f"-csearch_path={schema}")


def test_a_server_without_pgvector_is_refused_at_open_and_works_keyword_only() -> None:
    url = _plain_postgres_schema()
    with pytest.raises(ConfigError, match="pgvector") as info:
        hivemem.open(url, embedder=HashEmbedder())
    assert info.value.details["missing_extension"] == "vector"
    with hivemem.open(url, embedder=None) as hive:
        stored = hive.remember("ns", "deployments roll back when health checks fail")
        assert [h.memory.id for h in hive.recall("deployment rollback", namespace="ns")] == [stored.id]
    # The refused open changed nothing: opening with an embedder still fails the same clear way.
    with pytest.raises(ConfigError, match="pgvector"):
        hivemem.open(url, embedder=HashEmbedder())


def test_export_and_import_round_trip_every_field_between_sqlite_and_postgres(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    with hivemem.open(source, embedder=None) as hive:
        parent = hive.remember("s/a", "parent", kind="fact", tier="long", key="k1", tags=["x", "y"], importance=0.9)
        hive.remember(
            "s/a",
            "child — ünïcode ✓",
            parent_id=parent.id,
            data={"n": [1, 2.5, {"deep": True}], "big": 10**20, "tiny": 1e-7, "order": {"b": 1, "a": 2}},
            ttl=3600,
            agent_id="a1",
            session_id="s1",
        )
        hive.remember_episode("s/b", context="c", action="a", outcome="o", success=False, lesson="l")
        hive.update(parent.id, content="parent v2")
        hive.reinforce(parent.id)
        original = [m.to_dict() for m in hive.export()]

    dump = tmp_path / "from-sqlite.jsonl"
    assert cli(source, "export", str(dump)).exit_code == 0
    postgres = schema_url(tmp_path / "pg")
    imported = cli(postgres, "--json", "import", str(dump))
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout) == {"imported": 3}
    with hivemem.open(postgres, embedder=None) as hive:
        assert [m.to_dict() for m in hive.export()] == original

    back = tmp_path / "from-postgres.jsonl"
    assert cli(postgres, "export", str(back)).exit_code == 0
    assert back.read_text() == dump.read_text()
    again = str(tmp_path / "again.db")
    assert cli(again, "import", str(back)).exit_code == 0
    with hivemem.open(again, embedder=None) as hive:
        assert [m.to_dict() for m in hive.export()] == original


def test_a_write_that_fails_in_its_pipeline_leaves_no_broken_connection_behind(tmp_path: Path) -> None:
    # psycopg prepares a statement on its 5th run and counts it prepared once sent, even if an
    # error earlier in the pipeline made the server skip it. Racing keyed inserts (a unique
    # violation, retried) did that under load, and the connection's next write then failed.
    with hivemem.open(schema_url(tmp_path), embedder=None, pool_size=1) as hive:
        store = hive.store

        def fails_first(tx: Any) -> None:
            tx._rows("SELECT 1 / 0")

        def runs_a_statement(tx: Any, fail: bool = False) -> None:
            tx._rows("SELECT 1")
            if fail:
                tx._execute("SELECT 1 / 0")
            tx._execute("SELECT 2")

        # A first rollback clears psycopg's prepared statements; the trap needs a later one.
        with pytest.raises(StorageUnavailable, match="division by zero"):
            store.write(fails_first)
        for _ in range(5):
            store.write(runs_a_statement)
        with pytest.raises(StorageUnavailable, match="division by zero"):
            store.write(lambda tx: runs_a_statement(tx, fail=True))
        store.write(runs_a_statement)
        assert hive.remember("ns", "still writable").version == 1


def test_a_write_that_raises_after_a_statement_failed_in_its_pipeline_leaves_no_stale_prepared_statement(
    tmp_path: Path,
) -> None:
    # psycopg records a statement as prepared when it sends it at its prepare threshold, even if
    # a failure earlier in the pipeline made the server skip it. A HiveMem error raised before
    # psycopg saw that failure hid it, and the connection went back to the pool with the record
    # ("prepared statement _pg3_7 does not exist" at its next run of the statement).
    with hivemem.open(schema_url(tmp_path), embedder=None, pool_size=1) as hive:
        first = hive.remember("ns", "first")
        for _ in range(2):
            # A read ends with ROLLBACK. psycopg clears its record at a ROLLBACK it has not counted
            # yet, and the first read's clear (of what opening prepared) drops that count too.
            hive.get(first.id)
        for n in range(PREPARE_THRESHOLD):
            hive.update(first.id, content=f"update {n}")

        def update_that_gives_up(tx: Any) -> None:
            current = tx.get(first.id, hive.clock.now())  # begins the pipeline
            # Fails on the server after the error below is raised, as an insert that waits for a
            # racing writer's key and then violates it would (an aggregate, so not at planning).
            tx._execute("SELECT 1 / (count(*) - 1) FROM pg_sleep(0.2)")
            tx.replace(current, current)  # the threshold run of an update's statements: skipped
            raise VersionConflict("given up before reading on", current_version=current.version)

        with pytest.raises(VersionConflict):
            hive.store.write(update_that_gives_up)
        runs = 3 * PREPARE_THRESHOLD
        for n in range(runs):
            updated = hive.update(first.id, content=f"after {n}")
            other = hive.remember("ns", f"other {n}")
            assert hive.get(first.id) == updated
            assert hive.get(other.id) == other
        assert updated.version == 1 + PREPARE_THRESHOLD + runs
        assert len(hive.list("ns", limit=100)) == 1 + runs


def test_prepared_statements_can_be_turned_off_for_pgbouncer(tmp_path: Path) -> None:
    url = schema_url(tmp_path)

    def prepared(hive: hivemem.Hive) -> tuple[int | None, int]:
        for n in range(2 * PREPARE_THRESHOLD):
            hive.get(hive.remember("ns", f"memory {n}").id)
        with hive.store._pool.connection() as conn:
            count = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
            return conn.prepare_threshold, count[0]

    with hivemem.open(url, embedder=None, pool_size=1) as hive:
        threshold, count = prepared(hive)
        assert threshold == PREPARE_THRESHOLD
        assert count > 0
    with hivemem.open(url, embedder=None, pool_size=1, prepared_statements=False) as hive:
        assert prepared(hive) == (None, 0)
    # The CLI and the server take it from the environment.
    config = HiveConfig.from_env({"HIVEMEM_PREPARED_STATEMENTS": "false", "HIVEMEM_POOL_SIZE": "1"})
    with hivemem.open(url, embedder=None, config=config) as hive:
        assert prepared(hive) == (None, 0)


def test_a_read_sees_one_snapshot_though_it_begins_with_its_first_statement(tmp_path: Path) -> None:
    url = schema_url(tmp_path)
    with hivemem.open(url, embedder=None) as hive, hivemem.open(url, embedder=None) as other:
        first = hive.remember("ns", "written before the read")
        flt = MemoryFilter(now=hive.clock.now(), namespace="ns")

        def read(tx: StoreTx) -> tuple[list[str], list[str]]:
            before = [m.content for m in tx.list(flt, "created_at", False, None, 10)]
            other.remember("ns", "written while the read runs")
            other.forget(first.id)
            return before, [m.content for m in tx.list(flt, "created_at", False, None, 10)]

        assert hive.store.read(read) == (["written before the read"], ["written before the read"])
        assert [m.content for m in hive.list("ns")] == ["written while the read runs"]
