"""The MCP tools as real processes, driven by the MCP client library.

`hivemem mcp` on stdio for one configured agent, and `/mcp` (streamable HTTP) on a
real `hivemem serve` process, where the API key decides the agent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

import hivemem
from http_server import ServeProcess, create_key

TOOLS = {
    "remember",
    "recall",
    "get",
    "update",
    "forget",
    "relate",
    "remember_episode",
    "upsert_entity",
    "add_rule",
    "context_for",
    "register_agent",
    "record_outcome",
    "select_agent",
}


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return (
        json.loads(result.content[0].text) if len(result.content) == 1 else [json.loads(c.text) for c in result.content]
    )


async def _session(db: Path, namespace: str, calls: Any) -> Any:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hivemem", "--db", str(db), "mcp", "--namespace", namespace],
        env={**os.environ, "HIVEMEM_EMBEDDER": "none"},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await calls(session)


def test_the_tools_work_in_the_configured_namespace_only(tmp_path: Path) -> None:
    db = tmp_path / "agents.db"
    with hivemem.open(str(db), embedder=None) as hive:
        foreign = hive.remember("team-b", "the deploy key rotates on fridays")

    async def calls(session: ClientSession) -> dict[str, Any]:
        tools = await session.list_tools()
        out: dict[str, Any] = {"tools": {t.name: t for t in tools.tools}}
        stored = _payload(await session.call_tool("remember", {"content": "the deploy runs on tuesdays"}))
        spoof = await session.call_tool("remember", {"content": "x", "namespace": "team-b"})
        episode = _payload(
            await session.call_tool(
                "remember_episode",
                {"context": "deploy", "action": "ran migrations first", "outcome": "clean", "success": True},
            )
        )
        out["recall"] = _payload(await session.call_tool("recall", {"query": "when does the deploy run", "k": 5}))
        out["updated"] = _payload(await session.call_tool("update", {"memory_id": stored["id"], "importance": 0.9}))
        out["foreign_get"] = await session.call_tool("get", {"memory_id": foreign.id})
        out["foreign_forget"] = await session.call_tool("forget", {"memory_id": foreign.id})
        out["stored"], out["spoof"], out["episode"] = stored, spoof, episode
        return out

    out = anyio.run(_session, db, "team-a/agent-7", calls)
    assert set(out["tools"]) >= TOOLS
    assert all(out["tools"][name].description for name in TOOLS)
    assert "namespace" not in out["tools"]["remember"].input_schema["properties"]  # not the model's to choose
    assert out["stored"]["namespace"] == "team-a/agent-7" and out["stored"]["agent_id"] == "agent-7"
    assert out["episode"]["kind"] == "episode"
    assert _payload(out["spoof"])["namespace"] == "team-a/agent-7"  # a namespace argument is ignored
    recalled = out["recall"]
    assert out["stored"]["id"] in [h["id"] for h in recalled]
    assert foreign.id not in [h["id"] for h in recalled]
    assert out["updated"]["version"] == 2
    assert out["foreign_get"].is_error and "no memory" in out["foreign_get"].content[0].text
    assert out["foreign_forget"].is_error
    with hivemem.open(str(db), embedder=None) as hive:
        assert hive.get(foreign.id) == foreign
        assert {m.namespace for m in hive.list()} == {"team-a/agent-7", "team-b"}


def test_a_bad_namespace_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "hivemem", "--db", str(tmp_path / "x.db"), "mcp", "--namespace", "bad//ns"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={**os.environ, "HIVEMEM_EMBEDDER": "none"},
    )
    assert result.returncode == 2
    assert "namespace" in result.stderr


async def _http_session(url: str, headers: dict[str, str], calls: Any) -> Any:
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await calls(session)


def test_the_server_serves_the_tools_over_http_as_the_keys_agent(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    agent_key = create_key(db, "agent-7", "write:team-a/agent-7", "read:team-a")
    two_namespaces = create_key(db, "agent-8", "write:team-a/agent-8", "write:team-a/shared")
    with hivemem.open(str(db), embedder=None) as hive:
        shared = hive.remember("team-a/shared", "the staging deploy runs on tuesdays")
        foreign = hive.remember("team-b", "the deploy key rotates on fridays")
    server = ServeProcess(db, "--key-cache", "0")
    try:

        async def calls(session: ClientSession) -> dict[str, Any]:
            tools = await session.list_tools()
            stored = _payload(await session.call_tool("remember", {"content": "the prod deploy runs on mondays"}))
            spoof = _payload(
                await session.call_tool("remember", {"content": "x", "namespace": "team-b", "agent_id": "root"})
            )
            found = _payload(await session.call_tool("recall", {"query": "when does the deploy run", "k": 10}))
            return {
                "tools": {t.name for t in tools.tools},
                "stored": stored,
                "spoof": spoof,
                "recall": found,
                "foreign_get": await session.call_tool("get", {"memory_id": foreign.id}),
                "shared_forget": await session.call_tool("forget", {"memory_id": shared.id}),
            }

        out = anyio.run(_http_session, server.url, {"Authorization": f"Bearer {agent_key}"}, calls)
        assert out["tools"] >= TOOLS
        # Identity and namespace come from the key, whatever the arguments say.
        assert (out["stored"]["namespace"], out["stored"]["agent_id"]) == ("team-a/agent-7", "agent-7")
        assert (out["spoof"]["namespace"], out["spoof"]["agent_id"]) == ("team-a/agent-7", "agent-7")
        # Recall sees what the key may read (its team), never another team.
        recalled = {h["id"] for h in out["recall"]}
        assert {out["stored"]["id"], shared.id} <= recalled and foreign.id not in recalled
        assert out["foreign_get"].is_error and "no memory" in out["foreign_get"].content[0].text
        assert (
            out["shared_forget"].is_error and "forbidden: agent-7 may not write" in out["shared_forget"].content[0].text
        )

        # A key that writes in two namespaces names one in the header, within its grants.
        async def remember(session: ClientSession) -> Any:
            return await session.call_tool("remember", {"content": "the shared runbook moved"})

        named = {"Authorization": f"Bearer {two_namespaces}", "X-HiveMem-Namespace": "team-a/shared"}
        assert _payload(anyio.run(_http_session, server.url, named, remember))["namespace"] == "team-a/shared"
        outside = {**named, "X-HiveMem-Namespace": "team-b"}
        assert anyio.run(_http_session, server.url, outside, remember).is_error

        # No key, a bad key, or an ambiguous namespace: refused before any tool runs, in the error shape.
        for headers, status, code in (
            ({}, 401, "unauthenticated"),
            ({"Authorization": "Bearer hm_0000000000000000_nope"}, 401, "unauthenticated"),
            ({"Authorization": f"Bearer {two_namespaces}"}, 422, "invalid_input"),
        ):
            response = httpx.post(f"{server.url}/mcp", json={}, headers=headers)
            assert (response.status_code, response.json()["code"]) == (status, code)
    finally:
        server.stop()
    with hivemem.open(str(db), embedder=None) as hive:
        assert hive.get(shared.id) == shared and hive.get(foreign.id) == foreign
        assert {m.namespace for m in hive.list()} == {"team-a/agent-7", "team-a/shared", "team-b"}


def test_an_agent_records_outcomes_reads_its_experience_and_ranks_its_team_over_http(tmp_path: Path) -> None:
    db = tmp_path / "team.db"
    agent_key = create_key(db, "agent-7", "write:team-a/agent-7", "read:team-a")
    with hivemem.open(str(db), embedder=None) as hive:
        hive.register_agent("team-a/rivals", "rival", specializations=["log rotation"])
        for _ in range(3):  # a better record, at other work
            hive.record_outcome("rival", "rotate the web logs", namespace="team-a/rivals", success=True)
        hive.register_agent("team-b", "outsider", specializations=["billing schema migrations"])
    server = ServeProcess(db)
    task = "migrate the billing schema"
    try:

        async def calls(session: ClientSession) -> dict[str, Any]:
            outcome = {
                "task": task,
                "success": True,
                "duration": 42,
                "notes": "ran the migration in one transaction",
                "lesson": "take a backup before migrating",
            }
            return {
                # The first outcome of an agent that never registered registers it.
                "first": _payload(await session.call_tool("record_outcome", outcome)),
                "registered": _payload(
                    await session.call_tool("register_agent", {"specializations": ["database migrations"]})
                ),
                "context": _payload(await session.call_tool("context_for", {"task": task + " again", "k": 3})),
                "ranking": _payload(await session.call_tool("select_agent", {"task": task})),
                "unknown": await session.call_tool("select_agent", {"task": task, "candidates": ["nobody"]}),
            }

        out = anyio.run(_http_session, server.url, {"Authorization": f"Bearer {agent_key}"}, calls)
    finally:
        server.stop()
    first, profile = out["first"], out["registered"]
    assert (first["episode"]["kind"], first["episode"]["agent_id"]) == ("episode", "agent-7")
    assert first["episode"]["namespace"] == "team-a/agent-7"
    assert (first["profile"]["successes"], first["profile"]["failures"]) == (1, 0)
    assert profile["specializations"] == ["database migrations"] and profile["successes"] == 1  # counts stay
    context = out["context"]
    assert context["memory_ids"] == [first["episode"]["id"]]
    assert "take a backup before migrating" in context["text"]
    ranking = {score["agent"]: score for score in out["ranking"]}
    assert set(ranking) == {"agent-7", "rival"}  # team-b is outside the key's reads
    assert ranking["agent-7"]["evidence"] == [first["episode"]["id"]]
    assert ranking["agent-7"]["experience"] > 0 == ranking["rival"]["experience"]
    assert ranking["rival"]["performance"] > ranking["agent-7"]["performance"]
    assert out["unknown"].is_error and "not_found" in out["unknown"].content[0].text
    with hivemem.open(str(db), embedder=None) as hive:
        assert hive.agents(namespace="team-a/agent-7")[0].successes == 1
