"""Plans: sub-tasks with dependencies, validated, ordered in parallel levels, assigned and tracked.

A plan is a set of tasks, each with a description, the skills it needs and the
tasks it depends on. :func:`parse_tasks` validates them (an unknown dependency
or a cycle is InvalidInput naming it) and :func:`levels` orders them
topologically in parallel levels (Kahn's algorithm: level 0 depends on nothing,
level n only on earlier levels, so a level's tasks can run side by side).

Every task is in one of :data:`TASK_STATES` and moves only along
:data:`TRANSITIONS`, the one table of what may follow what. A task runs only
when every task it depends on is done (it may be assigned earlier).

Plans live in HiveMem as memory records, so they get versions, history,
events, grants, export and every deployment without tables of their own: the
plan is a ``plan`` record keyed ``plan:{plan_id}``, each task a ``task`` record
keyed ``task:{plan_id}:{task_id}`` in the same namespace. A transition reads
the task and writes its next version in one write transaction (the row is
locked on PostgreSQL, the database on SQLite), so of two agents claiming one
task exactly one wins; the other meets :class:`~hivemem.errors.InvalidTransition`.
Recall leaves these records out unless ``kinds`` asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from hivemem import validation as v
from hivemem.clock import to_datetime
from hivemem.errors import InvalidInput, InvalidTransition, NotFound, VersionConflict
from hivemem.models import Memory
from hivemem.storage.base import MemoryFilter, StoreTx

PLAN_KIND = "plan"
TASK_KIND = "task"

#: Every state a task can be in.
TASK_STATES = ("pending", "assigned", "running", "done", "failed", "cancelled")

#: The one table of allowed transitions: state -> the states it may move to.
#: ``assigned -> pending`` hands a task back; ``failed -> pending`` retries it;
#: ``done`` and ``cancelled`` are final.
TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "pending": frozenset({"assigned", "cancelled"}),
        "assigned": frozenset({"pending", "running", "cancelled"}),
        "running": frozenset({"done", "failed", "cancelled"}),
        "done": frozenset(),
        "failed": frozenset({"pending", "cancelled"}),
        "cancelled": frozenset(),
    }
)

#: States in which a task belongs to an agent.
HELD_STATES = frozenset({"assigned", "running", "done", "failed"})
#: Most tasks in one plan.
MAX_TASKS = 1000
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_ID_RULE = "must be 1-64 letters, digits or _ . @ - (starting with a letter, digit or _)"
_TASK_FIELDS = frozenset({"id", "description", "skills", "depends_on"})


def plan_key(plan_id: str) -> str:
    """The key of a plan's record."""
    return f"plan:{plan_id}"


def task_key(plan_id: str, task_id: str) -> str:
    """The key of a task's record."""
    return f"task:{plan_id}:{task_id}"


def checked_id(value: object, field: str) -> str:
    """A plan or task id: short, and safe in a key and a URL path.

    Raises:
        InvalidInput: Anything else.
    """
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(field, _ID_RULE, value=repr(value)[:80])
    return value


def checked_state(value: object, field: str = "state") -> str:
    """One of :data:`TASK_STATES`.

    Raises:
        InvalidInput: Anything else.
    """
    if not isinstance(value, str) or value not in TASK_STATES:
        raise InvalidInput(field, f"must be one of {', '.join(TASK_STATES)}", value=repr(value)[:80])
    return value


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One validated task of a plan being created."""

    id: str
    description: str
    skills: tuple[str, ...]
    depends_on: tuple[str, ...]


def parse_tasks(tasks: object, max_text_bytes: int) -> tuple[TaskSpec, ...]:
    """Validate a plan's tasks: dicts of ``id``, ``description``, ``skills`` and ``depends_on``.

    Raises:
        InvalidInput: A task is malformed (``field`` reads ``tasks[2].depends_on``), an id
            repeats, a dependency names no task of the plan, or the dependencies make a
            cycle (``field`` is ``tasks``; ``cycle`` lists it in order).
    """
    if isinstance(tasks, str | bytes | Mapping) or not isinstance(tasks, Iterable):
        raise InvalidInput("tasks", "must be a list of tasks: {'id', 'description', 'skills', 'depends_on'}")
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    for index, task in enumerate(tasks):
        where = f"tasks[{index}]"
        if len(specs) >= MAX_TASKS:
            raise InvalidInput("tasks", f"at most {MAX_TASKS} tasks in one plan")
        if not isinstance(task, Mapping):
            raise InvalidInput(where, "must be a dict with id, description, skills and depends_on")
        unknown = sorted(str(k) for k in set(task) - _TASK_FIELDS)
        if unknown:
            raise InvalidInput(f"{where}.{unknown[0]}", "unknown task field (id, description, skills, depends_on)")
        task_id = checked_id(task.get("id"), f"{where}.id")
        if task_id in seen:
            raise InvalidInput(f"{where}.id", f"task id {task_id!r} appears twice")
        seen.add(task_id)
        description = task.get("description")
        if not isinstance(description, str) or not description.strip():
            raise InvalidInput(f"{where}.description", "must be non-empty text")
        v.content(description.strip(), max_text_bytes, f"{where}.description")
        skills = v.tags(task.get("skills", ()), f"{where}.skills")
        depends = task.get("depends_on", ())
        if isinstance(depends, str) or not isinstance(depends, Iterable) or isinstance(depends, Mapping):
            raise InvalidInput(f"{where}.depends_on", "must be a list of task ids")
        deps = tuple(dict.fromkeys(checked_id(d, f"{where}.depends_on") for d in depends))
        specs.append(TaskSpec(task_id, v.encodable(description.strip(), f"{where}.description"), skills, deps))
    if not specs:
        raise InvalidInput("tasks", "a plan needs at least one task")
    for index, spec in enumerate(specs):
        for dep in spec.depends_on:
            if dep not in seen:
                raise InvalidInput(f"tasks[{index}].depends_on", f"unknown task {dep!r}", task=spec.id, unknown=dep)
    levels(specs)  # refuses a cycle
    return tuple(specs)


def levels(specs: Sequence[TaskSpec]) -> tuple[tuple[str, ...], ...]:
    """Tasks in parallel levels by Kahn's algorithm; within a level, in the order given.

    A task's level is one more than the highest level of its dependencies, so
    every level can run side by side once the levels before it are done.
    Every dependency must name a task of ``specs`` (:func:`parse_tasks` checks it).

    Raises:
        InvalidInput: The dependencies make a cycle; ``cycle`` lists its tasks in order.
    """
    position = {s.id: n for n, s in enumerate(specs)}
    unmet = {s.id: len(s.depends_on) for s in specs}
    dependents: dict[str, list[str]] = {s.id: [] for s in specs}
    for s in specs:
        for dep in s.depends_on:
            dependents[dep].append(s.id)
    out: list[tuple[str, ...]] = []
    level = [s.id for s in specs if not s.depends_on]
    while level:
        out.append(tuple(level))
        freed = []
        for task in level:
            for dependent in dependents[task]:
                unmet[dependent] -= 1
                if unmet[dependent] == 0:
                    freed.append(dependent)
        level = sorted(freed, key=position.__getitem__)
    placed = {task for level_ in out for task in level_}
    if len(placed) < len(specs):
        waiting = {s.id: set(s.depends_on) for s in specs if s.id not in placed}
        cycle = _a_cycle(waiting, placed)
        raise InvalidInput("tasks", f"dependency cycle: {' -> '.join([*cycle, cycle[0]])}", cycle=cycle)
    return tuple(out)


def _a_cycle(waiting: Mapping[str, set[str]], done: set[str]) -> list[str]:
    """One cycle among tasks that wait on each other (every one of them waits on another)."""
    path: list[str] = []
    at = next(iter(waiting))
    while at not in path:
        path.append(at)
        at = sorted(waiting[at] - done)[0]
    return path[path.index(at) :]


def plan_content(plan_id: str, title: str | None, specs: Sequence[TaskSpec], max_bytes: int) -> str:
    """The searchable text of a plan record: its title and every task, cut to ``max_bytes``.

    Each task's own record holds its whole description, so a plan of many long
    tasks may keep only the start of the list here rather than be refused.
    """
    lines = [f"Plan {plan_id}: {title}" if title else f"Plan {plan_id}"]
    lines += [f"- {s.id}: {s.description}" for s in specs]
    text = "\n".join(lines)
    encoded = text.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def task_content(spec: TaskSpec) -> str:
    """The searchable text of a task record: its description and skills."""
    return spec.description + (f"\nSkills: {', '.join(spec.skills)}" if spec.skills else "")


def task_data(plan_id: str, spec: TaskSpec, level: int) -> dict[str, Any]:
    """The data of a new task record (pending, nobody's)."""
    return {
        "plan_id": plan_id,
        "task_id": spec.id,
        "description": spec.description,
        "skills": list(spec.skills),
        "depends_on": list(spec.depends_on),
        "level": level,
        "state": "pending",
        "agent": None,
        "attempts": 0,
        "notes": None,
    }


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a plan, as stored now.

    Attributes:
        id: The task's id within its plan.
        plan_id: Its plan.
        description: What to do.
        skills: Skills it needs.
        depends_on: Tasks that must be done before it runs.
        level: Its parallel level (0: depends on nothing).
        state: One of ``pending``, ``assigned``, ``running``, ``done``, ``failed``, ``cancelled``.
        agent: Who holds it (assigned, running, done, failed; and a cancelled task's last holder), else None.
        attempts: How many times it started running.
        notes: The note of its last transition.
        version: The task record's version (pass as ``expected_version``).
        memory_id: The task record's memory id (its ``history`` shows every transition).
        updated_at: When it last changed.
    """

    id: str
    plan_id: str
    description: str
    skills: tuple[str, ...]
    depends_on: tuple[str, ...]
    level: int
    state: str
    agent: str | None
    attempts: int
    notes: str | None
    version: int
    memory_id: str
    updated_at: datetime

    @classmethod
    def of(cls, memory: Memory) -> Task:
        """The task a ``task`` record holds."""
        d = memory.data
        assert memory.updated_at is not None
        return cls(
            id=d["task_id"],
            plan_id=d["plan_id"],
            description=d["description"],
            skills=tuple(d.get("skills") or ()),
            depends_on=tuple(d.get("depends_on") or ()),
            level=int(d.get("level", 0)),
            state=d["state"],
            agent=d.get("agent"),
            attempts=int(d.get("attempts", 0)),
            notes=d.get("notes"),
            version=memory.version,
            memory_id=memory.id,
            updated_at=memory.updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["skills"], out["depends_on"] = list(self.skills), list(self.depends_on)
        out["updated_at"] = self.updated_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Task:
        """Rebuild a task from :meth:`to_dict` output."""
        values = dict(payload)
        values["skills"] = tuple(values["skills"])
        values["depends_on"] = tuple(values["depends_on"])
        values["updated_at"] = datetime.fromisoformat(values["updated_at"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class PlanProgress:
    """How far a plan is.

    Attributes:
        total: How many tasks it has.
        by_state: How many are in each state (every state named, zeros included).
        fraction: Done tasks over tasks not cancelled (1.0 when every task is cancelled).
        finished: Every task is done or cancelled.
    """

    total: int
    by_state: Mapping[str, int]
    fraction: float
    finished: bool

    @classmethod
    def of(cls, tasks: Sequence[Task]) -> PlanProgress:
        """The progress of these tasks."""
        counts = dict.fromkeys(TASK_STATES, 0)
        for task in tasks:
            counts[task.state] += 1
        live = len(tasks) - counts["cancelled"]
        fraction = counts["done"] / live if live else 1.0
        return cls(len(tasks), counts, fraction, counts["done"] + counts["cancelled"] == len(tasks))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "total": self.total,
            "by_state": dict(self.by_state),
            "fraction": self.fraction,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PlanProgress:
        """Rebuild from :meth:`to_dict` output."""
        return cls(payload["total"], dict(payload["by_state"]), payload["fraction"], payload["finished"])


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan with its tasks as stored now.

    Attributes:
        id: The plan's id (unique in its namespace).
        namespace: Where it is stored.
        title: What it is for.
        tasks: Its tasks, in the order they were given.
        levels: Task ids in parallel levels: each level depends only on earlier ones.
        progress: Counts by state and the fraction done.
        memory_id: The plan record's memory id.
        created_at: When it was created.
    """

    id: str
    namespace: str
    title: str | None
    tasks: tuple[Task, ...]
    levels: tuple[tuple[str, ...], ...]
    progress: PlanProgress
    memory_id: str
    created_at: datetime

    @classmethod
    def of(cls, record: Memory, tasks: Iterable[Memory]) -> Plan:
        """The plan of a ``plan`` record and its ``task`` records (in any order; others are ignored)."""
        by_id = {t.data.get("task_id"): Task.of(t) for t in tasks if t.data.get("plan_id") == record.data["plan_id"]}
        ordered = tuple(by_id[i] for i in record.data["tasks"] if i in by_id)
        assert record.created_at is not None
        return cls(
            id=record.data["plan_id"],
            namespace=record.namespace,
            title=record.data.get("title"),
            tasks=ordered,
            levels=tuple(tuple(level) for level in record.data["levels"]),
            progress=PlanProgress.of(ordered),
            memory_id=record.id,
            created_at=record.created_at,
        )

    def task(self, task_id: str) -> Task:
        """The task with this id.

        Raises:
            KeyError: The plan has no such task.
        """
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def ready(self) -> tuple[Task, ...]:
        """Pending tasks whose dependencies are all done: what can be assigned and run now."""
        done = {t.id for t in self.tasks if t.state == "done"}
        return tuple(t for t in self.tasks if t.state == "pending" and set(t.depends_on) <= done)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        return {
            "id": self.id,
            "namespace": self.namespace,
            "title": self.title,
            "tasks": [t.to_dict() for t in self.tasks],
            "levels": [list(level) for level in self.levels],
            "progress": self.progress.to_dict(),
            "memory_id": self.memory_id,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Plan:
        """Rebuild a plan from :meth:`to_dict` output."""
        return cls(
            id=payload["id"],
            namespace=payload["namespace"],
            title=payload["title"],
            tasks=tuple(Task.from_dict(t) for t in payload["tasks"]),
            levels=tuple(tuple(level) for level in payload["levels"]),
            progress=PlanProgress.from_dict(payload["progress"]),
            memory_id=payload["memory_id"],
            created_at=datetime.fromisoformat(payload["created_at"]),
        )


def transitioned(current: Memory, to: str, agent: str | None, notes: str | None, done: set[str]) -> dict[str, Any]:
    """The data of a task record after moving to ``to``, or InvalidTransition.

    Args:
        current: The task record as stored.
        to: The wanted state (already one of :data:`TASK_STATES`).
        agent: Who asks: required to assign; when given later, it must be the holder.
        notes: A note kept with the task (None keeps the last one).
        done: Ids of the plan's tasks that are done.

    Raises:
        InvalidTransition: The table does not allow it, the task is held by another
            agent, or (to run) a dependency is not done.
        InvalidInput: Assigning without an agent.
    """
    data = dict(current.data)
    task, state, holder = data["task_id"], data["state"], data.get("agent")
    details = {"task": task, "state": state, "to": to}
    if to not in TRANSITIONS[state]:
        allowed = ", ".join(sorted(TRANSITIONS[state])) or "nothing (it is final)"
        who = f" by {holder}" if holder and state in HELD_STATES else ""
        raise InvalidTransition(
            f"task {task!r} is {state}{who}: it may move to {allowed}, not {to}", holder=holder, **details
        )
    if to == "assigned" and agent is None:
        raise InvalidInput("agent", "is required to assign a task")
    if to != "assigned" and agent is not None and holder is not None and agent != holder:
        raise InvalidTransition(f"task {task!r} is held by {holder}, not {agent}", holder=holder, **details)
    if to == "running":
        waiting = [d for d in data.get("depends_on") or () if d not in done]
        if waiting:
            raise InvalidTransition(
                f"task {task!r} waits on {', '.join(waiting)}: they must be done first", waiting_on=waiting, **details
            )
        data["attempts"] = int(data.get("attempts", 0)) + 1
    data["state"] = to
    if to == "assigned":
        data["agent"] = agent
    elif to == "pending":
        data["agent"] = None
    if notes is not None:
        data["notes"] = notes
    return data


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_plan(memory: Memory) -> bool:
    """Whether a record is a plan this module wrote (a user's own ``plan`` record may hold anything)."""
    d = memory.data
    levels = d.get("levels")
    return (
        memory.kind == PLAN_KIND
        and isinstance(d.get("plan_id"), str)
        and _strings(d.get("tasks"))
        and isinstance(levels, list)
        and all(_strings(level) for level in levels)
        and (d.get("title") is None or isinstance(d.get("title"), str))
    )


def is_task(memory: Memory) -> bool:
    """Whether a record is a task this module wrote (a user's own ``task`` record may hold anything)."""
    d = memory.data
    return (
        memory.kind == TASK_KIND
        and d.get("state") in TASK_STATES
        and all(isinstance(d.get(name), str) for name in ("plan_id", "task_id", "description"))
        and _strings(d.get("skills"))
        and _strings(d.get("depends_on"))
        and _whole(d.get("level"))
        and _whole(d.get("attempts"))
        and (d.get("agent") is None or isinstance(d.get("agent"), str))
        and (d.get("notes") is None or isinstance(d.get("notes"), str))
    )


def read_plan(tx: StoreTx, namespace: str, plan_id: str, now: float) -> Plan | None:
    """The plan ``plan_id`` in exactly ``namespace`` with its tasks, read in ``tx``; None if there is none."""
    record = tx.get_by_key(namespace, plan_key(plan_id), now)
    if record is None or not is_plan(record):
        return None
    flt = MemoryFilter(now=now, namespace=namespace, kinds=(TASK_KIND,), where=v.where({"plan_id": plan_id}))
    tasks = tx.list(flt, "created_at", False, None, MAX_TASKS + 1)
    return Plan.of(record, [t for t in tasks if t.namespace == namespace and is_task(t)])


@dataclass(frozen=True, slots=True)
class Move:
    """A validated transition request: which task, to what state, by whom.

    :meth:`apply` runs inside one write transaction: the task's read (which
    locks its row on PostgreSQL; SQLite has one writer) and its next version
    cannot be split by another writer, which is what makes a claim exclusive.
    """

    namespace: str
    plan_id: str
    task_id: str
    to: str
    agent: str | None
    notes: str | None
    expected_version: int | None

    def apply(self, tx: StoreTx, now: float) -> Task:
        """Write the task's next version and a ``task.state_changed`` event; the task after the move.

        Raises:
            NotFound: No such task.
            VersionConflict: The stored version is not ``expected_version``.
            InvalidTransition: See :func:`transitioned`.
        """
        ns, pid, tid = self.namespace, self.plan_id, self.task_id
        current = tx.get_by_key(ns, task_key(pid, tid), now)
        if current is None or not is_task(current):
            raise NotFound(f"no task {tid!r} in plan {pid!r} in {ns}", plan_id=pid, task_id=tid, namespace=ns)
        if self.expected_version is not None and current.version != self.expected_version:
            raise VersionConflict(
                f"task {tid!r} is at version {current.version}, not {self.expected_version}",
                id=current.id,
                current_version=current.version,
                expected_version=self.expected_version,
                current=current.to_dict(),
            )
        done = set()
        if self.to == "running":
            for dep in current.data["depends_on"]:
                found = tx.get_by_key(ns, task_key(pid, dep), now)
                if found is not None and is_task(found) and found.data["state"] == "done":
                    done.add(dep)
        data = transitioned(current, self.to, self.agent, self.notes, done)
        memory = replace(
            current,
            data=data,
            agent_id=data["agent"] or current.agent_id,
            version=current.version + 1,
            updated_at=to_datetime(now),
        )
        tx.replace(memory, current)
        change = {"plan_id": pid, "task_id": tid, "from": current.data["state"], "to": self.to, "agent": data["agent"]}
        tx.record_event(ns, "task.state_changed", current.id, {**change, "version": memory.version})
        return Task.of(memory)
