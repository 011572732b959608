"""The contract of versioned updates that meet a newer version: strategies, defaults, records.

Part of the contract suite: every test runs on every deployment of
``conftest.DEPLOYMENTS`` (functions as strategies are refused over HTTP, and
the tests say so). Grants are in tests/test_access.py and tests/test_server.py,
many writers at once in tests/test_concurrency.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta
from typing import Any

import pytest

import hivemem
from conftest import OpenHive
from fakes import HashEmbedder
from hivemem import Conflict, Hive, InvalidInput, Memory, NotFound, VersionConflict
from hivemem.access import Principal
from test_contract import T0, state


def _diverged(hive: Hive, clock: hivemem.ManualClock) -> tuple[Memory, Memory]:
    """A memory at version 2 changed by "them" since version 1 was read: (base, theirs)."""
    base = hive.remember(
        "team/a",
        "the deploy checklist",
        data={"steps": 3, "owner": {"name": "ada", "team": "ops"}, "flags": [1, 2]},
        tags=["ops", "deploy"],
        importance=0.5,
        tier="mid",
    )
    clock.advance(1)
    theirs = hive.update(
        base.id,
        data={"steps": 4, "owner": {"name": "ada", "team": "ops", "pager": "x1"}, "flags": [1, 2]},
        tags=["ops", "deploy", "urgent"],
        importance=0.4,
    )
    clock.advance(1)
    return base, theirs


def _record(hive: Hive, memory_id: str) -> Conflict:
    (conflict,) = hive.conflicts(memory_id)
    return conflict


def _refuses_functions(deployment: str) -> bool:
    return deployment == "http"


# --------------------------------------------------------------------------- strategies


def test_reject_is_the_default_and_writes_nothing(hive: Hive, clock: hivemem.ManualClock) -> None:
    base, theirs = _diverged(hive, clock)
    before = state(hive)
    for strategy in (None, "reject"):
        with pytest.raises(VersionConflict) as info:
            hive.update(base.id, content="mine", expected_version=1, on_conflict=strategy)
        assert info.value.current_version == 2
        assert info.value.details["current"] == theirs.to_dict()
    assert state(hive) == before
    assert hive.conflicts(base.id) == []
    assert hive.stats()["conflicts"] == 0


def test_an_update_without_a_conflict_records_none(hive: Hive) -> None:
    m = hive.remember("team/a", "fresh", data={"n": 0})
    updated = hive.update(m.id, data={"n": 1}, expected_version=1, on_conflict="merge")
    assert (updated.version, updated.data) == (2, {"n": 1})
    assert hive.conflicts(m.id) == []


def test_last_writer_wins_writes_the_given_fields_over_theirs(hive: Hive, clock: hivemem.ManualClock) -> None:
    base, theirs = _diverged(hive, clock)
    result = hive.update(
        base.id, content="my checklist", data={"steps": 9}, expected_version=1, on_conflict="last_writer_wins"
    )
    assert result == dataclasses.replace(
        theirs,
        content="my checklist",
        content_hash=hashlib.sha256(b"my checklist").hexdigest(),
        data={"steps": 9},
        version=3,
        updated_at=T0 + timedelta(seconds=2),
    )
    assert hive.get(base.id) == result
    conflict = _record(hive, base.id)
    assert (conflict.strategy, conflict.base, conflict.theirs, conflict.result_version) == (
        "last_writer_wins",
        base,
        theirs,
        3,
    )
    assert conflict.ours == dataclasses.replace(
        base,
        content="my checklist",
        content_hash=result.content_hash,
        data={"steps": 9},
        version=2,
        updated_at=T0 + timedelta(seconds=2),
    )
    assert (conflict.memory_id, conflict.namespace, conflict.created_at) == (base.id, "team/a", result.updated_at)
    assert conflict.principal == "local"  # the embedded Hive, and a server without auth, act as "local"
    assert hive.history(base.id) == [base, theirs, result]


def test_merge_combines_both_sides_field_by_field(hive: Hive, clock: hivemem.ManualClock) -> None:
    base, theirs = _diverged(hive, clock)
    result = hive.update(
        base.id,
        data={"steps": 3, "owner": {"name": "grace", "team": "ops"}, "flags": [3], "new": True},
        tags=["deploy", "mine"],
        importance=0.2,
        tier="long",
        expected_version=1,
        on_conflict="merge",
    )
    assert result == dataclasses.replace(
        theirs,
        # steps: only theirs changed it; owner: each side changed another key; flags: ours, a list is one value.
        data={"steps": 4, "owner": {"name": "grace", "team": "ops", "pager": "x1"}, "flags": [3], "new": True},
        # ours removed "ops" and added "mine", theirs added "urgent".
        tags=("deploy", "urgent", "mine"),
        importance=0.4,  # both changed it: the higher
        tier="long",  # only ours changed it
        version=3,
        updated_at=T0 + timedelta(seconds=2),
    )
    conflict = _record(hive, base.id)
    assert (conflict.strategy, conflict.base.version, conflict.ours.version, conflict.theirs) == ("merge", 1, 2, theirs)
    assert conflict.ours.tags == ("deploy", "mine")
    assert hive.history(base.id) == [base, theirs, result]


def test_merge_takes_ours_where_both_changed_the_same_thing(hive: Hive) -> None:
    base = hive.remember("ns", "first words", data={"n": 1, "gone": 1, "kept": 1}, tier="short")
    hive.update(base.id, content="their words", data={"n": 2, "kept": 1, "theirs": 1}, tier="mid")
    result = hive.update(
        base.id,
        content="our words",
        data={"n": 3, "gone": 1, "kept": 2},
        tier="long",
        expected_version=1,
        on_conflict="merge",
    )
    assert result.content == "our words"
    assert result.content_hash == hashlib.sha256(b"our words").hexdigest()
    assert result.tier == "long"
    # n: both changed (ours); gone: theirs removed it; kept: only ours changed it; theirs: added by theirs.
    assert result.data == {"n": 3, "kept": 2, "theirs": 1}
    assert [h.memory.id for h in hive.recall("our words", k=1)] == [base.id]


def test_merge_keeps_their_content_when_ours_did_not_change_it(hive: Hive) -> None:
    base = hive.remember("ns", "first words", data={"n": 1})
    theirs = hive.update(base.id, content="their words")
    result = hive.update(base.id, data={"n": 2}, expected_version=1, on_conflict="merge")
    assert (result.content, result.content_hash, result.data) == ("their words", theirs.content_hash, {"n": 2})


def test_merge_tells_true_from_one(hive: Hive) -> None:
    base = hive.remember("ns", "flags", data={"on": 1})
    hive.update(base.id, data={"on": 1, "other": 1})
    result = hive.update(base.id, data={"on": True}, expected_version=1, on_conflict="merge")
    assert result.data == {"on": True, "other": 1}


def test_a_merge_over_the_tag_limit_is_refused_and_writes_nothing(hive: Hive) -> None:
    base = hive.remember("ns", "tagged")
    hive.update(base.id, tags=[f"theirs-{i}" for i in range(20)])
    before = state(hive)
    with pytest.raises(InvalidInput) as info:
        hive.update(base.id, tags=[f"ours-{i}" for i in range(20)], expected_version=1, on_conflict="merge")
    assert info.value.field == "on_conflict.tags"
    assert state(hive) == before


def _add_counts(base: Memory, ours: Memory, theirs: Memory) -> dict[str, Any]:
    """A counter's merge: theirs plus what ours added to the base."""
    return {"data": {**theirs.data, "n": theirs.data["n"] + ours.data["n"] - base.data["n"]}}


def test_a_function_resolves_with_the_fields_it_returns(hive: Hive, deployment: str) -> None:
    base = hive.remember("ns", "counter", data={"n": 10, "label": "hits"}, tags=["t"])
    theirs = hive.update(base.id, data={"n": 15, "label": "hits"})
    if _refuses_functions(deployment):
        before = state(hive)
        with pytest.raises(InvalidInput, match="over HTTP") as info:
            hive.update(base.id, data={"n": 11}, expected_version=1, on_conflict=_add_counts)
        assert info.value.field == "on_conflict"
        assert state(hive) == before
        return
    result = hive.update(base.id, data={"n": 11, "label": "hits"}, expected_version=1, on_conflict=_add_counts)
    assert result.data == {"n": 16, "label": "hits"}
    assert (result.content, result.tags, result.version) == (theirs.content, theirs.tags, 3)
    assert _record(hive, base.id).strategy == "custom"


def test_a_function_may_return_a_memory_and_its_new_text_is_embedded(
    hive: Hive, deployment: str, embedder: HashEmbedder
) -> None:
    if _refuses_functions(deployment):
        pytest.skip("functions are refused over HTTP (test_a_function_resolves_with_the_fields_it_returns)")
    base = hive.remember("ns", "alpha notes", tags=["a"])
    hive.update(base.id, content="beta notes")

    def both_texts(base: Memory, ours: Memory, theirs: Memory) -> Memory:
        return dataclasses.replace(theirs, content=f"{theirs.content} and {ours.content}", id="ignored", version=99)

    result = hive.update(base.id, content="gamma notes", expected_version=1, on_conflict=both_texts)
    assert (result.id, result.version, result.content) == (base.id, 3, "beta notes and gamma notes")
    assert result.content_hash == hashlib.sha256(b"beta notes and gamma notes").hexdigest()
    assert "beta notes and gamma notes" in embedder.texts_embedded
    hit = hive.recall("beta notes and gamma notes", k=1)[0]
    assert hit.memory == result
    assert hit.scores["vector"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("returned", "field"),
    [
        (None, "on_conflict"),
        ({"namespace": "elsewhere"}, "on_conflict.namespace"),
        ({"importance": 3}, "on_conflict.importance"),
        ({"content": ""}, "on_conflict.content"),
    ],
)
def test_a_function_returning_something_bad_writes_nothing(
    hive: Hive, deployment: str, returned: Any, field: str
) -> None:
    if _refuses_functions(deployment):
        pytest.skip("functions are refused over HTTP (test_a_function_resolves_with_the_fields_it_returns)")
    base = hive.remember("ns", "x")
    hive.update(base.id, content="y")
    before = state(hive)
    with pytest.raises(InvalidInput) as info:
        hive.update(base.id, content="z", expected_version=1, on_conflict=lambda b, o, t: returned)
    assert info.value.field == field
    assert state(hive) == before


def test_a_version_that_is_not_in_history_cannot_be_merged(hive: Hive) -> None:
    m = hive.remember("ns", "x")
    hive.update(m.id, content="y")
    before = state(hive)
    for expected in (3, 7):  # ahead of the stored version: nothing to merge from
        with pytest.raises(VersionConflict) as info:
            hive.update(m.id, content="z", expected_version=expected, on_conflict="last_writer_wins")
        assert info.value.details["expected_version"] == expected
    assert state(hive) == before


@pytest.mark.parametrize("strategy", ["", "Merge", "theirs", 3, ["merge"], {"name": "merge"}])
def test_an_unknown_strategy_is_refused_even_without_a_conflict(hive: Hive, strategy: Any) -> None:
    m = hive.remember("ns", "x")
    before = state(hive)
    with pytest.raises(InvalidInput) as info:
        hive.update(m.id, content="y", expected_version=1, on_conflict=strategy)
    assert info.value.field == "on_conflict"
    with pytest.raises(InvalidInput) as info:
        hive.set_conflict_strategy("ns", strategy)
    assert info.value.field == "strategy"
    assert state(hive) == before
    assert hive.get_conflict_strategy("ns") == "reject"


# --------------------------------------------------------------------------- defaults by prefix


def test_the_longest_prefix_with_a_default_applies(hive: Hive) -> None:
    assert hive.get_conflict_strategy("team/a/x") == "reject"
    hive.set_conflict_strategy("team", "last_writer_wins")
    hive.set_conflict_strategy("team/a/", "merge")  # a trailing slash names the same prefix
    assert hive.get_conflict_strategy("team/a") == "merge"
    assert hive.get_conflict_strategy("team/a/x/y") == "merge"
    assert hive.get_conflict_strategy("team/ab") == "last_writer_wins"  # prefixes are segment-wise
    assert hive.get_conflict_strategy("team") == "last_writer_wins"
    assert hive.get_conflict_strategy("teams") == "reject"
    hive.set_conflict_strategy("team/a", "reject")
    assert hive.get_conflict_strategy("team/a/x") == "reject"
    hive.set_conflict_strategy("team/a", None)
    assert hive.get_conflict_strategy("team/a/x") == "last_writer_wins"


def test_an_update_uses_its_namespace_default_unless_it_names_a_strategy(hive: Hive) -> None:
    hive.set_conflict_strategy("team", "merge")
    m = hive.remember("team/a", "x", data={"a": 0, "b": 0})
    hive.update(m.id, data={"a": 1, "b": 0})
    merged = hive.update(m.id, data={"a": 0, "b": 1}, expected_version=1)
    assert merged.data == {"a": 1, "b": 1}
    with pytest.raises(VersionConflict):
        hive.update(m.id, data={"a": 5}, expected_version=1, on_conflict="reject")
    assert hive.get(m.id) == merged
    other = hive.remember("elsewhere", "y")
    hive.update(other.id, content="z")
    with pytest.raises(VersionConflict):
        hive.update(other.id, content="w", expected_version=1)


def test_bad_prefixes_are_refused(hive: Hive) -> None:
    for bad in ("", "a//b", None, 3):
        with pytest.raises(InvalidInput) as info:
            hive.set_conflict_strategy(bad, "merge")
        assert info.value.field == "namespace"
    for bad in ("", "a//b", None, 3, True):  # (the client refuses what a query string would carry as text)
        with pytest.raises(InvalidInput) as info:
            hive.get_conflict_strategy(bad)
        assert info.value.field == "namespace"


@pytest.mark.requires("durable", "store")  # a second Hive on the same store, in this process
def test_named_defaults_are_stored_and_functions_stay_in_their_hive(open_hive: OpenHive) -> None:
    hive = open_hive()
    hive.set_conflict_strategy("team", "merge")
    hive.set_conflict_strategy("team/a", _add_counts)
    assert hive.get_conflict_strategy("team/a/x") is _add_counts
    assert hive.as_principal(Principal.everything()).get_conflict_strategy("team/a") is _add_counts
    other = open_hive()
    assert other.get_conflict_strategy("team/a/x") == "merge"
    hive.set_conflict_strategy("team/a", "last_writer_wins")  # a name replaces the function
    assert hive.get_conflict_strategy("team/a") == other.get_conflict_strategy("team/a") == "last_writer_wins"


def test_a_function_default_over_http_is_refused_before_sending(hive: Hive, deployment: str) -> None:
    if not _refuses_functions(deployment):
        hive.set_conflict_strategy("ns", _add_counts)
        assert hive.get_conflict_strategy("ns") is _add_counts
        return
    with pytest.raises(InvalidInput, match="over HTTP") as info:
        hive.set_conflict_strategy("ns", _add_counts)
    assert info.value.field == "strategy"
    assert hive.get_conflict_strategy("ns") == "reject"


@pytest.mark.requires("durable")
def test_named_defaults_survive_reopen(open_hive: OpenHive) -> None:
    hive = open_hive()
    hive.set_conflict_strategy("team", "merge")
    hive.close()
    assert open_hive().get_conflict_strategy("team/x") == "merge"


# --------------------------------------------------------------------------- the record


def test_conflicts_list_newest_first_by_memory_or_prefix_and_are_counted(
    hive: Hive, clock: hivemem.ManualClock
) -> None:
    a = hive.remember("team/a", "a")
    b = hive.remember("team/b", "b")
    c = hive.remember("other", "c")
    for memory in (a, b, c, a):
        read = hive.get(memory.id)
        hive.update(memory.id, importance=0.9)
        clock.advance(1)
        hive.update(memory.id, tags=["seen"], expected_version=read.version, on_conflict="merge")
    everything = hive.conflicts()
    assert [(x.memory_id, x.result_version) for x in everything] == [(a.id, 5), (c.id, 3), (b.id, 3), (a.id, 3)]
    assert [x.memory_id for x in hive.conflicts(limit=2)] == [a.id, c.id]
    assert [x.memory_id for x in hive.conflicts(namespace="team")] == [a.id, b.id, a.id]
    assert [x.result_version for x in hive.conflicts(a.id)] == [5, 3]
    assert hive.conflicts(a.id, namespace="other") == []
    assert hive.stats()["conflicts"] == 4
    assert hive.stats("team/a")["conflicts"] == 2
    assert hive.stats("nowhere")["conflicts"] == 0


def test_forgetting_a_memory_forgets_its_conflicts(hive: Hive) -> None:
    a = hive.remember("team/a", "a")
    hive.update(a.id, content="a2")
    hive.update(a.id, content="a3", expected_version=1, on_conflict="last_writer_wins")
    b = hive.remember("team/b", "b")
    hive.update(b.id, content="b2")
    hive.update(b.id, content="b3", expected_version=1, on_conflict="last_writer_wins")
    hive.forget(a.id)
    with pytest.raises(NotFound):
        hive.conflicts(a.id)
    assert [x.memory_id for x in hive.conflicts()] == [b.id]
    hive.forget_namespace("team")
    assert hive.conflicts() == [] and hive.stats()["conflicts"] == 0


def test_conflicts_bad_input(hive: Hive) -> None:
    with pytest.raises(NotFound):
        hive.conflicts("no-such-memory")
    for kwargs, field in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"namespace": "a//b"}, "namespace")):
        with pytest.raises(InvalidInput) as info:
            hive.conflicts(**kwargs)
        assert info.value.field == field


def test_a_conflict_record_round_trips_through_its_dict(hive: Hive) -> None:
    m = hive.remember("ns", "x", data={"deep": {"list": [1, {"a": None}]}})
    hive.update(m.id, content="y")
    hive.update(m.id, content="z", expected_version=1, on_conflict="merge")
    conflict = _record(hive, m.id)
    assert Conflict.from_dict(conflict.to_dict()) == conflict
