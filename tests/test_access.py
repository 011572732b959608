"""Grants on namespace prefixes, applied by Hive.as_principal on every embedded deployment.

The HTTP server applies the same views per API key; tests/test_server.py checks
that through a real server process.
"""

from __future__ import annotations

from typing import Any

import pytest

import hivemem
from conftest import OpenHive
from hivemem.access import Grant, Principal
from hivemem.models import Memory


@pytest.fixture
def hive(open_hive: OpenHive, deployment: str) -> hivemem.Hive:
    if deployment == "http":
        pytest.skip("over HTTP the API key is the principal: tests/test_server.py")
    return open_hive()


def _principal(name: str, *grants: str) -> Principal:
    return Principal(name, tuple(Grant.parse(g) for g in grants))


def test_grants_parse_and_nest() -> None:
    writer = _principal("w", "write:team-a", "read:shared/docs")
    assert writer.allows("read", "team-a/x") and writer.allows("write", "team-a")
    assert not writer.allows("write", "shared/docs") and writer.allows("read", "shared/docs/y")
    assert not writer.allows("read", "team-ab") and not writer.allows("admin", "team-a")
    assert writer.prefixes("read") == ("team-a", "shared/docs")
    assert _principal("root", "admin:*").prefixes("read") is None
    for bad in ("team-a", "own:team-a", "read:bad//ns", "write:"):
        with pytest.raises(hivemem.InvalidInput):
            Grant.parse(bad)


def test_reads_see_only_granted_prefixes_on_every_search_path(hive: hivemem.Hive) -> None:
    theirs = hive.remember("team-b/secret", "tomato soup recipe", tags=["food"])
    mine = hive.remember("team-a/notes", "tomato soup plan", tags=["food"])
    shared = hive.remember("shared/docs", "tomato soup history", tags=["food"])
    view = hive.as_principal(_principal("a", "write:team-a", "read:shared"))
    assert {h.memory.id for h in view.recall("tomato soup", k=10)} == {mine.id, shared.id}
    assert view.recall("tomato soup", namespace="team-b", k=10) == []
    assert {m.id for m in view.list(tags=["food"])} == {mine.id, shared.id}
    assert view.stats()["memories"] == 2
    with pytest.raises(hivemem.NotFound):
        view.get(theirs.id)
    with pytest.raises(hivemem.Forbidden):
        view.update(shared.id, content="read-only here")
    with pytest.raises(hivemem.Forbidden):
        view.remember("team-b/secret", "no")
    with pytest.raises(hivemem.Forbidden):
        view.sweep()
    assert hive.get(theirs.id) == theirs  # the full Hive still sees everything


def test_conflicts_and_strategies_follow_the_grants(hive: hivemem.Hive) -> None:
    secret = hive.remember("team-b/secret", "their plan")
    hive.update(secret.id, content="their plan v2")
    hive.update(secret.id, tags=["x"], expected_version=1, on_conflict="merge")
    mine = hive.remember("team-a/notes", "my plan")
    hive.update(mine.id, content="my plan v2")
    hive.update(mine.id, tags=["y"], expected_version=1, on_conflict="merge")
    hive.set_conflict_strategy("team-b", "merge")
    view = hive.as_principal(_principal("a", "write:team-a", "read:shared"))
    assert [c.memory_id for c in view.conflicts()] == [mine.id]
    assert view.conflicts(namespace="team-b") == []
    assert view.stats()["conflicts"] == 1 and hive.stats()["conflicts"] == 2
    with pytest.raises(hivemem.NotFound):
        view.conflicts(secret.id)
    with pytest.raises(hivemem.NotFound):  # the memory is invisible, whatever the strategy
        view.update(secret.id, content="mine now", expected_version=1, on_conflict="last_writer_wins")
    view.set_conflict_strategy("team-a", "last_writer_wins")
    assert view.get_conflict_strategy("team-a/notes") == "last_writer_wins"
    for call in (
        lambda: view.set_conflict_strategy("team-b", "reject"),
        lambda: view.set_conflict_strategy("shared", "merge"),  # read is not write
        lambda: view.get_conflict_strategy("team-b/secret"),
    ):
        with pytest.raises(hivemem.Forbidden):
            call()
    assert view.get_conflict_strategy("shared/docs") == "reject"
    assert hive.get_conflict_strategy("team-b/secret") == "merge"
    assert hive.get(secret.id).version == 3


def test_a_principal_without_grants_sees_nothing_and_writes_nothing(hive: hivemem.Hive) -> None:
    hive.remember("team-a", "anything")
    nobody = hive.as_principal(Principal("nobody", ()))
    assert nobody.recall("anything", k=5) == []
    assert list(nobody.list()) == []
    with pytest.raises(hivemem.Forbidden):
        nobody.create_group("g")


def test_api_keys_authenticate_and_revoke(hive: hivemem.Hive) -> None:
    record, key = hive.create_api_key("agent-7", ["write:team-a"])
    assert key not in repr(hive.api_keys()) and record.key_hash != key
    assert hive.authenticate(key) == Principal("agent-7", (Grant("write", "team-a"),))
    for wrong in ("", "hm_x", key + "x", key.replace(record.key_id, "0" * 16)):
        with pytest.raises(hivemem.Unauthenticated):
            hive.authenticate(wrong)
    with pytest.raises(hivemem.Forbidden):
        hive.as_principal(hive.authenticate(key)).create_api_key("escalate", ["admin:*"])
    hive.revoke_api_key(record.key_id)
    with pytest.raises(hivemem.Unauthenticated):
        hive.authenticate(key)
    with pytest.raises(hivemem.NotFound):
        hive.revoke_api_key(record.key_id)


def test_run_once_applies_a_write_once_per_principal_and_key(hive: hivemem.Hive, clock: hivemem.ManualClock) -> None:
    def remember(text: str) -> Any:
        return lambda h: h.remember("team-a", text)

    first = hive.run_once("call-1", remember("once"), Memory.to_dict)
    assert hive.run_once("call-1", remember("once"), Memory.to_dict) == first
    with pytest.raises(hivemem.InvalidInput):
        hive.run_once("call-2", remember(""), Memory.to_dict)
    fixed = hive.run_once("call-2", remember("fixed"), Memory.to_dict)  # the failure recorded nothing
    other = hive.as_principal(_principal("b", "write:team-a"))
    theirs = other.run_once("call-1", remember("same key, other principal"), Memory.to_dict)
    assert len({first["id"], fixed["id"], theirs["id"]}) == 3
    assert hive.stats()["memories"] == 3
    clock.advance(hive.config.idempotency_ttl_seconds + 1)
    assert hive.sweep()["idempotency_keys_pruned"] == 3
    assert hive.run_once("call-1", remember("once"), Memory.to_dict)["id"] != first["id"]  # forgotten after the ttl


def test_the_http_client_sets_its_own_idempotency_keys(open_hive: OpenHive, deployment: str) -> None:
    if deployment != "http":
        pytest.skip("a client-only rule")
    with pytest.raises(hivemem.ConfigError):
        open_hive().run_once("k", lambda h: h.remember("ns", "x"), Memory.to_dict)


def test_plans_and_agents_follow_the_grants(hive: hivemem.Hive) -> None:
    hive.create_plan("team-b", [{"id": "a", "description": "secret work"}], plan_id="p")
    hive.register_agent("team-b", "spy", specializations=["secrets"])
    hive.record_outcome("spy", "secret work", namespace="team-b", success=True)
    view = hive.as_principal(_principal("a", "write:team-a", "read:shared"))
    with pytest.raises(hivemem.NotFound):
        view.plan("p", namespace="team-b")
    assert view.plans("team-b") == [] and view.agents() == [] and view.select_agent("secret work") == []
    with pytest.raises(hivemem.Forbidden):
        view.assign_task("p", "a", "me", namespace="team-b")
    with pytest.raises(hivemem.Forbidden):
        view.create_plan("team-b", [{"id": "a", "description": "x"}])
    with pytest.raises(hivemem.Forbidden):
        view.record_outcome("spy", "secret work", namespace="team-b", success=False)
    assert view.context_for("spy", "secret work").memory_ids == ()
    assert hive.plan("p", namespace="team-b").task("a").state == "pending"
    mine = view.create_plan("team-a", [{"id": "a", "description": "x"}], plan_id="p")
    assert view.assign_task(mine.id, "a", "me", namespace="team-a").agent == "me"
    reader = hive.as_principal(_principal("r", "read:team-a"))
    assert reader.plan("p", namespace="team-a").task("a").agent == "me"
    with pytest.raises(hivemem.Forbidden):
        reader.transition_task("p", "a", "running", namespace="team-a", agent="me")
