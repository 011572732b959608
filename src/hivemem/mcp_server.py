"""HiveMem as an MCP server: an agent's memory tools for any MCP client (``hivemem mcp``).

One server speaks for one agent. Its namespace and identity come from its
configuration (``--namespace``; over HTTP, the API key), never from tool
arguments: every write goes to that namespace, and reads see what the
principal may see. On a database the server acts as a principal with
``write`` on its namespace only, so ``get`` or ``forget`` of a memory outside
it answers "not found".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from hivemem.access import Grant, Principal
from hivemem.client import RemoteHive
from hivemem.errors import HiveError
from hivemem.hive import Hive
from hivemem.models import Hit, Memory

F = TypeVar("F", bound=Callable[..., Any])
INSTRUCTIONS = """\
Long-term memory shared with the other agents of your team. Before a task, call `recall` with what
you are about to do to learn from earlier attempts. After a task, call `remember_episode` with what
you tried and whether it worked. Store durable facts with `remember`, things you track with
`upsert_entity`, and guidelines you learned with `add_rule`. Memories are written to your own
namespace; recall also finds what your team shared with you."""


def _memory(m: Memory) -> dict[str, Any]:
    out = {k: v for k, v in m.to_dict().items() if v not in (None, [], {})}
    out.pop("content_hash", None)
    return out


def _hit(h: Hit) -> dict[str, Any]:
    return {"score": round(h.score, 4), **_memory(h.memory)}


def agent_hive(hive: Hive, namespace: str, agent: str) -> Hive:
    """The Hive as the agent's MCP server uses it: on a database, write access to ``namespace`` only."""
    if isinstance(hive, RemoteHive):
        return hive  # the API key already decides
    return hive.as_principal(Principal(agent, (Grant("write", namespace),)))


def _answers_errors(fn: F) -> F:
    """A tool whose HiveErrors reach the model as their code and message (others stay hidden)."""

    @functools.wraps(fn)
    def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HiveError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from exc

    return tool  # type: ignore[return-value]


def build_server(hive: Hive, namespace: str, agent: str) -> MCPServer[Any]:
    """An MCP server whose tools act on ``hive`` in ``namespace`` as ``agent``."""
    mcp: MCPServer[Any] = MCPServer(name="hivemem", instructions=INSTRUCTIONS)
    own: dict[str, Any] = {"agent_id": agent}

    def register(fn: F) -> F:
        mcp.tool()(_answers_errors(fn))
        return fn

    @register
    def remember(
        content: str,
        kind: str = "note",
        tags: list[str] | None = None,
        importance: float = 0.5,
        key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a memory: a fact, a note or a result you may need later.

        Args:
            content: The text to remember, written so it makes sense without this conversation.
            kind: note, fact, entity, rule, message, summary, document or your own lowercase word.
            tags: Labels for filtering later.
            importance: 0 to 1; how much this should outweigh other memories in recall.
            key: Give a key to keep one current value: remembering the same key again updates it.
            data: Structured details (a JSON object).
        """
        return _memory(
            hive.remember(
                namespace, content, kind=kind, tags=tags or [], importance=importance, key=key, data=data, **own
            )
        )

    @register
    def recall(query: str, k: int = 5, kinds: list[str] | None = None, tags: list[str] | None = None) -> list[Any]:
        """Find the memories most useful for a task or question, best first.

        Args:
            query: What you are about to do or want to know, in plain words.
            k: How many memories to return (1-50 is sensible).
            kinds: Only these kinds, e.g. ["episode"] for past attempts or ["rule"] for guidelines.
            tags: Only memories carrying all these tags.
        """
        return [_hit(h) for h in hive.recall(query, k=k, kinds=kinds, tags=tags or ())]

    @register
    def get(memory_id: str) -> dict[str, Any]:
        """Read one memory by its id (as returned by remember or recall)."""
        return _memory(hive.get(memory_id))

    @register
    def update(
        memory_id: str,
        content: str | None = None,
        data: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        importance: float | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Change a memory; the previous version is kept in its history.

        Args:
            memory_id: The memory to change.
            content: New text, if it changes.
            data: New structured details (replace the old ones), if they change.
            tags: New tags, if they change.
            importance: New importance, if it changes.
            expected_version: The version you read; the update fails if someone changed it since.
        """
        changes: dict[str, Any] = {"content": content, "data": data, "tags": tags, "importance": importance}
        given = {k: v for k, v in changes.items() if v is not None}
        return _memory(hive.update(memory_id, expected_version=expected_version, **given))

    @register
    def forget(memory_id: str) -> dict[str, int]:
        """Delete a memory that is wrong or no longer useful."""
        return {"deleted": hive.forget(memory_id)}

    @register
    def relate(src_id: str, dst_id: str, type: str, strength: float = 1.0) -> dict[str, Any]:
        """Link two memories, e.g. a fix to the bug it solved ("fixes") or a step to its plan ("part_of")."""
        return hive.relate(src_id, dst_id, type, strength=strength).to_dict()

    @register
    def remember_episode(
        context: str, action: str, outcome: str, success: bool, lesson: str | None = None
    ) -> dict[str, Any]:
        """Record an attempt at a task so you and others can learn from it.

        Args:
            context: The situation and goal.
            action: What you did.
            outcome: What happened.
            success: Whether it worked.
            lesson: What to do (or avoid) next time, if there is one.
        """
        return _memory(
            hive.remember_episode(
                namespace, context=context, action=action, outcome=outcome, success=success, lesson=lesson, **own
            )
        )

    @register
    def upsert_entity(type: str, name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create or update what you know about a thing (a service, person, file...): one record per type and name.

        Args:
            type: What it is, e.g. "service" or "person" (lowercase).
            name: Its name.
            properties: Facts about it; merged into what is stored.
        """
        return _memory(hive.upsert_entity(namespace, type, name, properties, **own))

    @register
    def add_rule(text: str, rule_type: str = "guideline", confidence: float = 0.5) -> dict[str, Any]:
        """Store a rule you learned or were given, e.g. "always run the migrations before deploying".

        Args:
            text: The rule.
            rule_type: guideline, constraint or preference.
            confidence: 0 to 1; how sure you are.
        """
        return _memory(hive.add_rule(namespace, text, rule_type=rule_type, confidence=confidence, **own))

    return mcp
