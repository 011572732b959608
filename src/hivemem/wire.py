"""The HTTP API's shape, shared by the server and the client: one route per Hive method.

Each :class:`Route` names a :class:`hivemem.Hive` method, its HTTP method and
path. Path parameters come from the path; the other arguments travel in the
query string (GET, DELETE) or as one JSON object (POST, PATCH), by the
method's own parameter names. The server binds them to the method and calls
it on the caller's view of the Hive; the client is the same method sending
them. Because both sides take names and defaults from the Hive's signature,
the HTTP API cannot drift from the Python one.

Values that JSON lacks travel as: time arguments (``occurred_at``, ``since``...)
in ISO 8601, a ``ttl`` timedelta as seconds, imported memories as
:meth:`Memory.to_dict`, a lease as :meth:`Lease.to_dict` and a fence as
``{"resource", "token"}``. Anything else that is not JSON is refused, as the Hive
refuses it; a conflict strategy travels by name, and a function given as one is
refused before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hivemem.agents import AgentProfile, AgentScore, ExperienceContext, Outcome
from hivemem.checkpoints import StepRecord, Workflow
from hivemem.errors import InvalidInput
from hivemem.events import Event
from hivemem.leases import Fence, Lease
from hivemem.models import Conflict, Group, Hit, Memory, Page, Related, Relation
from hivemem.packing import Pack
from hivemem.plans import Plan, Task
from hivemem.validation import timestamp
from hivemem.working import WorkingMessage, WorkingStats

#: Workflow checkpoints are idempotent by design (a step number keeps its first record), so they need no key.
WORKFLOW_PRIMITIVES = (
    "start_workflow",
    "record_steps",
    "finish_workflow",
    "cancel_workflow",
    "workflows",
)

#: Arguments that are datetimes in Python and ISO 8601 text on the wire.
TIME_ARGUMENTS = frozenset({"occurred_at", "expires_at", "since", "until", "deadline", "started_at"})
_PATH_PARAM = re.compile(r"{(\w+)}")
_NO_KEY = frozenset(
    {
        "list",
        "recall",
        "sweep",
        "events",
        "inbox_messages",
        "conflicts",
        "plans",
        "select_agent",
        "context_for",
        "working_messages",
        "pack",
        *WORKFLOW_PRIMITIVES,
    }
)
#: Arguments that take a conflict strategy: a name travels, a function cannot.
STRATEGY_ARGUMENTS = frozenset({"on_conflict", "strategy"})


def _memory(payload: Any) -> Memory:
    return Memory.from_dict(payload)


def _hit(payload: Any) -> Hit:
    return Hit(Memory.from_dict(payload["memory"]), payload["score"], payload["scores"])


def _relation(payload: Any) -> Relation:
    return Relation(
        payload["src_id"],
        payload["dst_id"],
        payload["type"],
        payload["strength"],
        datetime.fromisoformat(payload["created_at"]),
    )


def _related(payload: Any) -> Related:
    return Related(Memory.from_dict(payload["memory"]), _relation(payload["relation"]))


def _group(payload: Any) -> Group:
    return Group(payload["name"], payload["description"], datetime.fromisoformat(payload["created_at"]))


def _conflict(payload: Any) -> Conflict:
    return Conflict.from_dict(payload)


def _page(payload: Any) -> Page:
    return Page(tuple(Memory.from_dict(m) for m in payload["items"]), payload["next_cursor"])


def _each(decode: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    return lambda payload: [decode(item) for item in payload]


def _plain(payload: Any) -> Any:
    return payload


@dataclass(frozen=True, slots=True)
class Route:
    """One Hive method over HTTP.

    Attributes:
        name: The Hive method.
        method: GET, POST, PATCH or DELETE.
        path: Under the API root; ``{name}`` segments are arguments.
        decode: Turns the JSON result back into what the method returns.
        status: The success status.
        once: A write whose repeat would change more: the client sends an
            ``Idempotency-Key`` and the server applies it once per key
            (:meth:`hivemem.Hive.run_once`).
    """

    name: str
    method: str
    path: str
    decode: Callable[[Any], Any] = _plain
    status: int = 200
    once: bool = field(init=False)
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(_PATH_PARAM.findall(self.path)))
        # Reads (GET, and POST list/recall) and the idempotent sweep need no key.
        object.__setattr__(self, "once", self.method != "GET" and self.name not in _NO_KEY)

    @property
    def in_query(self) -> bool:
        """Whether the non-path arguments travel in the query string."""
        return self.method in ("GET", "DELETE")


ROUTES: tuple[Route, ...] = (
    Route("remember", "POST", "/v1/memories", _memory, 201),
    Route("remember_many", "POST", "/v1/memories/batch", _each(_memory), 201),
    Route("list", "POST", "/v1/memories/list", _page),
    Route("get", "GET", "/v1/memories/{memory_id}", _memory),
    Route("update", "PATCH", "/v1/memories/{memory_id}", _memory),
    Route("forget", "DELETE", "/v1/memories/{memory_id}"),
    Route("history", "GET", "/v1/memories/{memory_id}/history", _each(_memory)),
    Route("reinforce", "POST", "/v1/memories/{memory_id}/reinforce", _memory),
    Route("related", "GET", "/v1/memories/{memory_id}/related", _each(_related)),
    Route("children", "GET", "/v1/memories/{memory_id}/children", _each(_memory)),
    Route("get_by_key", "GET", "/v1/keyed", _memory),
    Route("recall", "POST", "/v1/recall", _each(_hit)),
    Route("stats", "GET", "/v1/stats"),
    Route("forget_namespace", "POST", "/v1/namespaces/forget"),
    Route("sweep", "POST", "/v1/sweep"),
    Route("remember_episode", "POST", "/v1/episodes", _memory, 201),
    Route("upsert_entity", "POST", "/v1/entities", _memory),
    Route("add_rule", "POST", "/v1/rules", _memory, 201),
    Route("relate", "POST", "/v1/relations", _relation, 201),
    Route("create_group", "POST", "/v1/groups", _group, 201),
    Route("add_to_group", "POST", "/v1/groups/{group}/members"),
    Route("group_members", "GET", "/v1/groups/{group}/members", _each(_memory)),
    Route("import_memories", "POST", "/v1/import"),
    Route("lock", "POST", "/v1/leases", Lease.from_dict, 201),
    Route("renew_lease", "POST", "/v1/leases/renew", Lease.from_dict),
    Route("release_lease", "POST", "/v1/leases/release"),
    Route("locks", "GET", "/v1/leases", _each(Lease.from_dict)),
    Route("events", "POST", "/v1/events/list", _each(Event.from_dict)),
    Route("send", "POST", "/v1/messages", Event.from_dict, 201),
    Route("inbox_messages", "POST", "/v1/inbox/messages", _each(Event.from_dict)),
    Route("ack", "POST", "/v1/inbox/ack"),
    Route("set_conflict_strategy", "POST", "/v1/conflict-strategies"),
    Route("get_conflict_strategy", "GET", "/v1/conflict-strategies"),
    Route("conflicts", "POST", "/v1/conflicts/list", _each(_conflict)),
    Route("create_plan", "POST", "/v1/plans", Plan.from_dict, 201),
    Route("plans", "POST", "/v1/plans/list", _each(Plan.from_dict)),
    Route("plan", "GET", "/v1/plans/{plan_id}", Plan.from_dict),
    Route("transition_task", "POST", "/v1/plans/{plan_id}/tasks/{task_id}/state", Task.from_dict),
    Route("assign_task", "POST", "/v1/plans/{plan_id}/tasks/{task_id}/assign", Task.from_dict),
    Route("register_agent", "POST", "/v1/agents", AgentProfile.from_dict),
    Route("agents", "GET", "/v1/agents", _each(AgentProfile.from_dict)),
    Route("record_outcome", "POST", "/v1/agents/outcomes", Outcome.from_dict, 201),
    Route("select_agent", "POST", "/v1/agents/select", _each(AgentScore.from_dict)),
    Route("context_for", "POST", "/v1/agents/context", ExperienceContext.from_dict),
    Route("working_append", "POST", "/v1/working/append", WorkingStats.from_dict),
    Route("working_messages", "POST", "/v1/working/messages", _each(WorkingMessage.from_dict)),
    Route("working_clear", "POST", "/v1/working/clear"),
    Route("working_flush", "POST", "/v1/working/flush"),
    Route("working_stats", "GET", "/v1/working/stats", WorkingStats.from_dict),
    Route("pack", "POST", "/v1/pack", Pack.from_dict),
    Route("start_workflow", "POST", "/v1/workflows", Workflow.from_dict),
    Route("workflows", "POST", "/v1/workflows/list", _each(Workflow.from_dict)),
    Route("get_workflow", "GET", "/v1/workflows/{workflow_id}", Workflow.from_dict),
    Route("record_steps", "POST", "/v1/workflows/{workflow_id}/steps", _each(StepRecord.from_dict)),
    Route("finish_workflow", "POST", "/v1/workflows/{workflow_id}/finish", Workflow.from_dict),
    Route("cancel_workflow", "POST", "/v1/workflows/{workflow_id}/cancel", Workflow.from_dict),
)
#: Server-sent events: :meth:`hivemem.Hive.follow` over HTTP (resume with ``Last-Event-ID``).
EVENT_STREAM = "/v1/events/stream"
ROUTES_BY_NAME = {route.name: route for route in ROUTES}


def arguments_to_wire(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as JSON-ready data, refusing what the Hive would refuse for its type.

    A time argument must be an aware datetime here: on the wire it becomes
    text, and text given in Python is an error, as it is for an embedded Hive.
    """
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if name == "items" and isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
            out[name] = [_item_to_wire(item, f"items[{i}]") for i, item in enumerate(value)]
        else:
            out[name] = _argument_to_wire(name, value, name)
    return out


def _item_to_wire(item: Any, where: str) -> Any:
    if not isinstance(item, Mapping):
        return to_wire(item, where)
    return {k: _argument_to_wire(k, v, f"{where}.{k}") for k, v in item.items()}


def _argument_to_wire(name: Any, value: Any, field: str) -> Any:
    if name == "lease" and isinstance(value, Lease):
        return value.to_dict()
    if name == "fence" and isinstance(value, Lease | Fence):
        return Fence.of(value).to_dict()
    if name in TIME_ARGUMENTS and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        # A whole number is a sequence number (events' ``since``); the method judges it as it travels.
        timestamp(value, field)  # raises InvalidInput for anything but an aware datetime
        assert isinstance(value, datetime)
        return value.isoformat()
    if name == "ttl" and isinstance(value, timedelta):
        return value.total_seconds()
    if name in STRATEGY_ARGUMENTS and callable(value):
        raise InvalidInput(
            field, "a function runs only in its own process; over HTTP name one: reject, last_writer_wins or merge"
        )
    return to_wire(value, field, top=True)


def to_wire(value: Any, name: str, *, top: bool = False) -> Any:
    """A value as JSON-ready data; ``name`` is the argument, for errors.

    Only what JSON has passes, as the Hive itself accepts only that in data:
    a datetime inside data is refused here as it is there. At the top of an
    argument any iterable becomes a list (as the Hive accepts any iterable of
    tags); inside data only lists and tuples are JSON arrays.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise InvalidInput(name, "object keys must be strings")
        return {k: to_wire(v, name) for k, v in value.items()}
    if isinstance(value, list | tuple) or (top and isinstance(value, Iterable) and not isinstance(value, bytes)):
        return [to_wire(v, name) for v in value]
    raise InvalidInput(name, f"must be JSON-serialisable, not {type(value).__name__}")


def from_wire(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments received by the server, with ISO 8601 times back as datetimes."""
    out = dict(arguments)
    for name in TIME_ARGUMENTS & out.keys():
        out[name] = _datetime(out[name], name)
    if isinstance(out.get("items"), list):
        out["items"] = [from_wire(item) if isinstance(item, Mapping) else item for item in out["items"]]
    return out


def _datetime(value: Any, name: str) -> Any:
    if not isinstance(value, str):
        return value  # the Hive refuses anything but a datetime with the usual message
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(name, "must be a datetime with a timezone (ISO 8601 text)") from None


#: Results that travel as their ``to_dict()``.
_RECORDS = (
    Memory,
    Hit,
    Related,
    Relation,
    Group,
    Lease,
    Event,
    Conflict,
    Plan,
    Task,
    AgentProfile,
    AgentScore,
    Outcome,
    ExperienceContext,
    WorkingStats,
    WorkingMessage,
    Pack,
    Workflow,
    StepRecord,
)


def to_json(result: Any) -> Any:
    """A Hive method's result as JSON-ready data (reversed by the route's ``decode``)."""
    if isinstance(result, _RECORDS):
        return result.to_dict()
    if isinstance(result, Page):
        return {"items": [m.to_dict() for m in result.items], "next_cursor": result.next_cursor}
    if isinstance(result, list):
        return [to_json(item) for item in result]
    return result
