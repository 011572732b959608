"""The Hive contract: what every public method does, on every deployment.

Each test runs once per entry of ``conftest.DEPLOYMENTS`` through the ``hive``
fixture (manual clock, HashEmbedder). Tests check results and stored state,
never only that a call returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import hivemem
from conftest import START, OpenHive
from fakes import HashEmbedder
from hivemem import (
    ConfigError,
    Hive,
    InvalidInput,
    Memory,
    NotFound,
    PayloadTooLarge,
    VersionConflict,
)
from hivemem.storage.base import MemoryFilter, RankFacts

T0 = datetime.fromtimestamp(START, tz=UTC)
SCORE_PARTS = {"keyword", "vector", "relevance", "recency", "importance", "outcome"}


# --------------------------------------------------------------------------- helpers


def everything(hive: Hive) -> list[Memory]:
    """Every live memory, in the default listing order, across all pages."""
    out: list[Memory] = []
    cursor = None
    while True:
        page = hive.list(limit=1000, cursor=cursor)
        out += page.items
        cursor = page.next_cursor
        if cursor is None:
            return out


def state(hive: Hive) -> tuple[Any, ...]:
    """A comparable picture of what is stored: stats plus every memory with its version."""
    return (hive.stats(), [m.to_dict() for m in everything(hive)])


def ids(items: Any) -> list[str]:
    return [getattr(x, "memory", x).id for x in items]


# --------------------------------------------------------------------------- remember / get


def test_remember_returns_every_field(hive: Hive) -> None:
    occurred = T0 - timedelta(hours=2)
    m = hive.remember(
        "swarm-1/agent-a",
        "The build broke after upgrading numpy",
        kind="fact",
        tier="long",
        key="build-status",
        data={"severity": 3, "nested": {"ok": False}},
        tags=["ci", "numpy", "ci"],
        importance=0.8,
        agent_id="agent-a",
        session_id="s-1",
        parent_id="some-parent",
        occurred_at=occurred,
        ttl=3600,
        sensitive=True,
    )
    assert uuid.UUID(m.id).version == 7
    assert m.namespace == "swarm-1/agent-a"
    assert m.content == "The build broke after upgrading numpy"
    assert (m.kind, m.tier, m.key) == ("fact", "long", "build-status")
    assert m.data == {"severity": 3, "nested": {"ok": False}}
    assert m.tags == ("ci", "numpy")  # duplicates dropped, order kept
    assert m.importance == 0.8
    assert (m.agent_id, m.session_id, m.parent_id) == ("agent-a", "s-1", "some-parent")
    assert m.occurred_at == occurred
    assert m.created_at == T0
    assert m.updated_at == T0
    assert m.expires_at == T0 + timedelta(seconds=3600)
    assert m.version == 1
    assert m.access_count == 0
    assert m.last_accessed_at is None
    assert m.content_hash == hashlib.sha256(m.content.encode()).hexdigest()
    assert m.sensitive is True
    assert hive.get(m.id) == m


def test_remember_defaults(hive: Hive) -> None:
    m = hive.remember("ns", "plain note")
    assert (m.kind, m.tier, m.key, m.importance) == ("note", "short", None, 0.5)
    assert m.data == {} and m.tags == ()
    assert m.occurred_at is None and m.expires_at is None
    assert m.sensitive is False
    assert hive.get(m.id) == m


def test_data_keeps_a_lone_surrogate_it_was_given_as_json(hive: Hive) -> None:
    # JSON's \ud800 escape decodes to a string UTF-8 cannot carry: it is stored, answered and read back as given.
    m = hive.remember("ns", "escaped", data={"raw": "a\ud800b"})
    assert m.data == {"raw": "a\ud800b"}
    assert hive.get(m.id) == m


def test_ids_are_time_ordered_and_unique(hive: Hive) -> None:
    made = [hive.remember("ns", f"memory {i}").id for i in range(50)]
    assert made == sorted(made)
    assert len(set(made)) == 50


def test_created_at_follows_the_manual_clock(hive: Hive, clock: hivemem.ManualClock) -> None:
    first = hive.remember("ns", "first")
    clock.advance(90.5)
    second = hive.remember("ns", "second")
    assert first.created_at == T0
    assert second.created_at == T0 + timedelta(seconds=90.5)


def test_key_upsert_makes_a_new_version_with_the_same_id(hive: Hive, clock: hivemem.ManualClock) -> None:
    v1 = hive.remember("ns", "status: red", key="status", importance=0.2)
    clock.advance(10)
    v2 = hive.remember("ns", "status: green", key="status", importance=0.9)
    assert v2.id == v1.id
    assert v2.version == 2
    assert v2.created_at == v1.created_at == T0
    assert v2.updated_at == T0 + timedelta(seconds=10)
    assert v2.content == "status: green" and v2.importance == 0.9
    assert hive.get_by_key("ns", "status") == v2
    assert hive.history(v1.id) == [v1, v2]
    assert len(everything(hive)) == 1


def test_same_key_in_other_namespaces_is_another_memory(hive: Hive) -> None:
    a = hive.remember("ns/a", "one", key="k")
    b = hive.remember("ns/b", "two", key="k")
    c = hive.remember("ns", "three", key="k")
    assert len({a.id, b.id, c.id}) == 3
    assert hive.get_by_key("ns/a", "k").content == "one"
    assert hive.get_by_key("ns/b", "k").content == "two"
    assert hive.get_by_key("ns", "k").content == "three"


def test_get_and_get_by_key_not_found(hive: Hive) -> None:
    hive.remember("ns", "something", key="k")
    with pytest.raises(NotFound):
        hive.get(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        hive.get_by_key("ns", "other")
    with pytest.raises(NotFound):
        hive.get_by_key("ns/child", "k")  # exact namespace, not a prefix
    with pytest.raises(NotFound):
        hive.get_by_key("n", "k")


def test_get_by_key_checks_the_namespace(hive: Hive) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.get_by_key("a//b", "k")
    assert info.value.field == "namespace"


# --------------------------------------------------------------------------- update / history


def test_update_changes_fields_and_keeps_history(hive: Hive, clock: hivemem.ManualClock) -> None:
    v1 = hive.remember("ns", "first text", data={"a": 1}, tags=["x"], importance=0.3)
    clock.advance(5)
    v2 = hive.update(v1.id, content="second text", data={"b": 2}, tags=["y", "z"], importance=0.7, tier="long")
    assert v2.id == v1.id
    assert v2.version == 2
    assert v2.content == "second text"
    assert v2.content_hash == hashlib.sha256(b"second text").hexdigest()
    assert v2.data == {"b": 2}  # replaced, not merged
    assert v2.tags == ("y", "z")
    assert (v2.importance, v2.tier) == (0.7, "long")
    assert v2.created_at == T0
    assert v2.updated_at == T0 + timedelta(seconds=5)
    assert hive.get(v1.id) == v2
    clock.advance(5)
    v3 = hive.update(v1.id, importance=0.1)
    assert v3.version == 3 and v3.content == "second text" and v3.importance == 0.1
    history = hive.history(v1.id)
    assert [m.version for m in history] == [1, 2, 3]
    assert history == [v1, v2, v3]


def test_update_with_expected_version(hive: Hive) -> None:
    m = hive.remember("ns", "counter", data={"n": 0})
    updated = hive.update(m.id, data={"n": 1}, expected_version=1)
    assert updated.version == 2
    before = state(hive)
    with pytest.raises(VersionConflict) as info:
        hive.update(m.id, data={"n": 99}, expected_version=1)
    assert info.value.current_version == 2
    assert info.value.details["expected_version"] == 1
    assert state(hive) == before
    assert hive.get(m.id).data == {"n": 1}
    assert len(hive.history(m.id)) == 2


def test_update_unknown_id_is_not_found(hive: Hive) -> None:
    with pytest.raises(NotFound):
        hive.update(str(uuid.uuid4()), content="x")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"data": [1, 2]}, "data"),
        ({"tags": "single"}, "tags"),
        ({"importance": 1.5}, "importance"),
        ({"importance": True}, "importance"),
        ({"tier": "forever"}, "tier"),
        ({"expected_version": 0}, "expected_version"),
        ({"content": "lone surrogate \ud800"}, "content"),
    ],
)
def test_update_bad_input_writes_nothing(hive: Hive, changes: dict[str, Any], field: str) -> None:
    m = hive.remember("ns", "original")
    before = state(hive)
    with pytest.raises(InvalidInput) as info:
        hive.update(m.id, **changes)
    assert info.value.field == field
    assert state(hive) == before
    assert hive.history(m.id) == [m]


def test_update_oversized_content(open_hive: OpenHive) -> None:
    hive = open_hive("small", max_content_bytes=100)
    m = hive.remember("ns", "short")
    with pytest.raises(PayloadTooLarge) as info:
        hive.update(m.id, content="x" * 101)
    assert info.value.details["field"] == "content"
    assert hive.get(m.id) == m


def test_history_of_unknown_memory_is_not_found(hive: Hive) -> None:
    with pytest.raises(NotFound):
        hive.history(str(uuid.uuid4()))


def test_history_of_an_unchanged_memory_is_just_it(hive: Hive) -> None:
    m = hive.remember("ns", "never changed")
    assert hive.history(m.id) == [m]


# --------------------------------------------------------------------------- forget


def test_forget_deletes_and_then_not_found(hive: Hive) -> None:
    a = hive.remember("ns", "keep me")
    b = hive.remember("ns", "drop me", key="k")
    hive.update(b.id, content="drop me too")
    assert hive.forget(b.id) == 1
    with pytest.raises(NotFound):
        hive.get(b.id)
    with pytest.raises(NotFound):
        hive.get_by_key("ns", "k")
    with pytest.raises(NotFound):
        hive.history(b.id)
    with pytest.raises(NotFound):
        hive.forget(b.id)
    assert ids(everything(hive)) == [a.id]
    assert ids(hive.recall("drop me", k=10)) == [a.id]


def test_forget_without_cascade_keeps_children(hive: Hive) -> None:
    parent = hive.remember("ns", "parent")
    child = hive.remember("ns", "child", parent_id=parent.id)
    assert hive.forget(parent.id) == 1
    assert hive.get(child.id).parent_id == parent.id


def test_forget_cascade_is_recursive(hive: Hive) -> None:
    root = hive.remember("ns", "root")
    c1 = hive.remember("ns", "child one", parent_id=root.id)
    c2 = hive.remember("other", "child two in another namespace", parent_id=root.id)
    g1 = hive.remember("ns", "grandchild", parent_id=c1.id)
    gg1 = hive.remember("ns", "great-grandchild", parent_id=g1.id)
    bystander = hive.remember("ns", "unrelated")
    assert hive.forget(root.id, cascade=True) == 5
    for gone in (root, c1, c2, g1, gg1):
        with pytest.raises(NotFound):
            hive.get(gone.id)
    assert ids(everything(hive)) == [bystander.id]


def test_forget_cascade_must_be_true_or_false(hive: Hive) -> None:
    parent = hive.remember("ns", "parent")
    hive.remember("ns", "child", parent_id=parent.id)
    with pytest.raises(InvalidInput) as info:
        hive.forget(parent.id, cascade="yes")  # type: ignore[arg-type]
    assert info.value.field == "cascade"
    assert len(everything(hive)) == 2


def test_forget_cascade_survives_a_parent_cycle(hive: Hive) -> None:
    a = hive.remember("ns", "a", key="a")
    b = hive.remember("ns", "b", parent_id=a.id)
    hive.remember("ns", "a again", key="a", parent_id=b.id)  # a's new version points back at b
    assert hive.forget(a.id, cascade=True) == 2
    assert everything(hive) == []


def test_forget_removes_relations_and_memberships(hive: Hive) -> None:
    a = hive.remember("ns", "a")
    b = hive.remember("ns", "b")
    hive.relate(a.id, b.id, "causes")
    hive.create_group("g")
    hive.add_to_group(a.id, "g")
    hive.add_to_group(b.id, "g")
    hive.forget(b.id)
    assert hive.related(a.id, direction="both") == []
    assert ids(hive.group_members("g")) == [a.id]


def test_forget_namespace_is_segment_wise(hive: Hive) -> None:
    inside = [
        hive.remember("a", "in a"),
        hive.remember("a/x", "in a/x"),
        hive.remember("a/x/y", "in a/x/y", ttl=5),
    ]
    outside = [
        hive.remember("ab", "in ab"),
        hive.remember("a.b", "in a.b"),
        hive.remember("a-1/x", "in a-1/x"),
        hive.remember("b/a", "in b/a"),
        hive.remember("A", "in A"),
    ]
    assert hive.forget_namespace("a") == 3
    assert sorted(ids(everything(hive))) == sorted(m.id for m in outside)
    for m in inside:
        with pytest.raises(NotFound):
            hive.get(m.id)
    assert hive.forget_namespace("a") == 0


def test_forget_namespace_accepts_a_trailing_slash_and_subpaths(hive: Hive) -> None:
    keep = hive.remember("a", "stays")
    hive.remember("a/x", "goes")
    hive.remember("a/x/y", "goes too")
    assert hive.forget_namespace("a/x/") == 2
    assert ids(everything(hive)) == [keep.id]


@pytest.mark.parametrize("prefix", ["", "a//b", "/a", "a b", None])
def test_forget_namespace_bad_prefix(hive: Hive, prefix: Any) -> None:
    hive.remember("a", "stays")
    before = state(hive)
    with pytest.raises(InvalidInput) as info:
        hive.forget_namespace(prefix)
    assert info.value.field in ("prefix", "namespace")
    assert state(hive) == before


# --------------------------------------------------------------------------- expiry and sweep


def test_expired_memories_are_invisible(hive: Hive, clock: hivemem.ManualClock) -> None:
    lasting = hive.remember("ns", "lasting fact about caching", kind="fact")
    brief = hive.remember("ns", "brief fact about caching", kind="fact", ttl=60, key="brief")
    later = hive.remember("ns", "caching until later", expires_at=T0 + timedelta(seconds=120))
    hive.relate(lasting.id, brief.id, "mentions")
    hive.create_group("g")
    hive.add_to_group(brief.id, "g")
    assert hive.get(brief.id) == brief
    assert hive.stats()["memories"] == 3

    clock.advance(59.5)
    assert hive.get(brief.id) == brief

    clock.advance(0.5)  # expires_at == now: expired
    with pytest.raises(NotFound):
        hive.get(brief.id)
    with pytest.raises(NotFound):
        hive.get_by_key("ns", "brief")
    with pytest.raises(NotFound):
        hive.history(brief.id)
    with pytest.raises(NotFound):
        hive.update(brief.id, content="revive")
    with pytest.raises(NotFound):
        hive.reinforce(brief.id)
    with pytest.raises(NotFound):
        hive.forget(brief.id)
    assert sorted(ids(everything(hive))) == sorted([lasting.id, later.id])
    assert brief.id not in ids(hive.recall("brief fact caching", k=10))
    assert hive.related(lasting.id) == []
    assert hive.group_members("g") == []
    stats = hive.stats()
    assert stats["memories"] == 2
    assert stats["by_kind"]["fact"]["memories"] == 1

    clock.advance(60)
    assert ids(everything(hive)) == [lasting.id]
    assert hive.stats()["memories"] == 1


def test_sweep_deletes_expired_and_counts(hive: Hive, clock: hivemem.ManualClock) -> None:
    keep = hive.remember("ns", "stays forever")
    hive.remember("ns", "gone soon one", ttl=10)
    hive.remember("ns", "gone soon two", ttl=timedelta(seconds=20))
    hive.remember("ns", "not yet", ttl=1000)
    assert hive.sweep() == {
        "expired": 0,
        "embeddings_pruned": 0,
        "idempotency_keys_pruned": 0,
        "leases_pruned": 0,
        "events_pruned": 0,
    }
    clock.advance(30)
    result = hive.sweep()
    assert result["expired"] == 2
    assert result["embeddings_pruned"] == 2  # their texts were used by no other memory
    assert hive.sweep() == {
        "expired": 0,
        "embeddings_pruned": 0,
        "idempotency_keys_pruned": 0,
        "leases_pruned": 0,
        "events_pruned": 0,
    }
    assert len(everything(hive)) == 2
    assert hive.get(keep.id) == keep


def test_sweep_keeps_embeddings_still_used(hive: Hive, clock: hivemem.ManualClock, embedder: HashEmbedder) -> None:
    hive.remember("ns", "shared words", ttl=10)
    stays = hive.remember("ns", "shared words")
    clock.advance(10)
    assert hive.sweep() == {
        "expired": 1,
        "embeddings_pruned": 0,
        "idempotency_keys_pruned": 0,
        "leases_pruned": 0,
        "events_pruned": 0,
    }
    hits = hive.recall("Shared Words", k=5)
    assert ids(hits) == [stays.id]
    assert hits[0].scores["vector"] > 0.99
    assert embedder.texts_embedded.count("shared words") == 1


def test_expired_key_can_be_remembered_again(hive: Hive, clock: hivemem.ManualClock) -> None:
    old = hive.remember("ns", "session token A", key="token", ttl=10)
    hive.update(old.id, content="session token A2")
    clock.advance(10)
    new = hive.remember("ns", "session token B", key="token")
    assert new.id != old.id
    assert new.version == 1
    assert new.created_at == T0 + timedelta(seconds=10)
    assert hive.get_by_key("ns", "token") == new
    assert hive.history(new.id) == [new]
    with pytest.raises(NotFound):
        hive.get(old.id)
    assert hive.sweep()["expired"] == 0  # the expired row was replaced, not left behind
    assert ids(everything(hive)) == [new.id]


def test_upsert_before_expiry_keeps_the_id(hive: Hive, clock: hivemem.ManualClock) -> None:
    old = hive.remember("ns", "lease", key="lease", ttl=10)
    clock.advance(5)
    new = hive.remember("ns", "lease renewed", key="lease", ttl=10)
    assert new.id == old.id and new.version == 2
    assert new.expires_at == T0 + timedelta(seconds=15)
    clock.advance(6)
    assert hive.get(old.id) == new


def test_expires_at_and_ttl_together_are_refused(hive: Hive) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.remember("ns", "x", ttl=5, expires_at=T0 + timedelta(seconds=5))
    assert info.value.field == "ttl"
    assert everything(hive) == []


# --------------------------------------------------------------------------- recall


def test_recall_ranks_the_relevant_memory_first(hive: Hive) -> None:
    target = hive.remember("ns", "PostgreSQL connection pool exhausted under load")
    hive.remember("ns", "The frontend uses React hooks")
    hive.remember("ns", "Lunch was pizza")
    hits = hive.recall("connection pool exhausted", k=3)
    assert hits[0].memory == target
    assert hits[0].scores["keyword"] > 0
    assert hits[0].scores["vector"] > 0
    assert hits[0].scores["relevance"] == pytest.approx(1.0)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_hit_scores_have_every_part(hive: Hive, clock: hivemem.ManualClock) -> None:
    m = hive.remember("ns", "retry with exponential backoff", importance=0.9)
    clock.advance(30 * 86_400)  # one half-life
    (hit,) = hive.recall("exponential backoff", k=1)
    assert set(hit.scores) == SCORE_PARTS
    assert hit.memory.id == m.id
    assert hit.scores["recency"] == pytest.approx(0.5)
    assert hit.scores["importance"] == pytest.approx(0.9)
    assert hit.scores["outcome"] == 0.5
    assert 0 <= hit.scores["relevance"] <= 1
    expected = hit.scores["relevance"] + 0.05 * (0.5 + 0.9 + 0.5)
    assert hit.score == pytest.approx(expected)
    assert hit.to_dict()["scores"] == dict(hit.scores)


def test_recall_namespace_prefix(hive: Hive) -> None:
    a = hive.remember("team", "shared cache note")
    ax = hive.remember("team/agent-x", "agent cache note")
    axy = hive.remember("team/agent-x/s1", "session cache note")
    hive.remember("team-2", "other team cache note")
    hive.remember("teamwork", "another cache note")
    found = {h.memory.id for h in hive.recall("cache note", namespace="team", k=50)}
    assert found == {a.id, ax.id, axy.id}
    found = {h.memory.id for h in hive.recall("cache note", namespace="team/agent-x", k=50)}
    assert found == {ax.id, axy.id}
    found = {h.memory.id for h in hive.recall("cache note", namespace="team/agent-x/", k=50)}
    assert found == {ax.id, axy.id}
    assert hive.recall("cache note", namespace="nobody", k=50) == []


def test_recall_filters(hive: Hive, clock: hivemem.ManualClock) -> None:
    word = "zebra"
    m1 = hive.remember(
        "ns",
        f"{word} one",
        kind="fact",
        tier="long",
        tags=["a", "b"],
        agent_id="ag1",
        session_id="s1",
        data={"n": 1, "tool": "grep", "ok": True},
        occurred_at=T0 - timedelta(days=1),
    )
    m2 = hive.remember(
        "ns",
        f"{word} two",
        kind="episode",
        tier="mid",
        tags=["b"],
        agent_id="ag2",
        session_id="s1",
        data={"n": 5, "tool": "sed", "ok": False},
    )
    m3 = hive.remember(
        "ns",
        f"{word} three",
        tags=["a"],
        agent_id="ag1",
        session_id="s2",
        data={"n": 10, "tool": "awk", "nested": {"depth": 2}},
        occurred_at=T0 + timedelta(days=1),
    )
    every = {m1.id, m2.id, m3.id}

    def found(**filters: Any) -> set[str]:
        hits = hive.recall(word, k=50, **filters)
        return {h.memory.id for h in hits}

    assert found() == every
    assert found(kinds="fact") == {m1.id}
    assert found(kinds=["fact", "episode"]) == {m1.id, m2.id}
    assert found(tiers=["short"]) == {m3.id}
    assert found(tiers="mid") == {m2.id}
    assert found(tags=["a"]) == {m1.id, m3.id}
    assert found(tags=["a", "b"]) == {m1.id}
    assert found(tags=["c"]) == set()
    assert found(agent_id="ag1") == {m1.id, m3.id}
    assert found(session_id="s1") == {m1.id, m2.id}
    assert found(agent_id="ag1", session_id="s1") == {m1.id}
    assert found(since=T0) == {m2.id, m3.id}
    assert found(until=T0) == {m1.id}
    assert found(since=T0 - timedelta(days=1), until=T0 + timedelta(days=1)) == {m1.id, m2.id}
    assert found(where={"tool": "grep"}) == {m1.id}
    assert found(where={"tool": {"$eq": "sed"}}) == {m2.id}
    assert found(where={"n": {"$gt": 1}}) == {m2.id, m3.id}
    assert found(where={"n": {"$gte": 1, "$lt": 10}}) == {m1.id, m2.id}
    assert found(where={"n": {"$lte": 5}}) == {m1.id, m2.id}
    assert found(where={"tool": {"$in": ["grep", "awk", "cat"]}}) == {m1.id, m3.id}
    assert found(where={"tool": {"$ne": "grep"}}) == {m2.id, m3.id}
    assert found(where={"ok": True}) == {m1.id}
    assert found(where={"ok": False}) == {m2.id}
    assert found(where={"ok": {"$ne": True}}) == {m2.id, m3.id}  # a missing field is "not equal"
    assert found(where={"nested.depth": 2}) == {m3.id}
    assert found(where={"n": {"$gt": 1}, "tool": "awk"}) == {m3.id}
    assert found(where={"missing": None}) == every
    assert found(kinds="fact", where={"n": {"$gt": 1}}) == set()


def test_recall_k_and_min_score(hive: Hive) -> None:
    for i in range(12):
        hive.remember("ns", f"kettle number {i}", importance=i / 20)
    hits = hive.recall("kettle", k=5)
    assert len(hits) == 5
    every = hive.recall("kettle", k=100)
    assert len(every) == 12
    assert ids(hits) == ids(every)[:5]
    threshold = (every[3].score + every[4].score) / 2
    assert every[3].score > every[4].score
    kept = hive.recall("kettle", k=100, min_score=threshold)
    assert ids(kept) == ids(every)[:4]
    assert all(h.score >= threshold for h in kept)
    assert hive.recall("kettle", k=100, min_score=1e9) == []


def test_recall_filters_never_hide_a_match_ranked_below_the_candidates(hive: Hive) -> None:
    # 150 memories are closer to the query than the one that passes the filter, and the
    # keyword list cannot see it (its only shared word is a stop word): recall must widen.
    hive.remember_many([{"namespace": "w", "content": f"zebra stripes {i}"} for i in range(150)])
    rare = hive.remember("w", "them " + " ".join(f"x{i}" for i in range(1, 9)), tags=["rare"])
    hits = hive.recall("them zebra", namespace="w", tags=["rare"], k=5)
    assert ids(hits) == [rare.id]
    assert hits[0].scores["vector"] > 0


def test_memories_hidden_by_a_filter_do_not_lower_relevance(hive: Hive) -> None:
    # The keyword list is ranked among the memories that pass the filter; the vector list
    # must be too, or a hit's relevance (and min_score) depends on memories the caller excluded.
    hive.remember_many([{"namespace": "w", "content": f"zebra stripes {i}", "agent_id": "a"} for i in range(30)])
    mine = hive.remember("w", "them " + " ".join(f"x{i}" for i in range(1, 9)), agent_id="b")
    (hit,) = hive.recall("them zebra", agent_id="b", k=5)
    assert hit.memory.id == mine.id
    assert hit.scores["relevance"] == pytest.approx(1.0)


def test_recall_importance_breaks_ties(hive: Hive) -> None:
    low = hive.remember("ns/a", "identical words here", importance=0.1)
    high = hive.remember("ns/b", "identical words here", importance=0.9)
    hits = hive.recall("identical words here", k=2)
    assert ids(hits) == [high.id, low.id]


@pytest.mark.parametrize("failed_first", [True, False], ids=["failed-written-first", "success-written-first"])
def test_successful_episode_ranks_above_identical_failed_one(hive: Hive, failed_first: bool) -> None:
    fields = {"context": "flaky integration test", "action": "rerun with --forked", "outcome": "test passed"}
    written = {}
    for success in [False, True] if failed_first else [True, False]:
        written[success] = hive.remember_episode("team", success=success, **fields)
    hits = hive.recall("flaky integration test", k=2)
    assert [h.memory.data["success"] for h in hits] == [True, False]
    assert hits[0].scores["outcome"] == 1.0
    assert hits[1].scores["outcome"] == 0.0
    assert hits[0].memory.id == written[True].id


def test_recall_where_success_filter(hive: Hive) -> None:
    good = hive.remember_episode("team", context="deploy", action="blue-green", outcome="fine", success=True)
    hive.remember_episode("team", context="deploy", action="big bang", outcome="outage", success=False)
    hits = hive.recall("deploy", where={"success": True}, kinds="episode", k=10)
    assert ids(hits) == [good.id]


def test_keyword_only_recall_without_embedder(open_hive: OpenHive) -> None:
    hive = open_hive("keyword-only", embedder=None)
    assert hive.embedder is None
    target = hive.remember("ns", "Redis eviction policy is allkeys-lru")
    hive.remember("ns", "Kafka retention is seven days")
    hits = hive.recall("which eviction policy does redis use?", k=10)
    assert ids(hits) == [target.id]
    assert hits[0].scores["vector"] == 0.0
    assert hits[0].scores["keyword"] > 0
    assert hits[0].scores["relevance"] == pytest.approx(1.0)
    assert hive.recall("nothing matches this", k=10) == []


def test_stemming_finds_other_word_forms(open_hive: OpenHive) -> None:
    hive = open_hive("stems", embedder=None)
    deployed = hive.remember("ns", "We deployed the service yesterday")
    deploys = hive.remember("ns", "Jenkins deploys every night")
    deployments = hive.remember("ns", "Two deployments failed")
    running = hive.remember("ns", "The job is running")
    hive.remember("ns", "Unrelated rollback note")
    assert {h.memory.id for h in hive.recall("deploying", k=10)} >= {deployed.id, deploys.id}
    assert {h.memory.id for h in hive.recall("deploying", k=10)}.isdisjoint({running.id})
    assert deployments.id in ids(hive.recall("deployment", k=10))
    assert ids(hive.recall("runs", k=10)) == [running.id]


def test_recall_stop_words_only_query_still_works(open_hive: OpenHive) -> None:
    hive = open_hive("stop", embedder=None)
    m = hive.remember("ns", "to be or not to be")
    assert ids(hive.recall("to be", k=5)) == [m.id]


def test_embedding_cache_embeds_each_content_once(hive: Hive, embedder: HashEmbedder) -> None:
    hive.remember("ns/a", "the same content")
    hive.remember("ns/b", "the same content", kind="fact")
    hive.remember_many(
        [
            {"namespace": "ns", "content": "batch text"},
            {"namespace": "ns", "content": "batch text"},
            {"namespace": "ns", "content": "the same content"},
        ]
    )
    m = hive.remember("ns", "different content")
    hive.update(m.id, content="the same content")
    hive.remember("ns", "the same content", key="k")
    assert embedder.texts_embedded.count("the same content") == 1
    assert embedder.texts_embedded.count("batch text") == 1
    assert embedder.texts_embedded.count("different content") == 1
    embedded_before = len(embedder.texts_embedded)
    hive.recall("a query", k=3)
    hive.recall("a query", k=3)
    assert embedder.texts_embedded[embedded_before:] == ["a query"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": 42}, "query"),
        ({"k": 0}, "k"),
        ({"k": -1}, "k"),
        ({"k": 1001}, "k"),
        ({"k": True}, "k"),
        ({"k": 2.5}, "k"),
        ({"namespace": "a//b"}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"kinds": []}, "kinds"),
        ({"kinds": ["Fact"]}, "kinds"),
        ({"tiers": ["forever"]}, "tiers"),
        ({"tags": "a"}, "tags"),
        ({"agent_id": ""}, "agent_id"),
        ({"since": datetime(2024, 1, 1)}, "since"),  # naive on purpose
        ({"until": "2024-01-01"}, "until"),
        ({"min_score": "high"}, "min_score"),
        ({"where": {"n": {"$regex": "x"}}}, "where"),
        ({"where": {"n": {}}}, "where"),
        ({"where": {"bad path": 1}}, "where"),
        ({"where": {"n": {"$in": []}}}, "where"),
        ({"where": {"n": {"$in": "abc"}}}, "where"),
        ({"where": {"n": {"$gt": True}}}, "where"),
        ({"where": {"n": {"$lt": None}}}, "where"),
        ({"where": {"n": [1, 2]}}, "where"),
        ({"where": {"n": {"$eq": {"a": 1}}}}, "where"),
        ({"where": [("n", 1)]}, "where"),
    ],
)
def test_recall_bad_input(hive: Hive, kwargs: dict[str, Any], field: str) -> None:
    hive.remember("ns", "something to find")
    args = {"query": "something", **kwargs}
    query = args.pop("query")
    with pytest.raises(InvalidInput) as info:
        hive.recall(query, **args)
    assert info.value.field == field
    assert info.value.code == "invalid_input"


# --------------------------------------------------------------------------- relations, children, groups


def test_relate_and_related_directions(hive: Hive, clock: hivemem.ManualClock) -> None:
    a = hive.remember("ns", "cause")
    b = hive.remember("ns", "effect")
    c = hive.remember("ns", "context")
    rel = hive.relate(a.id, b.id, "causes", strength=0.7)
    assert (rel.src_id, rel.dst_id, rel.type, rel.strength, rel.created_at) == (a.id, b.id, "causes", 0.7, T0)
    clock.advance(1)
    hive.relate(c.id, a.id, "explains")

    out = hive.related(a.id)
    assert [(r.memory.id, r.relation.type) for r in out] == [(b.id, "causes")]
    assert out[0].memory == b
    assert out[0].relation == rel
    assert [(r.memory.id, r.relation.type) for r in hive.related(a.id, direction="in")] == [(c.id, "explains")]
    both = hive.related(a.id, direction="both")
    assert [(r.memory.id, r.relation.type) for r in both] == [(b.id, "causes"), (c.id, "explains")]
    assert [r.memory.id for r in hive.related(a.id, type="explains", direction="both")] == [c.id]
    assert hive.related(a.id, type="unrelated-type", direction="both") == []
    assert hive.related(b.id) == []
    assert [r.memory.id for r in hive.related(b.id, direction="in")] == [a.id]


def test_relate_again_reweights_the_edge(hive: Hive) -> None:
    a = hive.remember("ns", "a")
    b = hive.remember("ns", "b")
    hive.relate(a.id, b.id, "supports", strength=0.2)
    hive.relate(a.id, b.id, "supports", strength=0.9)
    hive.relate(a.id, b.id, "contradicts", strength=0.1)
    edges = {(r.relation.type, r.relation.strength) for r in hive.related(a.id)}
    assert edges == {("supports", 0.9), ("contradicts", 0.1)}


def test_relate_errors(hive: Hive) -> None:
    a = hive.remember("ns", "a")
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFound):
        hive.relate(a.id, unknown, "causes")
    with pytest.raises(NotFound):
        hive.relate(unknown, a.id, "causes")
    with pytest.raises(NotFound):
        hive.related(unknown)
    with pytest.raises(InvalidInput) as info:
        hive.relate(a.id, a.id, "Not A Type")
    assert info.value.field == "type"
    with pytest.raises(InvalidInput) as info:
        hive.relate(a.id, a.id, "causes", strength=1.5)
    assert info.value.field == "strength"
    with pytest.raises(InvalidInput) as info:
        hive.related(a.id, direction="sideways")
    assert info.value.field == "direction"
    assert hive.related(a.id, direction="both") == []


def test_children(hive: Hive) -> None:
    parent = hive.remember("ns", "parent")
    c1 = hive.remember("ns", "first child", parent_id=parent.id)
    c2 = hive.remember("ns/deeper", "second child", parent_id=parent.id)
    hive.remember("ns", "grandchild", parent_id=c1.id)
    hive.remember("ns", "orphan")
    assert hive.children(parent.id) == [c1, c2]
    assert ids(hive.children(c2.id)) == []
    with pytest.raises(NotFound):
        hive.children(str(uuid.uuid4()))


def test_groups(hive: Hive, clock: hivemem.ManualClock) -> None:
    group = hive.create_group("incident-42", "  Everything about the outage  ")
    assert (group.name, group.description, group.created_at) == ("incident-42", "Everything about the outage", T0)
    a = hive.remember("ns", "a")
    b = hive.remember("ns", "b")
    c = hive.remember("ns", "c")
    assert hive.group_members("incident-42") == []
    for m in (c, a, b):
        clock.advance(1)
        hive.add_to_group(m.id, "incident-42")
    hive.add_to_group(a.id, "incident-42")  # twice is harmless
    assert ids(hive.group_members("incident-42")) == [c.id, a.id, b.id]
    assert hive.group_members("incident-42")[0] == c


def test_group_members_keep_the_order_they_were_added_in(hive: Hive) -> None:
    # The clock does not move between the adds: order must still be the adding order.
    a = hive.remember("ns", "first written")
    b = hive.remember("ns", "second written")
    hive.create_group("g")
    hive.add_to_group(b.id, "g")
    hive.add_to_group(a.id, "g")
    assert ids(hive.group_members("g")) == [b.id, a.id]


def test_group_errors(hive: Hive) -> None:
    m = hive.remember("ns", "a")
    hive.create_group("g")
    with pytest.raises(InvalidInput) as info:
        hive.create_group("g", "again")
    assert info.value.field == "name"
    with pytest.raises(NotFound):
        hive.add_to_group(m.id, "no-such-group")
    with pytest.raises(NotFound):
        hive.add_to_group(str(uuid.uuid4()), "g")
    with pytest.raises(NotFound):
        hive.group_members("no-such-group")
    for bad in ("", None, "x" * 256):
        with pytest.raises(InvalidInput) as info:
            hive.create_group(bad)
        assert info.value.field == "name"
    assert hive.group_members("g") == []


@pytest.mark.parametrize("bad", ["lone \ud800 surrogate", "nul\x00byte", "x" * 256])
def test_lookups_refuse_ids_no_record_can_have(hive: Hive, bad: str) -> None:
    m = hive.remember("ns", "a", key="k")
    hive.create_group("g")
    calls: dict[str, Any] = {
        "id": [
            lambda: hive.get(bad),
            lambda: hive.history(bad),
            lambda: hive.forget(bad),
            lambda: hive.reinforce(bad),
            lambda: hive.children(bad),
            lambda: hive.related(bad),
            lambda: hive.relate(m.id, bad, "sees"),
            lambda: hive.add_to_group(bad, "g"),
        ],
        "key": [lambda: hive.get_by_key("ns", bad)],
        "group": [lambda: hive.add_to_group(m.id, bad), lambda: hive.group_members(bad)],
    }
    for field, lookups in calls.items():
        for lookup in lookups:
            with pytest.raises(InvalidInput) as info:
                lookup()
            assert info.value.field == field
    assert [x.id for x in everything(hive)] == [m.id]


@pytest.mark.parametrize("name", ["a/b", "/", ".", "..", "a/../b", "%2F", "a%b", "a?b#c", "é ü"])
def test_ids_and_group_names_are_taken_whole(hive: Hive, name: str) -> None:
    # Over HTTP these travel in URL paths, where "/" splits, dots resolve and "%" escapes.
    m = hive.remember("ns", "a member")
    hive.create_group(name)
    hive.add_to_group(m.id, name)
    assert hive.group_members(name) == [m]
    for lookup in (hive.get, hive.history, hive.forget, hive.reinforce, hive.children, hive.related):
        with pytest.raises(NotFound):
            lookup(name)
    with pytest.raises(NotFound):
        hive.add_to_group(name, name)
    assert [x.id for x in everything(hive)] == [m.id]


@pytest.mark.parametrize("bad", [3, 1.5, True, ["ns"]])
def test_text_arguments_of_reads_refuse_other_types(hive: Hive, bad: Any) -> None:
    # Over HTTP these travel in a query string, which would carry 3 as the text "3".
    m = hive.remember("ns", "x", key="k")
    calls: dict[str, Any] = {
        "namespace": [
            lambda: hive.get_by_key(bad, "k"),
            lambda: hive.stats(bad),
            lambda: hive.locks(bad),
            lambda: hive.get_conflict_strategy(bad),
        ],
        "key": [lambda: hive.get_by_key("ns", bad)],
        "type": [lambda: hive.related(m.id, type=bad)],
        "direction": [lambda: hive.related(m.id, direction=bad), lambda: hive.related(m.id, direction=None)],
    }
    for field, lookups in calls.items():
        for lookup in lookups:
            with pytest.raises(InvalidInput) as info:
                lookup()
            assert info.value.field == field
    for flag in (1, "true", None):
        with pytest.raises(InvalidInput) as info:
            hive.forget(m.id, cascade=flag)
        assert info.value.field == "cascade"
    assert everything(hive) == [m]


def test_namespaces_and_resources_utf8_cannot_carry_are_invalid_input(hive: Hive) -> None:
    lone = "team-\ud800"
    for field, call in (
        ("namespace", lambda: hive.list(lone)),
        ("namespace", lambda: hive.events(lone)),
        ("namespace", lambda: hive.remember(lone, "x")),
        ("resource", lambda: hive.lock(lone, wait=0)),
    ):
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field == field
        assert lone in info.value.details.get("value", lone)  # the detail quotes the text as given
    assert everything(hive) == []


def test_helper_text_must_be_valid_unicode(hive: Hive) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.create_group("g", "lone \ud800 surrogate")
    assert info.value.field == "description"
    with pytest.raises(InvalidInput) as info:
        hive.upsert_entity("ns", "service", "lone \ud800 surrogate")
    assert info.value.field == "name"
    assert everything(hive) == []


# --------------------------------------------------------------------------- reinforce, stats


def test_reinforce(hive: Hive, clock: hivemem.ManualClock) -> None:
    m = hive.remember("ns", "useful", importance=0.5)
    clock.advance(7)
    r = hive.reinforce(m.id)
    assert r.importance == pytest.approx(0.6)
    assert r.access_count == 1
    assert r.last_accessed_at == T0 + timedelta(seconds=7)
    assert r.version == 1
    assert r.content == m.content and r.updated_at == m.updated_at
    assert hive.get(m.id) == r
    assert hive.history(m.id) == [r]
    for _ in range(10):
        r = hive.reinforce(m.id, factor=2)
    assert r.importance == 1.0
    assert r.access_count == 11
    assert r.version == 1


def test_reinforce_from_zero_importance_grows(hive: Hive) -> None:
    m = hive.remember("ns", "ignored", importance=0.0)
    assert hive.reinforce(m.id).importance > 0


def test_reinforce_errors(hive: Hive) -> None:
    m = hive.remember("ns", "x")
    with pytest.raises(NotFound):
        hive.reinforce(str(uuid.uuid4()))
    for factor in (0, -1, float("nan"), True):
        with pytest.raises(InvalidInput) as info:
            hive.reinforce(m.id, factor=factor)
        assert info.value.field == "factor"
    assert hive.get(m.id) == m


def test_stats_by_kind_and_tier(hive: Hive) -> None:
    assert hive.stats() == {"memories": 0, "bytes": 0, "conflicts": 0, "by_kind": {}, "by_tier": {}}
    hive.remember("a", "note one")
    hive.remember("a/b", "note two", tier="long")
    hive.remember("a", "fact one", kind="fact", tier="long")
    hive.remember_episode("a/c", context="ctx", action="act", outcome="out", success=True)
    hive.remember("z", "elsewhere", kind="fact")
    stats = hive.stats()
    assert stats["memories"] == 5
    assert {k: v["memories"] for k, v in stats["by_kind"].items()} == {"note": 2, "fact": 2, "episode": 1}
    assert {k: v["memories"] for k, v in stats["by_tier"].items()} == {"short": 2, "long": 2, "mid": 1}
    assert stats["bytes"] > 0
    assert sum(v["bytes"] for v in stats["by_kind"].values()) == stats["bytes"]
    assert sum(v["bytes"] for v in stats["by_tier"].values()) == stats["bytes"]
    scoped = hive.stats("a")
    assert scoped["memories"] == 4
    assert {k: v["memories"] for k, v in scoped["by_kind"].items()} == {"note": 2, "fact": 1, "episode": 1}
    assert hive.stats("a/b")["memories"] == 1
    assert hive.stats("nothing")["memories"] == 0
    with pytest.raises(InvalidInput) as info:
        hive.stats("a//b")
    assert info.value.field == "namespace"


def test_stats_bytes_grow_with_content(hive: Hive) -> None:
    hive.remember("ns", "x")
    small = hive.stats()["bytes"]
    hive.remember("ns", "y" * 1000)
    assert hive.stats()["bytes"] >= small + 1000


# --------------------------------------------------------------------------- typed helpers


def test_remember_episode(hive: Hive) -> None:
    m = hive.remember_episode(
        "team/agent-a",
        context="Tests time out on CI",
        action="Raised the pytest timeout",
        outcome="Suite is green",
        success=True,
        lesson="Check the timeout before the code",
        tools=["pytest", "ci"],
        metrics={"minutes": 12},
        tags=["ci"],
        importance=0.7,
    )
    assert (m.kind, m.tier, m.namespace) == ("episode", "mid", "team/agent-a")
    assert m.data == {
        "context": "Tests time out on CI",
        "action": "Raised the pytest timeout",
        "outcome": "Suite is green",
        "success": True,
        "lesson": "Check the timeout before the code",
        "tools": ["pytest", "ci"],
        "metrics": {"minutes": 12},
    }
    for part in ("Tests time out on CI", "Raised the pytest timeout", "Suite is green", "Check the timeout"):
        assert part in m.content
    assert m.tags == ("ci",) and m.importance == 0.7
    assert hive.get(m.id) == m
    assert hive.remember_episode("t", context="c", action="a", outcome="o", success=False, tier="long").tier == "long"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"success": "yes"}, "success"),
        ({"success": None}, "success"),
        ({"context": " "}, "context"),
        ({"action": ""}, "action"),
        ({"outcome": None}, "outcome"),
        ({"metrics": [1]}, "metrics"),
        ({"tools": "grep"}, "tools"),
        ({"importance": 2}, "importance"),
    ],
)
def test_remember_episode_bad_input(hive: Hive, kwargs: dict[str, Any], field: str) -> None:
    args = {"context": "c", "action": "a", "outcome": "o", "success": True, **kwargs}
    with pytest.raises(InvalidInput) as info:
        hive.remember_episode("ns", **args)
    assert info.value.field == field
    assert everything(hive) == []


def test_upsert_entity_merges(hive: Hive, clock: hivemem.ManualClock) -> None:
    first = hive.upsert_entity("crm", "person", "Ada Lovelace", {"role": "analyst", "city": "London"})
    assert (first.kind, first.tier, first.version) == ("entity", "long", 1)
    assert first.data["properties"] == {"role": "analyst", "city": "London"}
    assert first.data["interactions"] == 1
    assert first.data["first_seen"] == first.data["last_updated"] == T0.isoformat()
    assert "Ada Lovelace" in first.content and "analyst" in first.content
    clock.advance(60)
    second = hive.upsert_entity("crm", "person", "  ada   LOVELACE ", {"role": "engineer", "team": "engines"})
    assert second.id == first.id
    assert second.version == 2
    assert second.data["properties"] == {"role": "engineer", "city": "London", "team": "engines"}
    assert second.data["interactions"] == 2
    assert second.data["first_seen"] == T0.isoformat()
    assert second.data["last_updated"] == (T0 + timedelta(seconds=60)).isoformat()
    assert second.data["name"] == "Ada Lovelace"
    assert "engineer" in second.content and "analyst" not in second.content
    assert hive.get(first.id) == second
    third = hive.upsert_entity("crm", "person", "ada lovelace")
    assert third.data["interactions"] == 3 and third.data["properties"] == second.data["properties"]
    other_type = hive.upsert_entity("crm", "company", "Ada Lovelace")
    other_ns = hive.upsert_entity("crm/eu", "person", "Ada Lovelace")
    assert len({first.id, other_type.id, other_ns.id}) == 3
    assert [m.version for m in hive.history(first.id)] == [1, 2, 3]
    assert ids(hive.recall("engineer", kinds="entity", k=1)) == [first.id]


def test_upsert_entity_bad_input(hive: Hive) -> None:
    for kwargs, field in (
        ({"type": "Person"}, "type"),
        ({"name": "   "}, "name"),
        ({"properties": ["x"]}, "properties"),
        ({"namespace": "a//b"}, "namespace"),
    ):
        args = {"namespace": "crm", "type": "person", "name": "Ada", "properties": None, **kwargs}
        with pytest.raises(InvalidInput) as info:
            hive.upsert_entity(**args)
        assert info.value.field == field
    assert everything(hive) == []


def test_upsert_entity_passes_remember_options(hive: Hive) -> None:
    m = hive.upsert_entity("crm", "person", "Ada", {"x": 1}, tags=["vip"], importance=0.9, agent_id="a1")
    assert m.tags == ("vip",) and m.importance == 0.9 and m.agent_id == "a1"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda h: h.remember_episode("ns", context="c", action="a", outcome="o", success=True, kind="note"), "kind"),
        (lambda h: h.remember_episode("ns", context="c", action="a", outcome="o", success=True, data={}), "data"),
        (lambda h: h.add_rule("ns", "Always pin versions", data={"x": 1}), "data"),
        (lambda h: h.add_rule("ns", "Always pin versions", kind="note"), "kind"),
        (lambda h: h.upsert_entity("crm", "person", "Ada", key="k"), "key"),
        (lambda h: h.upsert_entity("crm", "person", "Ada", data={}), "data"),
    ],
    ids=["episode-kind", "episode-data", "rule-data", "rule-kind", "entity-key", "entity-data"],
)
def test_typed_helpers_refuse_their_own_fields_as_options(hive: Hive, call: Any, field: str) -> None:
    # An option the helper sets itself must be refused as InvalidInput naming it, not a Python TypeError.
    with pytest.raises(InvalidInput) as info:
        call(hive)
    assert info.value.field == field
    assert everything(hive) == []


def test_upsert_entity_tier_option(hive: Hive) -> None:
    # tier is a remember() option that remember_episode and add_rule only default; upsert_entity
    # must honour it too, or at least refuse it as InvalidInput, never fail with a TypeError.
    try:
        m = hive.upsert_entity("crm", "person", "Ada", tier="mid")
    except InvalidInput as exc:
        assert exc.field == "tier"
        assert everything(hive) == []
    else:
        assert m.tier == "mid"


def test_add_rule(hive: Hive) -> None:
    source = hive.remember_episode("team", context="c", action="a", outcome="o", success=False)
    rule = hive.add_rule(
        "team", "Never deploy on Fridays", rule_type="constraint", confidence=0.8, source_memory_id=source.id
    )
    assert (rule.kind, rule.tier, rule.importance) == ("rule", "long", 0.8)
    assert rule.data == {"rule_type": "constraint", "confidence": 0.8, "source_memory_id": source.id}
    assert rule.parent_id == source.id
    assert hive.children(source.id) == [rule]
    plain = hive.add_rule("team", "Prefer small PRs", importance=0.2, tier="mid")
    assert plain.data == {"rule_type": "guideline", "confidence": 0.5, "source_memory_id": None}
    assert (plain.importance, plain.tier, plain.parent_id) == (0.2, "mid", None)
    assert ids(hive.recall("deploy fridays", kinds="rule", k=1)) == [rule.id]


def test_add_rule_bad_input(hive: Hive) -> None:
    for kwargs, field in (
        ({"confidence": 1.5}, "confidence"),
        ({"rule_type": "Bad Type"}, "rule_type"),
        ({"source_memory_id": ""}, "source_memory_id"),
        ({"text": ""}, ("text", "content")),
    ):
        args = {"namespace": "ns", "text": "a rule", **kwargs}
        with pytest.raises(InvalidInput) as info:
            hive.add_rule(**args)
        assert info.value.field in (field if isinstance(field, tuple) else (field,))
    assert everything(hive) == []


# --------------------------------------------------------------------------- list and pagination


def _fill_for_listing(hive: Hive, clock: hivemem.ManualClock) -> list[Memory]:
    made = []
    for i in range(23):
        clock.advance(i % 3)  # some equal created_at values, so ties are broken by id
        occurred = T0 + timedelta(seconds=(i * 7) % 11) if i % 2 else None
        made.append(
            hive.remember(
                "list/" + ("x" if i % 4 else "y"),
                f"memory number {i}",
                importance=(i % 5) / 4,
                occurred_at=occurred,
                kind="fact" if i % 3 == 0 else "note",
            )
        )
    for m in made[::5]:
        clock.advance(1)
        hive.update(m.id, importance=m.importance)  # moves updated_at
    return [hive.get(m.id) for m in made]


def _sort_key(order_by: str) -> Any:
    def key(m: Memory) -> tuple[Any, str]:
        if order_by == "importance":
            return (m.importance, m.id)
        if order_by == "occurred_at":
            return ((m.occurred_at or m.created_at).timestamp(), m.id)
        return (getattr(m, order_by).timestamp(), m.id)

    return key


@pytest.mark.parametrize("order_by", ["created_at", "updated_at", "occurred_at", "importance"])
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_list_order_and_pagination(hive: Hive, clock: hivemem.ManualClock, order_by: str, descending: bool) -> None:
    made = _fill_for_listing(hive, clock)
    expected = sorted(made, key=_sort_key(order_by), reverse=descending)
    full = hive.list(order_by=order_by, descending=descending, limit=1000)
    assert list(full.items) == expected
    assert full.next_cursor is None
    for size in (1, 4, 23):
        pages: list[Memory] = []
        cursor = None
        count = 0
        while True:
            page = hive.list(order_by=order_by, descending=descending, limit=size, cursor=cursor)
            assert 0 < len(page) <= size
            pages += page.items
            count += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == expected
        assert count == math.ceil(23 / size)


def test_list_filters(hive: Hive, clock: hivemem.ManualClock) -> None:
    made = _fill_for_listing(hive, clock)
    assert ids(hive.list("list/y", limit=1000)) == [m.id for m in made if m.namespace == "list/y"]
    assert ids(hive.list("list", kinds="fact", limit=1000)) == [m.id for m in made if m.kind == "fact"]
    assert ids(hive.list(where={"nothing": {"$ne": None}}, limit=1000)) == []
    tagged = hive.remember("list/z", "tagged", tags=["t"], agent_id="ag", session_id="se", tier="mid")
    assert ids(hive.list(tags=["t"])) == [tagged.id]
    assert ids(hive.list(agent_id="ag")) == [tagged.id]
    assert ids(hive.list(session_id="se")) == [tagged.id]
    assert ids(hive.list(tiers=["mid"])) == [tagged.id]
    assert len(hive.list("lis")) == 0


def test_list_pages_with_writes_in_between_never_repeat(hive: Hive, clock: hivemem.ManualClock) -> None:
    original = [hive.remember("ns", f"m{i}") for i in range(10)]
    seen: list[str] = []
    cursor = None
    while True:
        page = hive.list("ns", limit=3, cursor=cursor)
        seen += ids(page)
        hive.remember("ns", "written between pages")
        clock.advance(1)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in {m.id for m in original}] == [m.id for m in original]


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        base64.urlsafe_b64encode(b'{"not": "a list"}').decode(),
        base64.urlsafe_b64encode(json.dumps(["created_at:False", 1.0]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["created_at:False", {"x": 1}, "id"]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["created_at:False", 1.0, 7]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["created_at:False", 2**70, "id"]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["created_at:False", "\ud800", "id"]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["created_at:False", 1.0, "\ud800"]).encode()).decode(),
    ],
)
def test_list_bad_cursor(hive: Hive, cursor: str) -> None:
    hive.remember("ns", "a")
    with pytest.raises(InvalidInput) as info:
        hive.list(cursor=cursor)
    assert info.value.field == "cursor"


def test_list_cursor_from_another_listing_is_refused(hive: Hive) -> None:
    for i in range(3):
        hive.remember("ns", f"m{i}")
    cursor = hive.list(limit=1).next_cursor
    assert cursor is not None
    assert len(hive.list(limit=1, cursor=cursor)) == 1
    for kwargs in ({"order_by": "importance"}, {"descending": True}):
        with pytest.raises(InvalidInput) as info:
            hive.list(limit=1, cursor=cursor, **kwargs)
        assert info.value.field == "cursor"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"order_by": "id"}, "order_by"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"namespace": "/a"}, "namespace"),
        ({"kinds": "BAD"}, "kinds"),
        ({"kinds": 5}, "kinds"),
        ({"tiers": False}, "tiers"),
        ({"tags": {"a": 1}}, "tags"),  # a mapping is not a list of tags
        ({"descending": {}}, "descending"),
        ({"descending": "yes"}, "descending"),
        ({"where": {"x": {"$nin": [1]}}}, "where"),
        ({"where": {"x": 2**70}}, "where"),  # beyond what a store can compare with
        ({"where": {"x": {"$in": ["ok", "\ud800"]}}}, "where"),
    ],
)
def test_list_bad_input(hive: Hive, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.list(**kwargs)
    assert info.value.field == field


# --------------------------------------------------------------------------- bad input writes nothing

NAIVE = datetime(2024, 1, 1, 12, 0)  # naive on purpose

BAD_REMEMBER = [
    ({"namespace": ""}, "namespace"),
    ({"namespace": "a//b"}, "namespace"),
    ({"namespace": "/a"}, "namespace"),
    ({"namespace": "a/"}, "namespace"),
    ({"namespace": "/".join("abcdefghi")}, "namespace"),
    ({"namespace": "a b"}, "namespace"),
    ({"namespace": "a/-b"}, "namespace"),
    ({"namespace": "a/b?"}, "namespace"),
    ({"namespace": "ünïcode"}, "namespace"),
    ({"namespace": "x" * 256}, "namespace"),
    ({"namespace": None}, "namespace"),
    ({"namespace": 7}, "namespace"),
    ({"kind": "Fact"}, "kind"),
    ({"kind": "1st"}, "kind"),
    ({"kind": ""}, "kind"),
    ({"kind": "k" * 33}, "kind"),
    ({"kind": None}, "kind"),
    ({"tier": "medium"}, "tier"),
    ({"tier": None}, "tier"),
    ({"importance": 1.01}, "importance"),
    ({"importance": -0.01}, "importance"),
    ({"importance": float("nan")}, "importance"),
    ({"importance": float("inf")}, "importance"),
    ({"importance": True}, "importance"),
    ({"importance": "0.5"}, "importance"),
    ({"content": ""}, "content"),
    ({"content": " \n\t "}, "content"),
    ({"content": None}, "content"),
    ({"content": b"bytes"}, "content"),
    ({"content": "nul\x00byte"}, "content"),
    ({"occurred_at": NAIVE}, "occurred_at"),
    ({"occurred_at": "2024-01-01T00:00:00Z"}, "occurred_at"),
    ({"expires_at": NAIVE}, "expires_at"),
    ({"occurred_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))}, "occurred_at"),  # before year 1 in UTC
    ({"expires_at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))}, "expires_at"),  # after 9999
    ({"ttl": 0}, "ttl"),
    ({"ttl": -5}, "ttl"),
    ({"ttl": "60"}, "ttl"),
    ({"ttl": timedelta(0)}, "ttl"),
    ({"key": ""}, "key"),
    ({"key": 5}, "key"),
    ({"key": "k" * 256}, "key"),
    ({"tags": "one-tag"}, "tags"),
    ({"tags": [""]}, "tags"),
    ({"tags": [1]}, "tags"),
    ({"tags": [f"t{i}" for i in range(33)]}, "tags"),
    ({"tags": {"a": 1}}, "tags"),
    ({"data": [1, 2]}, "data"),
    ({"data": "text"}, "data"),
    ({"data": {1: "int key"}}, "data"),
    ({"data": {"x": float("nan")}}, "data"),
    ({"data": {"x": {1, 2}}}, "data"),
    ({"data": {"at": datetime(2024, 1, 1, tzinfo=UTC)}}, "data"),  # not JSON, not even over HTTP
    ({"data": {"wait": timedelta(seconds=3)}}, "data"),
    ({"sensitive": "yes"}, "sensitive"),
    ({"agent_id": ""}, "agent_id"),
    ({"session_id": 3}, "session_id"),
    ({"parent_id": ""}, "parent_id"),
    ({"content": "lone surrogate \ud800"}, "content"),  # not encodable as UTF-8
    ({"key": "\udcff"}, "key"),
    ({"agent_id": "agent-\ud800"}, "agent_id"),
    ({"ttl": 1e12}, "ttl"),  # expiry past year 9999
    ({"colour": "blue"}, "colour"),
    ({"namespaces": "typo"}, "namespaces"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_REMEMBER, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_REMEMBER)])
def test_remember_bad_input_writes_nothing(
    hive: Hive, embedder: HashEmbedder, kwargs: dict[str, Any], field: str
) -> None:
    hive.remember("ns", "already there", key="k")
    before = state(hive)
    embedded = len(embedder.texts_embedded)
    args = {"namespace": "ns", "content": "new content", **kwargs}
    with pytest.raises(InvalidInput) as info:
        hive.remember(args.pop("namespace"), args.pop("content"), **args)
    assert info.value.field == field
    assert info.value.details["field"] == field
    assert info.value.to_dict()["code"] == "invalid_input"
    assert state(hive) == before
    assert len(embedder.texts_embedded) == embedded


def test_remember_deep_data_is_refused(hive: Hive) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(20):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidInput) as info:
        hive.remember("ns", "deep", data=deep)
    assert info.value.field == "data"
    assert everything(hive) == []


def test_namespace_limits_that_are_allowed(hive: Hive) -> None:
    deepest = "/".join("abcdefgh")
    assert hive.remember(deepest, "eight segments").namespace == deepest
    odd = "_a/b.c/d:e/f@g/h-i/0"
    assert hive.remember(odd, "odd characters").namespace == odd
    assert ids(hive.list("_a/b.c")) == [hive.list(odd).items[0].id]


def test_oversized_content_is_payload_too_large(open_hive: OpenHive) -> None:
    hive = open_hive("small", max_content_bytes=100)
    assert hive.remember("ns", "x" * 100).content == "x" * 100
    before = state(hive)
    with pytest.raises(PayloadTooLarge) as info:
        hive.remember("ns", "x" * 101)
    assert info.value.details["field"] == "content"
    assert info.value.details["limit"] == 100
    with pytest.raises(PayloadTooLarge):
        hive.remember("ns", "é" * 51)  # 102 UTF-8 bytes in 51 characters
    assert state(hive) == before


def test_oversized_data_is_payload_too_large(open_hive: OpenHive) -> None:
    hive = open_hive("small-data", max_data_bytes=50)
    with pytest.raises(PayloadTooLarge) as info:
        hive.remember("ns", "content", data={"blob": "x" * 100})
    assert info.value.details["field"] == "data"
    assert everything(hive) == []


def test_remember_many(hive: Hive, clock: hivemem.ManualClock) -> None:
    made = hive.remember_many(
        [
            {"namespace": "ns", "content": "first", "kind": "fact"},
            {"namespace": "ns/b", "content": "second", "key": "k", "importance": 0.9},
            {"namespace": "ns", "content": "third", "tags": ["t"]},
        ]
    )
    assert [m.content for m in made] == ["first", "second", "third"]
    assert [m.id for m in made] == sorted(m.id for m in made)
    assert made[0].kind == "fact" and made[1].key == "k" and made[2].tags == ("t",)
    assert all(m.created_at == T0 and m.version == 1 for m in made)
    assert [hive.get(m.id) for m in made] == made
    clock.advance(1)
    again = hive.remember_many([{"namespace": "ns/b", "content": "second v2", "key": "k"}])
    assert again[0].id == made[1].id and again[0].version == 2
    assert hive.remember_many([]) == []


def test_a_batch_that_rewrites_its_own_rows_keeps_keyword_search_exact(hive: Hive, clock: hivemem.ManualClock) -> None:
    made = hive.remember_many(
        [
            {"namespace": "ns", "content": "alpha apples", "key": "k"},
            {"namespace": "ns", "content": "beta bananas", "key": "k"},
            {"namespace": "ns", "content": "gamma grapes", "key": "short-lived", "ttl": 1},
        ]
    )
    assert made[1].id == made[0].id and made[1].version == 2
    clock.advance(2)
    # The expired keyed memory is deleted and a new one inserted, in one transaction.
    hive.remember_many([{"namespace": "ns", "content": "delta dates", "key": "short-lived"}])

    def keyword_hits(query: str) -> list[str]:
        return [h.memory.content for h in hive.recall(query, namespace="ns") if h.scores["keyword"] > 0]

    assert keyword_hits("apples") == []
    assert keyword_hits("bananas") == ["beta bananas"]
    assert keyword_hits("grapes") == []
    assert keyword_hits("dates") == ["delta dates"]


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        ({"namespace": "ns", "content": "x", "importance": 7}, "items[1].importance"),
        ({"namespace": "ns//x", "content": "x"}, "items[1].namespace"),
        ({"namespace": "ns"}, "items[1].content"),
        ({"content": "no namespace"}, "items[1].namespace"),
        ({"namespace": "ns", "content": "x", "wat": 1}, "items[1].wat"),
        ({"namespace": "ns", "content": "x", "kind": "BAD"}, "items[1].kind"),
        ("not a dict", "items[1]"),
        (["namespace", "ns"], "items[1]"),
    ],
)
def test_remember_many_with_one_bad_item_writes_nothing(
    hive: Hive, embedder: HashEmbedder, bad_item: Any, field: str
) -> None:
    hive.remember("ns", "already there")
    before = state(hive)
    embedded = len(embedder.texts_embedded)
    items = [{"namespace": "ns", "content": "good one"}, bad_item, {"namespace": "ns", "content": "good two"}]
    with pytest.raises(InvalidInput) as info:
        hive.remember_many(items)
    assert info.value.field == field
    assert state(hive) == before
    assert len(embedder.texts_embedded) == embedded


@pytest.mark.parametrize("items", [5, None, "ab", {"namespace": "ns", "content": "x"}])
def test_remember_many_needs_a_list_of_items(hive: Hive, items: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.remember_many(items)
    assert info.value.field == "items"
    assert everything(hive) == []


def test_remember_many_oversized_item_names_the_item(open_hive: OpenHive) -> None:
    hive = open_hive("small", max_content_bytes=100)
    items = [{"namespace": "ns", "content": "fine"}, {"namespace": "ns", "content": "x" * 101}]
    with pytest.raises(PayloadTooLarge) as info:
        hive.remember_many(items)
    assert info.value.details["field"] == "items[1].content"
    assert everything(hive) == []


def test_remember_many_over_the_batch_limit(open_hive: OpenHive) -> None:
    hive = open_hive("batch", max_batch=3)
    items = [{"namespace": "ns", "content": f"item {i}"} for i in range(4)]
    with pytest.raises(PayloadTooLarge) as info:
        hive.remember_many(items)
    assert info.value.details["field"] == "items"
    assert everything(hive) == []
    assert len(hive.remember_many(items[:3])) == 3


def test_errors_render_to_one_shape(hive: Hive) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.remember("ns", "x", importance=3)
    payload = info.value.to_dict()
    assert payload["code"] == "invalid_input" and payload["status"] == 422
    assert payload["details"]["field"] == "importance"
    rebuilt = hivemem.HiveError.from_dict(payload)
    assert isinstance(rebuilt, InvalidInput) and rebuilt.field == "importance"
    with pytest.raises(NotFound) as missing:
        hive.get(str(uuid.uuid4()))
    assert missing.value.to_dict()["status"] == 404


# --------------------------------------------------------------------------- export and import


def exported(**changes: Any) -> Memory:
    """A record as an export gives it, with ``changes``."""
    record = {"id": "imported-1", "namespace": "ns", "content": "imported", "created_at": T0, "updated_at": T0}
    return Memory(**{**record, **changes})


def test_import_stores_the_record_as_it_was(hive: Hive) -> None:
    record = exported(version=3, access_count=2, sensitive=True, last_accessed_at=T0, tags=("a",))
    assert hive.import_memories([record]) == 1
    stored = hive.get("imported-1")
    assert stored.to_dict() == {**record.to_dict(), "content_hash": stored.content_hash}
    assert stored.content_hash == hashlib.sha256(b"imported").hexdigest()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"version": "2"}, "version"),
        ({"version": 0}, "version"),
        ({"version": 2**70}, "version"),  # more than a store's integer holds
        ({"access_count": -1}, "access_count"),
        ({"access_count": True}, "access_count"),
        ({"sensitive": "yes"}, "sensitive"),
        ({"created_at": NAIVE}, "created_at"),
        ({"last_accessed_at": NAIVE}, "last_accessed_at"),
        ({"updated_at": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "nul\x00byte"}, "id"),
    ],
)
def test_import_refuses_a_malformed_record_and_writes_nothing(hive: Hive, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        hive.import_memories([exported(id="fine-1"), exported(**changes)])
    assert info.value.field == field
    assert everything(hive) == []


def test_export_refuses_a_bad_namespace_when_called(hive: Hive) -> None:
    hive.remember("ns", "a")
    with pytest.raises(InvalidInput) as info:
        hive.export("a//b")  # not iterated: the call itself checks
    assert info.value.field == "namespace"


# --------------------------------------------------------------------------- durability and configuration


@pytest.mark.requires("durable")
def test_data_survives_close_and_reopen(
    open_hive: OpenHive, clock: hivemem.ManualClock, embedder: HashEmbedder
) -> None:
    hive = open_hive()
    a = hive.remember("ns", "durable note about tomatoes", key="k", data={"x": 1})
    clock.advance(3)
    a2 = hive.update(a.id, content="durable note about potatoes")
    b = hive.remember("ns/child", "child memory", parent_id=a.id)
    hive.relate(a.id, b.id, "parent-of")
    hive.create_group("g", "a group")
    hive.add_to_group(b.id, "g")
    hive.close()

    reopened = open_hive()
    assert reopened.get(a.id) == a2
    assert reopened.get_by_key("ns", "k") == a2
    assert reopened.history(a.id) == [a, a2]
    assert reopened.children(a.id) == [b]
    assert [r.memory.id for r in reopened.related(a.id)] == [b.id]
    assert reopened.group_members("g") == [b]
    embedded = len(embedder.texts_embedded)
    hits = reopened.recall("potatoes", k=1)
    assert ids(hits) == [a.id]
    assert hits[0].scores["vector"] > 0
    reopened.remember("ns", "durable note about potatoes")  # the stored vector is reused
    assert embedder.texts_embedded[embedded:] == ["potatoes"]


@pytest.mark.requires("durable")
def test_reopen_with_another_embedder_is_a_config_error(open_hive: OpenHive) -> None:
    hive = open_hive()
    hive.remember("ns", "made with hash-test")
    hive.close()
    with pytest.raises(ConfigError):
        open_hive(embedder=HashEmbedder(name="another-model"))
    with pytest.raises(ConfigError):
        open_hive(embedder=HashEmbedder(dim=32))
    keyword_only = open_hive(embedder=None)  # keyword-only recall needs no vectors
    assert [h.memory.content for h in keyword_only.recall("made", k=5)] == ["made with hash-test"]
    keyword_only.close()
    same = open_hive()
    assert len(same.recall("hash", k=5)) == 1


def test_unknown_open_option_is_a_config_error(open_hive: OpenHive) -> None:
    with pytest.raises(ConfigError):
        open_hive("bad", no_such_option=1)


def test_closed_hive_refuses_work(open_hive: OpenHive) -> None:
    hive = open_hive("closing")
    hive.remember("ns", "x")
    hive.close()
    with pytest.raises(hivemem.StorageUnavailable):
        hive.remember("ns", "y")


def test_context_manager_closes(open_hive: OpenHive) -> None:
    with open_hive("ctx") as hive:
        hive.remember("ns", "inside")
    with pytest.raises(hivemem.StorageUnavailable):
        hive.list()


# --------------------------------------------------------------------------- data filters: type strictness


def test_where_range_does_not_match_values_of_another_type(hive: Hive) -> None:
    number = hive.remember("ns", "typed data", data={"x": 7})
    hive.remember("ns", "typed data", data={"x": "seven"})
    hive.remember("ns", "typed data", data={"x": True})
    hive.remember("ns", "typed data", data={"x": [1, 2]})
    # Comparing a number with a string, a boolean or a list is not "greater than".
    assert ids(hive.list(where={"x": {"$gt": 5}})) == [number.id]
    assert ids(hive.list(where={"x": {"$gte": 0}})) == [number.id]
    assert ids(hive.list(where={"x": {"$lt": "zzz"}})) == [hive.list(where={"x": "seven"}).items[0].id]


def test_where_equality_distinguishes_booleans_from_numbers(hive: Hive) -> None:
    flag = hive.remember("ns", "typed data", data={"x": True})
    one = hive.remember("ns", "typed data", data={"x": 1})
    assert ids(hive.list(where={"x": True})) == [flag.id]
    assert ids(hive.list(where={"x": 1})) == [one.id]
    assert ids(hive.list(where={"x": {"$in": [1]}})) == [one.id]


@pytest.mark.requires("store")
def test_rank_facts_read_by_the_store_match_the_memories(hive: Hive, clock: hivemem.ManualClock) -> None:
    event = datetime.fromtimestamp(START - 3600, tz=UTC)
    made = [
        hive.remember_episode("ns", context="c", action="a", outcome="o", success=True, importance=0.9),
        hive.remember_episode("ns", context="c", action="a", outcome="o", success=False, occurred_at=event),
        hive.remember("ns", "an episode whose success is not a bool", kind="episode", data={"success": 1}),
        hive.remember("ns", "a note that says success", data={"success": True}),
        hive.remember("other", "outside the filter"),
    ]
    ids = [m.id for m in made]
    flt = MemoryFilter(now=clock.now(), namespace="ns")
    read = hive.store.read(lambda tx: tx.rank_facts(ids, flt))
    assert read == {m.id: RankFacts.of(m) for m in made[:4]}
    assert [read[i].success for i in ids[:4]] == [True, False, None, None]
    assert read[ids[1]].when == START - 3600


def test_keyword_search_finds_filtered_matches_below_better_unfiltered_ones(hive: Hive) -> None:
    # More strong matches outside the namespace than recall's candidate list holds.
    hive.remember_many([{"namespace": "b", "content": f"apple apple apple pie {i}"} for i in range(150)])
    weaker = hive.remember_many([{"namespace": "a", "content": f"one apple in crate {i}"} for i in range(20)])
    hits = hive.recall("apple", namespace="a", k=10)
    assert len(hits) == 10
    assert {h.memory.namespace for h in hits} == {"a"}
    assert all(h.scores["keyword"] > 0 for h in hits)
    assert {h.memory.id for h in hits} <= {m.id for m in weaker}
    assert {h.memory.namespace for h in hive.recall("apple", k=10)} == {"b"}
