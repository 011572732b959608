"""The ``hivemem`` command: each command against a real SQLite file, plus one real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import hivemem
from hivemem.cli import main


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cli.db")


def run(db: str, *args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, ["--db", db, "--embedder", "none", *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> object:
    return json.loads(result.stdout)


def test_remember_get_and_recall(db: str) -> None:
    stored = as_json(run(db, "remember", "swarm/a", "deploy failed on migration", "--tag", "ops", "--json"))
    assert isinstance(stored, dict)
    assert stored["tags"] == ["ops"]
    fetched = as_json(run(db, "get", stored["id"], "--json"))
    assert fetched == stored
    hits = as_json(run(db, "--json", "recall", "deploying", "-n", "swarm"))
    assert isinstance(hits, list)
    assert [h["memory"]["id"] for h in hits] == [stored["id"]]
    assert set(hits[0]["scores"]) >= {"keyword", "relevance", "recency", "importance", "outcome"}


def test_data_and_where_filter(db: str) -> None:
    run(db, "remember", "s", "task alpha", "--kind", "episode", "--data", '{"success": true}')
    run(db, "remember", "s", "task alpha again", "--kind", "episode", "--data", '{"success": false}')
    hits = as_json(run(db, "recall", "task alpha", "--where", '{"success": true}', "--json"))
    assert isinstance(hits, list)
    assert [h["memory"]["data"]["success"] for h in hits] == [True]


def test_list_pages_with_cursor(db: str) -> None:
    for i in range(5):
        run(db, "remember", "s/x", f"note {i}")
    first = as_json(run(db, "list", "s", "--limit", "3", "--json"))
    assert isinstance(first, dict)
    second = as_json(run(db, "list", "s", "--limit", "3", "--cursor", first["next_cursor"], "--json"))
    assert isinstance(second, dict)
    contents = [m["content"] for m in first["items"] + second["items"]]
    assert contents == [f"note {i}" for i in range(5)]
    assert second["next_cursor"] is None


def test_errors_have_exit_codes_and_write_nothing(db: str) -> None:
    bad = run(db, "remember", "bad//ns", "x", ok=False)
    assert bad.exit_code == 2
    assert "namespace" in bad.stderr
    missing = run(db, "--json", "get", "no-such-id", ok=False)
    assert missing.exit_code == 3
    assert json.loads(missing.stderr)["error"]["code"] == "not_found"
    bad_json = run(db, "remember", "s", "x", "--data", "{oops", ok=False)
    assert bad_json.exit_code == 2
    empty = {"memories": 0, "bytes": 0, "conflicts": 0, "by_kind": {}, "by_tier": {}}
    assert as_json(run(db, "stats", "--json")) == empty


def test_forget_stats_and_sweep(db: str) -> None:
    kept = as_json(run(db, "remember", "a/b", "keep me", "--json"))
    gone = as_json(run(db, "remember", "a/c", "forget me", "--json"))
    run(db, "remember", "ab", "other root")
    assert isinstance(kept, dict) and isinstance(gone, dict)
    assert as_json(run(db, "forget", gone["id"], "--json")) == {"forgotten": 1}
    assert as_json(run(db, "forget", "--namespace", "ab", "--json")) == {"forgotten": 1}
    stats = as_json(run(db, "stats", "--json"))
    assert isinstance(stats, dict)
    assert stats["memories"] == 1
    assert as_json(run(db, "sweep", "--json")) == {
        "expired": 0,
        "embeddings_pruned": 0,
        "idempotency_keys_pruned": 0,
        "leases_pruned": 0,
        "events_pruned": 0,
    }


def test_export_import_round_trips_every_field(db: str, tmp_path: Path) -> None:
    with hivemem.open(db, embedder=None) as hive:
        parent = hive.remember("s/a", "parent", kind="fact", tier="long", key="k1", tags=["x", "y"], importance=0.9)
        hive.remember("s/a", "child", parent_id=parent.id, data={"n": [1, {"deep": True}]}, ttl=3600, agent_id="a1")
        hive.update(parent.id, content="parent v2")
        hive.reinforce(parent.id)
        original = [m.to_dict() for m in hive.export()]
    dump = tmp_path / "dump.jsonl"
    run(db, "export", str(dump))
    target = str(tmp_path / "copy.db")
    assert as_json(run(target, "import", str(dump), "--json")) == {"imported": 2}
    with hivemem.open(target, embedder=None) as copy:
        assert [m.to_dict() for m in copy.export()] == original
    # Importing again replaces by id instead of duplicating.
    run(target, "import", str(dump))
    with hivemem.open(target, embedder=None) as copy:
        assert copy.stats()["memories"] == 2


def test_import_rejects_bad_lines_and_writes_nothing(db: str, tmp_path: Path) -> None:
    dump = tmp_path / "bad.jsonl"
    dump.write_text('{"id": "x", "namespace": "bad//ns", "content": "c"}\n')
    result = run(db, "import", str(dump), ok=False)
    assert result.exit_code == 2
    assert as_json(run(db, "stats", "--json"))["memories"] == 0  # type: ignore[index]


def test_demo_runs_as_a_real_process(tmp_path: Path) -> None:
    db = str(tmp_path / "demo.db")
    proc = subprocess.run(
        [sys.executable, "-m", "hivemem", "--db", db, "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Lesson to apply: throttle below the limit" in proc.stdout
    with hivemem.open(db) as hive:
        assert hive.stats("demo-swarm")["by_kind"]["episode"]["memories"] == 2


def test_locks_lists_held_leases(db: str) -> None:
    with hivemem.open(db, embedder=None) as hive:
        lease = hive.lock("team-a/deploy", owner="agent-7", ttl=60)
        hive.lock("team-b/index", mode="read", ttl=60)
        held = json.loads(run(db, "--json", "locks", "--namespace", "team-a").stdout)
        assert held == [
            {
                "resource": "team-a/deploy",
                "mode": "write",
                "token": lease.token,
                "holder": "local:agent-7",
                "ttl": 60.0,
                "acquired_at": lease.acquired_at.isoformat(),
                "expires_at": lease.expires_at.isoformat(),
            }
        ]
        assert "team-b/index" in run(db, "locks").stdout
        lease.release()
        assert json.loads(run(db, "--json", "locks", "--namespace", "team-a").stdout) == []


def test_events_lists_and_follows_committed_changes(db: str, tmp_path: Path) -> None:
    with hivemem.open(db, embedder=None) as hive:
        note = hive.remember("team-a", "the deploy runs on tuesdays")
        hive.forget(note.id)
    lines = [json.loads(line) for line in run(db, "--json", "events", "--namespace", "team-a").stdout.splitlines()]
    assert [(e["seq"], e["type"], e["subject"]) for e in lines] == [
        (1, "memory.created", note.id),
        (2, "memory.deleted", note.id),
    ]
    assert "memory.deleted" in run(db, "events", "--namespace", "team-a", "--since", "1").stdout
    # --follow as a real process: it prints what commits after it started.
    command = [sys.executable, "-m", "hivemem", "--db", db, "--json", "events", "--namespace", "team-a", "--follow"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as follower:
        try:
            with hivemem.open(db, embedder=None) as hive:
                later = hive.remember("team-a/x", "written while following")
            assert follower.stdout is not None
            seen = [json.loads(follower.stdout.readline()) for _ in range(3)]
        finally:
            follower.kill()
    assert [(e["seq"], e["subject"]) for e in seen] == [(1, note.id), (2, note.id), (3, later.id)]


def test_plans_show_and_agents(db: str) -> None:
    with hivemem.open(db, embedder=None) as hive:
        tasks = [
            {"id": "fetch", "description": "fetch the invoices"},
            {"id": "load", "description": "load the invoices", "depends_on": ["fetch"]},
        ]
        hive.create_plan("team", tasks, plan_id="p1", title="invoices")
        hive.assign_task("p1", "fetch", "alice", namespace="team")
        hive.register_agent("team", "alice", specializations=["invoices"])
        hive.register_agent("team", "bob", specializations=["frontend"])
        hive.record_outcome("alice", "load the invoices", namespace="team", success=True, duration=4)
    shown = run(db, "plans", "show", "p1", "-n", "team")
    assert "fetch" in shown.output and "assigned" in shown.output and "alice" in shown.output
    assert "0% done" in shown.output
    plan = as_json(run(db, "plans", "show", "p1", "-n", "team", "--json"))
    assert isinstance(plan, dict)
    assert plan["levels"] == [["fetch"], ["load"]] and plan["progress"]["by_state"]["assigned"] == 1
    assert "p1" in run(db, "plans", "list", "-n", "team").output
    assert [p["id"] for p in as_json(run(db, "plans", "list", "-n", "team", "--json"))] == ["p1"]  # type: ignore[union-attr]
    missing = run(db, "plans", "show", "nope", "-n", "team", ok=False)
    assert missing.exit_code == 3 and "no plan" in missing.output
    listed = run(db, "agents", "-n", "team")
    assert "alice" in listed.output and "0.67" in listed.output and "bob" in listed.output
    profiles = as_json(run(db, "--json", "agents", "list", "-n", "team"))
    assert isinstance(profiles, list)
    assert [(p["name"], p["successes"]) for p in profiles] == [("alice", 1), ("bob", 0)]
    ranking = as_json(run(db, "agents", "select", "load invoices", "-n", "team", "--json"))
    assert isinstance(ranking, list)
    assert [r["agent"] for r in ranking] == ["alice", "bob"]
    assert set(ranking[0]) >= {"score", "specialization", "experience", "performance"}
    table = run(db, "agents", "select", "load invoices", "-n", "team", "--skill", "frontend")
    assert table.output.index("bob") < table.output.index("alice")
