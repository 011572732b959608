"""HiveMem as an MCP server: an agent's memory tools for any MCP client.

Two transports serve the same tools: stdio (``hivemem mcp``, one agent per
process) and streamable HTTP at ``/mcp`` on ``hivemem serve`` (every agent
holding an API key). An agent's namespace and identity come from its
configuration, never from tool arguments: on stdio from ``--namespace``; over
HTTP from the API key (the agent is the key's principal; the namespace is the
``X-HiveMem-Namespace`` header, or the key's only write grant). Every write goes
to that namespace, and reads see what the principal may see, so ``get`` or
``forget`` of a memory outside the grants answers "not found".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request

from hivemem import validation
from hivemem.access import Grant, Principal
from hivemem.client import RemoteHive
from hivemem.errors import HiveError, InvalidInput, NotFound, Unauthenticated
from hivemem.hive import Hive
from hivemem.models import Hit, Memory

F = TypeVar("F", bound=Callable[..., Any])
#: Where an HTTP agent names its namespace when its key may write in several.
NAMESPACE_HEADER = "x-hivemem-namespace"
#: Where the server leaves the authenticated agent in the request's ASGI state.
AGENT_STATE = "hivemem_agent"
INSTRUCTIONS = """\
Long-term memory shared with the other agents of your team. Before a task, call `recall` with what
you are about to do to learn from earlier attempts. After a task, call `remember_episode` with what
you tried and whether it worked. Store durable facts with `remember`, things you track with
`upsert_entity`, and guidelines you learned with `add_rule`. Memories are written to your own
namespace; recall also finds what your team shared with you. To work as one of a team of agents:
`register_agent` with your skills, `context_for` a task to see your own attempts like it,
`record_outcome` when it is done, and `select_agent` to find who should take a task."""


@dataclass(frozen=True, slots=True)
class Agent:
    """Who the tools act for: the Hive as the agent sees it, its namespace and its id."""

    hive: Hive
    namespace: str
    agent_id: str


def _memory(m: Memory) -> dict[str, Any]:
    out = {k: v for k, v in m.to_dict().items() if v not in (None, [], {})}
    out.pop("content_hash", None)
    return out


def _hit(h: Hit) -> dict[str, Any]:
    return {"score": round(h.score, 4), **_memory(h.memory)}


def stdio_agent(hive: Hive, namespace: str, agent: str) -> Agent:
    """The agent of ``hivemem mcp``: on a database, a principal with write access to ``namespace`` only."""
    if not isinstance(hive, RemoteHive):  # over HTTP the API key already decides
        hive = hive.as_principal(Principal(agent, (Grant("write", namespace),)))
    return Agent(hive, namespace, agent)


def http_agent(hive: Hive, request: Request) -> Agent:
    """The agent of one MCP request to the server; ``hive`` is already the key's principal's view.

    Raises:
        InvalidInput: No namespace header and the key does not write in exactly one namespace,
            or the header is not a namespace.
    """
    header = request.headers.get(NAMESPACE_HEADER)
    if header is not None:
        namespace = validation.namespace(header)
    else:
        prefixes = hive.principal.prefixes("write")
        if prefixes is None or len(prefixes) != 1:
            raise InvalidInput(NAMESPACE_HEADER, "this key may write in several namespaces: name one in this header")
        namespace = validation.namespace(prefixes[0])
    return Agent(hive, namespace, hive.principal.name)


def _answers_errors(fn: F) -> F:
    """A tool whose HiveErrors reach the model as their code and message (others stay hidden)."""

    @functools.wraps(fn)
    def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HiveError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from exc

    return tool  # type: ignore[return-value]


def build_server(resolve: Callable[[Context], Agent]) -> MCPServer[Any]:
    """An MCP server whose tools act for the agent ``resolve`` finds for each call.

    Args:
        resolve: The calling agent, from the tool call's context (on stdio always
            the same; over HTTP from the request the server authenticated).
    """
    mcp: MCPServer[Any] = MCPServer(name="hivemem", instructions=INSTRUCTIONS)

    def register(fn: F) -> F:
        mcp.tool()(_answers_errors(fn))
        return fn

    @register
    def remember(
        ctx: Context,
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
        me = resolve(ctx)
        return _memory(
            me.hive.remember(
                me.namespace,
                content,
                kind=kind,
                tags=tags or [],
                importance=importance,
                key=key,
                data=data,
                agent_id=me.agent_id,
            )
        )

    @register
    def recall(
        ctx: Context, query: str, k: int = 5, kinds: list[str] | None = None, tags: list[str] | None = None
    ) -> list[Any]:
        """Find the memories most useful for a task or question, best first.

        Args:
            query: What you are about to do or want to know, in plain words.
            k: How many memories to return (1-50 is sensible).
            kinds: Only these kinds, e.g. ["episode"] for past attempts or ["rule"] for guidelines.
            tags: Only memories carrying all these tags.
        """
        me = resolve(ctx)
        return [_hit(h) for h in me.hive.recall(query, k=k, kinds=kinds, tags=tags or ())]

    @register
    def get(ctx: Context, memory_id: str) -> dict[str, Any]:
        """Read one memory by its id (as returned by remember or recall)."""
        me = resolve(ctx)
        return _memory(me.hive.get(memory_id))

    @register
    def update(
        ctx: Context,
        memory_id: str,
        content: str | None = None,
        data: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        importance: float | None = None,
        expected_version: int | None = None,
        on_conflict: str | None = None,
    ) -> dict[str, Any]:
        """Change a memory; the previous version is kept in its history.

        Args:
            memory_id: The memory to change.
            content: New text, if it changes.
            data: New structured details (replace the old ones), if they change.
            tags: New tags, if they change.
            importance: New importance, if it changes.
            expected_version: The version you read; if someone changed the memory since, on_conflict decides.
            on_conflict: What to do then: "reject" (fail and tell you the current version: read it again
                and retry), "merge" (keep both changes: your fields win where you both changed the same one)
                or "last_writer_wins" (write your fields over theirs). Leave it out for the namespace's default.
        """
        me = resolve(ctx)
        changes: dict[str, Any] = {"content": content, "data": data, "tags": tags, "importance": importance}
        given = {k: v for k, v in changes.items() if v is not None}
        return _memory(me.hive.update(memory_id, expected_version=expected_version, on_conflict=on_conflict, **given))

    @register
    def forget(ctx: Context, memory_id: str) -> dict[str, int]:
        """Delete a memory that is wrong or no longer useful."""
        me = resolve(ctx)
        return {"deleted": me.hive.forget(memory_id)}

    @register
    def relate(ctx: Context, src_id: str, dst_id: str, type: str, strength: float = 1.0) -> dict[str, Any]:
        """Link two memories, e.g. a fix to the bug it solved ("fixes") or a step to its plan ("part_of")."""
        me = resolve(ctx)
        return me.hive.relate(src_id, dst_id, type, strength=strength).to_dict()

    @register
    def remember_episode(
        ctx: Context, context: str, action: str, outcome: str, success: bool, lesson: str | None = None
    ) -> dict[str, Any]:
        """Record an attempt at a task so you and others can learn from it.

        Args:
            context: The situation and goal.
            action: What you did.
            outcome: What happened.
            success: Whether it worked.
            lesson: What to do (or avoid) next time, if there is one.
        """
        me = resolve(ctx)
        return _memory(
            me.hive.remember_episode(
                me.namespace,
                context=context,
                action=action,
                outcome=outcome,
                success=success,
                lesson=lesson,
                agent_id=me.agent_id,
            )
        )

    @register
    def upsert_entity(ctx: Context, type: str, name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create or update what you know about a thing (a service, person, file...): one record per type and name.

        Args:
            type: What it is, e.g. "service" or "person" (lowercase).
            name: Its name.
            properties: Facts about it; merged into what is stored.
        """
        me = resolve(ctx)
        return _memory(me.hive.upsert_entity(me.namespace, type, name, properties, agent_id=me.agent_id))

    @register
    def add_rule(ctx: Context, text: str, rule_type: str = "guideline", confidence: float = 0.5) -> dict[str, Any]:
        """Store a rule you learned or were given, e.g. "always run the migrations before deploying".

        Args:
            text: The rule.
            rule_type: guideline, constraint or preference.
            confidence: 0 to 1; how sure you are.
        """
        me = resolve(ctx)
        return _memory(
            me.hive.add_rule(me.namespace, text, rule_type=rule_type, confidence=confidence, agent_id=me.agent_id)
        )

    @register
    def context_for(ctx: Context, task: str, k: int = 5, token_budget: int | None = None) -> dict[str, Any]:
        """Your own past attempts most like a task, as text for your prompt: what worked first, with lessons.

        Args:
            task: What you are about to do, in plain words.
            k: At most this many past attempts.
            token_budget: Most tokens the text may take; leave it out for no limit.
        """
        me = resolve(ctx)
        return me.hive.context_for(me.agent_id, task, k=k, token_budget=token_budget).to_dict()

    @register
    def register_agent(
        ctx: Context, specializations: list[str], metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Say what you are good at, so that tasks can be given to the agent best suited for them.

        Args:
            specializations: Your skills, e.g. ["python", "database migrations"].
            metadata: Anything else about you (model, cost...).
        """
        me = resolve(ctx)
        return me.hive.register_agent(
            me.namespace, me.agent_id, specializations=specializations, metadata=metadata
        ).to_dict()

    @register
    def record_outcome(
        ctx: Context,
        task: str,
        success: bool,
        duration: float | None = None,
        notes: str | None = None,
        lesson: str | None = None,
    ) -> dict[str, Any]:
        """Record how a task went: kept as an attempt you can learn from, and counted in your track record.

        Args:
            task: What the task was.
            success: Whether it worked.
            duration: Seconds it took, if you know.
            notes: What you did.
            lesson: What to do (or avoid) next time, if there is one.
        """
        me = resolve(ctx)

        def record() -> Any:
            return me.hive.record_outcome(
                me.agent_id,
                task,
                namespace=me.namespace,
                success=success,
                duration=duration,
                notes=notes,
                lesson=lesson,
            )

        try:
            outcome = record()
        except NotFound:  # the first outcome of an agent that never registered: register it as it is
            me.hive.register_agent(me.namespace, me.agent_id)
            outcome = record()
        return {"episode": _memory(outcome.episode), "profile": outcome.profile.to_dict()}

    @register
    def select_agent(
        ctx: Context, task: str, candidates: list[str] | None = None, skills: list[str] | None = None
    ) -> list[Any]:
        """Rank the agents you can see for a task: who knows the area, who did well at tasks like it, who succeeds.

        Args:
            task: What is to be done.
            candidates: Only these agents (their names); leave it out for every registered one you can see.
            skills: Skills the task needs; without them the task's words are matched to specializations.
        """
        me = resolve(ctx)
        return [score.to_dict() for score in me.hive.select_agent(task, candidates, skills=skills or ())]

    return mcp


def from_request(ctx: Context) -> Agent:
    """The agent the server authenticated for the HTTP request carrying this tool call."""
    request = ctx.request_context.request
    agent = request.scope.get("state", {}).get(AGENT_STATE) if isinstance(request, Request) else None
    if not isinstance(agent, Agent):
        raise Unauthenticated("this MCP endpoint serves only requests the HiveMem server authenticated")
    return agent
