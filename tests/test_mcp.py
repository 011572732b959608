"""`hivemem mcp` as a real stdio process, driven by the MCP client library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import hivemem

TOOLS = {"remember", "recall", "get", "update", "forget", "relate", "remember_episode", "upsert_entity", "add_rule"}


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
