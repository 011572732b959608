"""Events and inboxes, on every deployment; and a subscriber killed and restarted while writes go on.

The contract part runs on each deployment of conftest.DEPLOYMENTS. The crash
part runs a subscriber process on a shared store (a SQLite file, a PostgreSQL
schema, or a server over a SQLite file), kills it with SIGKILL 20 times while
10,000 writes commit, and restarts it from its own saved position each time:
it must see every event, in order, none skipped.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hivemem
from hivemem import EventsPruned, Hive, InvalidInput, VersionConflict

SPAWN = multiprocessing.get_context("spawn")


def _seqs(hive: Hive, namespace: str = "team-a") -> list[int]:
    return [e.seq for e in hive.events(namespace, limit=1000)]


# -- the contract, on every deployment -----------------------------------------------------------


def test_every_write_appends_its_events_in_order_without_gaps(hive: Hive) -> None:
    note = hive.remember("team-a/x", "the deploy runs on tuesdays", agent_id="agent-7")
    other = hive.remember("team-a", "the deploy key", key="deploy-key")
    hive.update(note.id, content="the deploy runs on mondays")
    hive.remember("team-a", "the new deploy key", key="deploy-key")
    hive.relate(note.id, other.id, "refers_to")
    hive.reinforce(note.id)
    with hive.lock("team-a/deploy"):
        pass
    hive.forget(other.id)
    hive.remember("team-b", "another root")
    events = hive.events("team-a")
    assert [(e.seq, e.type, e.subject) for e in events] == [
        (1, "memory.created", note.id),
        (2, "memory.created", other.id),
        (3, "memory.updated", note.id),
        (4, "memory.updated", other.id),
        (5, "relation.created", note.id),
        (6, "memory.accessed", note.id),
        (7, "lease.granted", "team-a/deploy"),
        (8, "lease.released", "team-a/deploy"),
        (9, "memory.deleted", other.id),
    ]
    assert events[0].namespace == "team-a/x"
    assert dict(events[0].data) == {"kind": "note", "version": 1, "key": None, "agent_id": "agent-7"}
    assert events[3].data["version"] == 2 and events[3].data["key"] == "deploy-key"
    assert events[4].data == {"dst_id": other.id, "type": "refers_to", "strength": 1.0}
    assert events[6].data["token"] == 1 and events[6].data["mode"] == "write"
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    assert _seqs(hive, "team-b") == [1]  # each root counts on its own


def test_a_write_that_fails_appends_nothing_and_leaves_no_gap(hive: Hive) -> None:
    note = hive.remember("team-a", "v1")
    with pytest.raises(VersionConflict):
        hive.update(note.id, content="v2", expected_version=7)
    with pytest.raises(InvalidInput):
        hive.remember_many([{"namespace": "team-a", "content": "ok"}, {"namespace": "team-a", "content": ""}])
    hive.update(note.id, content="v2")
    assert _seqs(hive) == [1, 2]


def test_a_sweep_prunes_old_events_and_a_reader_behind_them_is_told(open_hive: Any) -> None:
    hive = open_hive(event_retention_seconds=1)
    for i in range(3):
        hive.remember("team-a/x", f"old note {i}")
        hive.remember("gone", f"old elsewhere {i}")
    time.sleep(1.3)  # events carry the database's time, not the test's clock
    hive.remember("team-a/x", "new note")
    assert hive.sweep()["events_pruned"] == 6
    assert _seqs(hive) == [4]  # since=0: from the oldest kept
    with pytest.raises(EventsPruned) as behind:
        hive.events("team-a", since=1)  # events 2 and 3 are gone: reading on would skip them
    assert behind.value.details["oldest"] == 4
    assert [e.seq for e in hive.events("team-a", since=3)] == [4]  # caught up to what was pruned: nothing missed
    assert hive.events("gone") == []  # every event of a root pruned, its numbering kept:
    with pytest.raises(EventsPruned):
        hive.events("gone", since=2)
    assert hive.events("gone", since=3) == []
    hive.remember("gone", "after the sweep")
    assert _seqs(hive, "gone") == [4]
    assert hive.sweep()["events_pruned"] == 0


def test_events_are_kept_for_the_retention_and_0_keeps_them_all(open_hive: Any) -> None:
    for retention, kept in ((3600, [1, 2]), (0, [1, 2])):
        hive = open_hive(f"kept-{retention}", event_retention_seconds=retention)
        hive.remember("team-a", "one")
        hive.remember("team-a", "two")
        time.sleep(0.05)
        assert hive.sweep()["events_pruned"] == 0
        assert _seqs(hive) == kept
    with pytest.raises(hivemem.ConfigError):
        hivemem.HiveConfig(event_retention_seconds=-1)


def test_events_page_and_filter(hive: Hive) -> None:
    ids = [hive.remember("team-a/x" if i % 2 else "team-a/y", f"note {i}").id for i in range(7)]
    hive.forget(ids[0])
    page = hive.events("team-a", limit=3)
    rest = hive.events("team-a", since=page[-1].seq, limit=100)
    assert [e.seq for e in page + rest] == list(range(1, 9))
    assert [e.subject for e in hive.events("team-a/x")] == ids[1::2]
    assert [e.seq for e in hive.events("team-a", types=["memory.deleted"])] == [8]
    assert hive.events("team-a", since=8) == []
    assert hive.events("team-c") == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"namespace": None}, "namespace"),
        ({"since": -1}, "since"),
        ({"since": "3"}, "since"),
        ({"since": 2**64}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"types": ["memory.exploded"]}, "types"),
        ({"types": "memory.created"}, "types"),
    ],
)
def test_bad_event_queries_are_refused(hive: Hive, arguments: dict[str, Any], field: str) -> None:
    call = {"namespace": "team-a", **arguments}
    with pytest.raises(InvalidInput) as bad:
        hive.events(call.pop("namespace"), **call)
    assert bad.value.details["field"] == field


@pytest.mark.parametrize("agent", ["", "agent-\ud800", "agent\x00", "x" * 201, 7])
def test_bad_agent_ids_are_refused(hive: Hive, agent: Any) -> None:
    for field, call in (
        ("to_agent", lambda: hive.send(agent, {"x": 1}, namespace="team-a")),
        ("agent", lambda: hive.inbox_messages(agent, namespace="team-a")),
        ("agent", lambda: hive.ack(agent, 1, namespace="team-a")),
    ):
        with pytest.raises(InvalidInput) as bad:
            call()
        assert bad.value.details["field"] == field
    assert hive.events("team-a") == []


def test_an_inbox_delivers_in_order_until_acknowledged(open_hive: Any, capabilities: frozenset[str]) -> None:
    hive = open_hive()
    first = hive.send("agent-b", {"task": "index the docs"}, namespace="team-a")
    hive.remember("team-a", "not a message")
    second = hive.send("agent-b", "and then the tests", namespace="team-a")
    hive.send("agent-c", "someone else's", namespace="team-a")
    assert (first.type, first.subject, first.data["body"]) == ("message", "agent-b", {"task": "index the docs"})
    inbox = hive.inbox("agent-b", namespace="team-a")
    assert [m.seq for m in inbox.pending()] == [first.seq, second.seq]
    assert inbox.pending() == hive.events("team-a", types=["message"])[:2]
    inbox.ack(first.seq)
    assert [m.seq for m in inbox.pending()] == [second.seq]
    with pytest.raises(InvalidInput):
        inbox.ack(first.seq + 1)  # not a message to agent-b
    with pytest.raises(InvalidInput):
        inbox.ack(2**70)  # beyond any stored number
    inbox.ack(first.seq)  # acknowledging again changes nothing
    assert [m.data["body"] for m in inbox.pending()] == ["and then the tests"]
    if "durable" in capabilities:
        hive.close()
        hive = open_hive()
        assert [m.seq for m in hive.inbox("agent-b", namespace="team-a").pending()] == [second.seq]
    hive.ack("agent-b", second.seq, namespace="team-a")
    assert hive.inbox("agent-b", namespace="team-a").pending() == []


def test_subscribe_sees_each_new_event_once_in_order(hive: Hive) -> None:
    hive.remember("team-a", "before")
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        for event in hive.subscribe("team-a", since=1, poll=0.2):
            seen.append(event.seq)
            if len(seen) == 5:
                done.set()
                return

    follower = threading.Thread(target=follow)
    follower.start()
    for i in range(5):
        hive.remember("team-a/x", f"note {i}")
        time.sleep(0.01)
    assert done.wait(timeout=30)
    follower.join(timeout=30)
    assert seen == [2, 3, 4, 5, 6]


# -- a subscriber killed and restarted, on a shared store -----------------------------------------


def _subscriber(target: str, log_path: str) -> None:
    """Follow team-a from the last sequence number in the log, appending each one (durably) as it arrives."""
    log = Path(log_path)
    lines = log.read_text().split() if log.exists() else []
    since = int(lines[-1]) if lines else 0
    with hivemem.open(target, embedder=None) as hive, log.open("a") as out:
        for event in hive.subscribe("team-a", since=since, poll=0.2):
            out.write(f"{event.seq}\n")
            out.flush()
            os.fsync(out.fileno())


def test_a_subscriber_killed_20_times_misses_nothing(shared: str, tmp_path: Path) -> None:
    writes, batch, kills = 10_000, 10, 20
    log = tmp_path / "seen.log"
    rng = random.Random(7)
    hive = hivemem.open(shared, embedder=None)
    kill_at = sorted(rng.sample(range(1, writes // batch), kills))
    subscriber = SPAWN.Process(target=_subscriber, args=(shared, str(log)))
    subscriber.start()
    try:
        for i in range(writes // batch):
            hive.remember_many([{"namespace": "team-a", "content": f"note {i}.{j}"} for j in range(batch)])
            if kill_at and i == kill_at[0]:
                kill_at.pop(0)
                os.kill(subscriber.pid, signal.SIGKILL)
                subscriber.join()
                subscriber = SPAWN.Process(target=_subscriber, args=(shared, str(log)))
                subscriber.start()
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_text().split()[-1:] == [str(writes)]):
            assert time.monotonic() < deadline and subscriber.is_alive(), "the subscriber fell behind"
            time.sleep(0.1)
    finally:
        subscriber.kill()
        subscriber.join()
        hive.close()
    seen = [int(s) for s in log.read_text().split()]
    # In order, none skipped: each line is the one before it or the next (a kill between
    # delivering and logging can only mean seeing an event again, never losing one).
    assert seen[0] == 1 and seen[-1] == writes
    assert all(b in (a, a + 1) for a, b in itertools.pairwise(seen))
    assert sorted(set(seen)) == list(range(1, writes + 1))
