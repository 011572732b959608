"""`hivemem serve` as a real process on loopback: API keys, grants, the error shape and limits.

Keys are made with the real CLI (`hivemem keys create`), the server is
`python -m hivemem serve`, and requests go through raw httpx (to see status
codes and bodies) and through the RemoteHive client (to see exception classes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import hivemem
from http_server import ServeProcess, cli_json, create_key, free_port


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "served.db"


@pytest.fixture
def keys(db: Path) -> dict[str, str]:
    return {
        "admin": create_key(db, "ops", "admin:*"),
        "team_a": create_key(db, "agent-a", "write:team-a"),
        "reader_b": create_key(db, "auditor", "read:team-b"),
    }


@pytest.fixture
def server(db: Path, keys: dict[str, str]) -> Iterator[ServeProcess]:
    running = ServeProcess(db, "--key-cache", "0")
    yield running
    running.stop()


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_without_a_valid_key_are_401_in_the_error_shape(
    server: ServeProcess, db: Path, keys: dict[str, str]
) -> None:
    revoked = create_key(db, "leaver", "write:team-a")
    revoked_id = next(k["key_id"] for k in cli_json(db, "keys", "list") if k["principal"] == "leaver")
    assert cli_json(db, "keys", "revoke", revoked_id) == {"revoked": revoked_id}
    listed = {k["principal"]: k for k in cli_json(db, "keys", "list")}
    assert listed["leaver"]["revoked_at"] is not None
    assert all("key" not in k for k in listed.values())  # only hashes are stored

    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"X-API-Key": keys["team_a"][:-2] + "xx"},  # right id, wrong secret
        _headers(revoked),
    ]
    for headers in attempts:
        response = httpx.post(
            f"{server.url}/v1/memories", json={"namespace": "team-a", "content": "x"}, headers=headers
        )
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "unauthenticated"
        assert set(body) == {"type", "title", "status", "detail", "code", "details"}
    with hivemem.open(server.url, api_key=keys["admin"]) as admin:
        assert admin.stats()["memories"] == 0  # nothing was written by the refused calls
    with hivemem.open(server.url) as anonymous, pytest.raises(hivemem.Unauthenticated):
        anonymous.list()


def test_a_foreign_namespace_is_invisible_through_every_route(server: ServeProcess, keys: dict[str, str]) -> None:
    with hivemem.open(server.url, api_key=keys["admin"]) as admin:
        secret = admin.remember("team-b/vault", "the launch code is tomato", key="code", data={"level": 9})
        child = admin.remember("team-b/vault", "tomato child", parent_id=secret.id)
        admin.create_group("shared")
        admin.add_to_group(secret.id, "shared")
        admin.update(secret.id, data={"level": 10})
        admin.update(secret.id, tags=["merged"], expected_version=1, on_conflict="merge")
    with hivemem.open(server.url, api_key=keys["team_a"]) as a:
        mine = a.remember("team-a/notes", "my tomato plan", tags=["plan"])
        a.update(mine.id, importance=0.9)
        a.update(mine.id, tags=["plan", "mine"], expected_version=1, on_conflict="last_writer_wins")
        a.add_to_group(mine.id, "shared")
        a.relate(mine.id, mine.id, "self")
        # Reads: the foreign memory is as absent as one that never existed.
        for call in (
            lambda: a.get(secret.id),
            lambda: a.history(secret.id),
            lambda: a.related(secret.id),
            lambda: a.children(secret.id),
            lambda: a.get_by_key("team-b/vault", "code"),
            lambda: a.conflicts(secret.id),
        ):
            with pytest.raises(hivemem.NotFound):
                call()
        assert [c.memory_id for c in a.conflicts()] == [mine.id]
        assert a.conflicts(namespace="team-b") == []
        assert a.stats()["conflicts"] == 1
        for call in (
            lambda: a.set_conflict_strategy("team-b", "last_writer_wins"),
            lambda: a.get_conflict_strategy("team-b/vault"),
        ):
            with pytest.raises(hivemem.Forbidden):
                call()
        assert [h.memory.id for h in a.recall("tomato launch code", k=50)] == [mine.id]
        assert a.recall("tomato", namespace="team-b", k=50) == []
        assert [m.id for m in a.list()] == [mine.id]
        assert list(a.list("team-b")) == []
        assert a.stats()["memories"] == 1
        assert a.stats("team-b")["memories"] == 0
        assert [m.id for m in a.group_members("shared")] == [mine.id]
        assert [m.id for m in a.export()] == [mine.id]
        with pytest.raises(hivemem.NotFound):
            a.relate(mine.id, secret.id, "peeks")
        # Writes into it are refused the same way whether it holds anything or not.
        for namespace in ("team-b/vault", "team-b/empty"):
            with pytest.raises(hivemem.Forbidden):
                a.remember(namespace, "overwrite")
        for call in (
            lambda: a.update(secret.id, content="changed"),
            lambda: a.update(secret.id, content="changed", expected_version=1, on_conflict="last_writer_wins"),
            lambda: a.forget(secret.id),
            lambda: a.reinforce(secret.id),
            lambda: a.add_to_group(child.id, "shared"),
        ):
            with pytest.raises(hivemem.NotFound):
                call()
        with pytest.raises(hivemem.Forbidden):
            a.forget_namespace("team-b")
        with pytest.raises(hivemem.Forbidden):
            a.sweep()
    with hivemem.open(server.url, api_key=keys["reader_b"]) as b:
        assert b.get(secret.id).content == secret.content  # nothing was changed or deleted
        assert b.stats()["memories"] == 2
        assert b.stats()["conflicts"] == 1
        assert [c.memory_id for c in b.conflicts()] == [secret.id]
        assert b.get_conflict_strategy("team-b/vault") == "reject"
        with pytest.raises(hivemem.Forbidden):
            b.update(secret.id, content="readers cannot write")
        with pytest.raises(hivemem.NotFound):
            b.get(mine.id)


def test_identity_comes_from_the_key_not_the_request(server: ServeProcess, keys: dict[str, str]) -> None:
    body = {"namespace": "team-b/x", "content": "sneaky", "principal": "ops", "grants": ["admin:*"]}
    response = httpx.post(f"{server.url}/v1/memories", json=body, headers=_headers(keys["team_a"]))
    assert (response.status_code, response.json()["details"]["field"]) == (422, "grants")  # not an argument
    spoofed = httpx.post(
        f"{server.url}/v1/memories?principal=ops",
        json={"namespace": "team-b/x", "content": "sneaky"},
        headers={**_headers(keys["team_a"]), "X-Principal": "ops"},
    )
    assert spoofed.status_code == 403
    with hivemem.open(server.url, api_key=keys["admin"]) as admin:
        assert admin.stats()["memories"] == 0


def test_errors_and_limits_answer_in_the_error_shape_and_write_nothing(
    server: ServeProcess, keys: dict[str, str]
) -> None:
    headers = _headers(keys["admin"])
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/v1/memories", {"namespace": "ns", "content": ""}, 422, "invalid_input"),
        ("POST", "/v1/memories", {"namespace": "ns", "content": "x", "importance": 7}, 422, "invalid_input"),
        ("POST", "/v1/memories", {"namespace": "ns", "content": "x", "colour": "red"}, 422, "invalid_input"),
        ("POST", "/v1/memories", {"namespace": "ns"}, 422, "invalid_input"),
        ("POST", "/v1/memories", [1, 2], 422, "invalid_input"),
        ("POST", "/v1/memories", {"namespace": "ns", "content": "x" * 70_000}, 413, "payload_too_large"),
        ("POST", "/v1/memories", {"namespace": "ns", "content": "x", "occurred_at": "yesterday"}, 422, "invalid_input"),
        ("POST", "/v1/recall", {"query": "x", "k": 100_000}, 422, "invalid_input"),
        ("POST", "/v1/memories/list", {"cursor": "garbage"}, 422, "invalid_input"),
        ("GET", "/v1/memories/no-such-id", None, 404, "not_found"),
        ("GET", "/v1/no/such/route", None, 404, "not_found"),
        ("GET", "/v1/export?namespace=a//b", None, 422, "invalid_input"),  # refused before the stream starts
        ("POST", "/v1/memories/list", {"tiers": False}, 422, "invalid_input"),
        ("GET", "/v1/memories/%FF", None, 422, "invalid_input"),  # an escape that is no UTF-8
        ("GET", "/v1/groups/no%2Fsuch/members", None, 404, "not_found"),  # one group's name, not a route
    ]
    deep: Any = {}
    for _ in range(40):
        deep = {"d": deep}
    cases.append(("POST", "/v1/memories", {"namespace": "ns", "content": "x", "data": deep}, 422, "invalid_input"))
    for method, path, body, status, code in cases:
        response = httpx.request(method, f"{server.url}{path}", json=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), (path, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    lone = b'{"namespace": "ns/\\ud800", "content": "x"}'  # the error's detail quotes a lone surrogate
    for raw_body in (b"{not json", b"[" * 100_000, lone):  # the second nests deeper than the JSON parser recurses
        raw = httpx.post(f"{server.url}/v1/memories", content=raw_body, headers=headers)
        assert (raw.status_code, raw.json()["code"]) == (422, "invalid_input")
    huge = httpx.post(f"{server.url}/v1/memories", content=b"x" * (9 * 1024 * 1024), headers=headers)
    assert (huge.status_code, huge.json()["code"]) == (413, "payload_too_large")
    with hivemem.open(server.url, api_key=keys["admin"]) as admin:
        assert admin.stats()["memories"] == 0


def test_openapi_lists_every_route(server: ServeProcess) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    from hivemem.wire import ROUTES

    for route in ROUTES:
        assert any(op.startswith(route.name) for op in operations), route.name


def test_the_server_refuses_to_listen_beyond_loopback_without_auth(db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hivemem", "--db", str(db), "serve", "--host", "0.0.0.0", "--no-auth"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={**os.environ, "HIVEMEM_EMBEDDER": "none"},
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0" in result.stderr


def test_a_repeated_idempotency_key_applies_the_write_once(server: ServeProcess, keys: dict[str, str]) -> None:
    headers = {**_headers(keys["team_a"]), "Idempotency-Key": "call-1"}
    body = {"namespace": "team-a", "content": "deploy finished"}
    first = httpx.post(f"{server.url}/v1/memories", json=body, headers=headers)
    again = httpx.post(f"{server.url}/v1/memories", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = httpx.post(f"{server.url}/v1/memories", json=body, headers={**headers, "Idempotency-Key": "call-2"})
    assert other.json()["id"] != first.json()["id"]
    refused = httpx.post(
        f"{server.url}/v1/memories",
        json={"namespace": "team-a", "content": ""},
        headers={**headers, "Idempotency-Key": "c3"},
    )
    assert refused.status_code == 422  # a failed call records nothing: a fixed retry goes through
    fixed = httpx.post(f"{server.url}/v1/memories", json=body, headers={**headers, "Idempotency-Key": "c3"})
    assert fixed.status_code == 201
    # The same key on another request is that request's own: applied, never answered with the first's result.
    group = httpx.post(f"{server.url}/v1/groups", json={"name": "g1"}, headers={**headers, "Idempotency-Key": "k"})
    added = httpx.post(
        f"{server.url}/v1/groups/g1/members",
        json={"memory_id": first.json()["id"]},
        headers={**headers, "Idempotency-Key": "k"},
    )
    assert group.status_code == 201 and (added.status_code, added.json()) == (200, None)
    with hivemem.open(server.url, api_key=keys["admin"]) as admin:
        assert admin.stats()["memories"] == 3
        assert [m.id for m in admin.group_members("g1")] == [first.json()["id"]]


def test_writes_retried_through_a_kill_9_restart_land_exactly_once(
    server: ServeProcess, db: Path, keys: dict[str, str]
) -> None:
    acknowledged: list[str] = []
    failures: list[BaseException] = []

    def write_all() -> None:
        with hivemem.open(server.url, api_key=keys["team_a"], retries=60, backoff=0.05) as hive:
            hive.breaker.threshold = 10**6  # this test is about retries, not the breaker
            try:
                for i in range(300):
                    acknowledged.append(hive.remember("team-a/log", f"write number {i}").content)
            except BaseException as exc:  # reported below
                failures.append(exc)

    import threading

    writer = threading.Thread(target=write_all)
    writer.start()
    restarted: ServeProcess | None = None
    try:
        while len(acknowledged) < 100 and writer.is_alive():
            time.sleep(0.01)
        server.process.kill()  # SIGKILL: no shutdown, requests in flight are lost
        server.process.wait()
        time.sleep(0.3)
        restarted = ServeProcess(db, "--key-cache", "0", port=server.port)
        writer.join(timeout=120)
    finally:
        if restarted is not None:
            restarted.stop()
    assert not failures, failures
    assert len(acknowledged) == 300
    with hivemem.open(str(db), embedder=None) as direct:
        stored = [m.content for m in direct.export("team-a/log")]
    assert sorted(stored) == sorted(acknowledged)  # every acknowledged write, none twice


def test_the_client_fails_over_to_the_next_url_and_breaks_the_circuit(
    server: ServeProcess, keys: dict[str, str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with hivemem.open(f"{dead},{server.url}", api_key=keys["team_a"], backoff=0.01) as hive:
        assert hive.remember("team-a", "through the second server").version == 1
        assert hive.url == server.url
    with hivemem.open(dead, api_key=keys["team_a"], retries=0) as hive:
        for _ in range(hive.breaker.threshold):
            with pytest.raises(hivemem.StorageUnavailable):
                hive.get("anything")
        assert hive.breaker.status() == {"state": "open", "consecutive_failures": hive.breaker.threshold}
        with pytest.raises(hivemem.StorageUnavailable) as info:
            hive.get("anything")
        assert info.value.details["reason"] == "CircuitOpen"
        hive.breaker.reset()
        assert hive.breaker.status()["state"] == "closed"


def test_health_readiness_and_metrics(server: ServeProcess, keys: dict[str, str]) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    with hivemem.open(server.url, api_key=keys["team_a"]) as a:
        memory = a.remember("team-a", "counted", kind="fact", tier="long")
        a.get(memory.id)
        with pytest.raises(hivemem.NotFound):
            a.get("missing")
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=_headers(keys["team_a"])).status_code == 403
    text = httpx.get(f"{server.url}/metrics", headers=_headers(keys["admin"])).text
    assert 'hivemem_http_requests_total{method="POST",route="/v1/memories",status="201"} 1.0' in text
    assert 'hivemem_http_requests_total{method="GET",route="/v1/memories/{memory_id}",status="404"} 1.0' in text
    assert 'hivemem_http_request_seconds_count{method="GET",route="/v1/memories/{memory_id}"} 2.0' in text
    assert 'hivemem_memories{kind="fact",tier=""} 1.0' in text
    assert 'hivemem_memories{kind="",tier="long"} 1.0' in text
