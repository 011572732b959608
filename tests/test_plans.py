"""Plans on every deployment: validation, parallel levels, the transition table, claims and events."""

from __future__ import annotations

import multiprocessing
import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hivemem
from hivemem import Hive, InvalidInput, InvalidTransition, NotFound, PayloadTooLarge, VersionConflict
from hivemem.plans import TASK_STATES, TRANSITIONS, TaskSpec, levels, parse_tasks

SPAWN = multiprocessing.get_context("spawn")
NS = "team/planning"


def pipeline() -> list[dict[str, Any]]:
    return [
        {"id": "fetch", "description": "fetch the raw invoices", "skills": ["http"]},
        {"id": "clean", "description": "clean the invoices", "depends_on": ["fetch"]},
        {"id": "docs", "description": "write the import guide"},
        {"id": "load", "description": "load invoices into the ledger", "depends_on": ["clean", "fetch"]},
        {"id": "report", "description": "report the totals", "depends_on": ["load", "docs"]},
    ]


def everything(hive: Hive) -> list[Any]:
    return [m.to_dict() for m in hive.export()]


# --------------------------------------------------------------------------- creating and reading


def test_a_plan_is_ordered_in_parallel_levels(hive: Hive) -> None:
    plan = hive.create_plan(NS, pipeline(), plan_id="invoices", title="Import invoices")
    assert plan.id == "invoices" and plan.namespace == NS and plan.title == "Import invoices"
    assert plan.levels == (("fetch", "docs"), ("clean",), ("load",), ("report",))
    assert [t.id for t in plan.tasks] == ["fetch", "clean", "docs", "load", "report"]
    assert {t.id: t.level for t in plan.tasks} == {"fetch": 0, "docs": 0, "clean": 1, "load": 2, "report": 3}
    assert all(t.state == "pending" and t.agent is None and t.version == 1 for t in plan.tasks)
    assert plan.task("fetch").skills == ("http",)
    assert plan.task("load").depends_on == ("clean", "fetch")
    assert [t.id for t in plan.ready()] == ["fetch", "docs"]
    assert plan.progress.total == 5 and plan.progress.by_state["pending"] == 5
    assert plan.progress.fraction == 0.0 and not plan.progress.finished
    assert hive.plan("invoices", namespace=NS) == plan


def test_a_plan_gets_an_id_and_plans_lists_them_newest_first(hive: Hive, clock: hivemem.ManualClock) -> None:
    first = hive.create_plan(NS, [{"id": "a", "description": "first thing"}])
    clock.advance(1)
    second = hive.create_plan(f"{NS}/sub", [{"id": "a", "description": "second thing"}])
    assert first.id != second.id
    assert [p.id for p in hive.plans("team")] == [second.id, first.id]
    assert [p.id for p in hive.plans(f"{NS}/sub")] == [second.id]
    assert len(hive.plans("team", limit=1)) == 1


def test_a_taken_plan_id_is_refused(hive: Hive) -> None:
    hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p1")
    before = everything(hive)
    with pytest.raises(InvalidInput) as err:
        hive.create_plan(NS, [{"id": "b", "description": "y"}], plan_id="p1")
    assert err.value.field == "plan_id"
    assert everything(hive) == before
    assert hive.create_plan(f"{NS}/other", [{"id": "b", "description": "y"}], plan_id="p1").id == "p1"


def test_an_unknown_dependency_is_named(hive: Hive) -> None:
    tasks = [{"id": "a", "description": "x"}, {"id": "b", "description": "y", "depends_on": ["a", "ghost"]}]
    with pytest.raises(InvalidInput) as err:
        hive.create_plan(NS, tasks)
    assert err.value.field == "tasks[1].depends_on"
    assert "ghost" in err.value.message and err.value.details["unknown"] == "ghost"
    assert everything(hive) == []


@pytest.mark.parametrize(
    ("edges", "members"),
    [
        ({"a": ["a"]}, {"a"}),
        ({"a": ["b"], "b": ["a"]}, {"a", "b"}),
        ({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"], "e": ["d"]}, {"b", "c", "d"}),
    ],
)
def test_a_cycle_is_refused_naming_its_members(hive: Hive, edges: dict[str, list[str]], members: set[str]) -> None:
    tasks = [{"id": t, "description": f"task {t}", "depends_on": deps} for t, deps in edges.items()]
    with pytest.raises(InvalidInput) as err:
        hive.create_plan(NS, tasks)
    assert err.value.field == "tasks"
    assert set(err.value.details["cycle"]) == members
    assert "cycle" in err.value.message and all(m in err.value.message for m in members)
    assert everything(hive) == []


@pytest.mark.parametrize(
    ("tasks", "field"),
    [
        ([], "tasks"),
        ("a", "tasks"),
        ({"id": "a"}, "tasks"),
        ([42], "tasks[0]"),
        ([{"description": "x"}], "tasks[0].id"),
        ([{"id": "a b", "description": "x"}], "tasks[0].id"),
        ([{"id": "a/b", "description": "x"}], "tasks[0].id"),
        ([{"id": "a", "description": " "}], "tasks[0].description"),
        ([{"id": "a", "description": 5}], "tasks[0].description"),
        ([{"id": "a", "description": "x", "skills": "python"}], "tasks[0].skills"),
        ([{"id": "a", "description": "x", "depends_on": "b"}], "tasks[0].depends_on"),
        ([{"id": "a", "description": "x", "owner": "me"}], "tasks[0].owner"),
        ([{"id": "a", "description": "x"}, {"id": "a", "description": "y"}], "tasks[1].id"),
    ],
)
def test_malformed_tasks_are_refused_and_nothing_is_written(hive: Hive, tasks: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        hive.create_plan(NS, tasks)
    assert err.value.field == field
    assert everything(hive) == []


def test_bad_plan_arguments(hive: Hive) -> None:
    task = [{"id": "a", "description": "x"}]
    for kwargs, field in (
        ({"plan_id": "has space"}, "plan_id"),
        ({"plan_id": ""}, "plan_id"),
        ({"title": "  "}, "title"),
    ):
        with pytest.raises(InvalidInput) as err:
            hive.create_plan(NS, task, **kwargs)
        assert err.value.field == field
    with pytest.raises(InvalidInput):
        hive.create_plan("bad namespace!", task)
    with pytest.raises(NotFound):
        hive.plan("nothing", namespace=NS)
    with pytest.raises(InvalidInput):
        hive.plan("a b", namespace=NS)


@st.composite
def dags(draw: st.DrawFn) -> list[TaskSpec]:
    """Random dependency graphs without cycles: a task depends only on tasks given before it."""
    n = draw(st.integers(1, 25))
    specs = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=4)) if i else set()
        specs.append(TaskSpec(f"t{i}", f"task {i}", (), tuple(f"t{d}" for d in sorted(deps))))
    order = draw(st.permutations(specs))
    return list(order)


@settings(max_examples=200, deadline=None)
@given(dags())
def test_levels_put_each_task_one_after_its_latest_dependency(specs: list[TaskSpec]) -> None:
    ordered = levels(specs)
    level_of = {task: n for n, level in enumerate(ordered) for task in level}
    assert sorted(level_of) == sorted(s.id for s in specs)
    for spec in specs:
        assert level_of[spec.id] == 1 + max((level_of[d] for d in spec.depends_on), default=-1)
    position = {s.id: n for n, s in enumerate(specs)}
    assert all(list(level) == sorted(level, key=position.__getitem__) for level in ordered)


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_an_edge_back_up_a_chain_is_a_cycle(specs: list[TaskSpec], data: st.DataObject) -> None:
    by_id = {s.id: s for s in specs}
    chained = [s for s in specs if s.depends_on]
    if not chained:
        return
    start = data.draw(st.sampled_from(chained))
    path = [start.id]
    while by_id[path[-1]].depends_on:
        path.append(data.draw(st.sampled_from(by_id[path[-1]].depends_on)))
    top = by_id[path[-1]]
    looped = [TaskSpec(s.id, s.description, (), (*s.depends_on, start.id)) if s is top else s for s in specs]
    tasks = [{"id": s.id, "description": s.description, "depends_on": list(s.depends_on)} for s in looped]
    with pytest.raises(InvalidInput) as err:
        parse_tasks(tasks, 1000)
    cycle = err.value.details["cycle"]
    deps = {s.id: set(s.depends_on) for s in looped}
    # Each task of the reported cycle depends on the next, and the last on the first.
    assert all(cycle[(i + 1) % len(cycle)] in deps[task] for i, task in enumerate(cycle))


# --------------------------------------------------------------------------- transitions


def path_to(state: str) -> list[str]:
    """The shortest list of moves from ``pending`` to ``state`` along TRANSITIONS."""
    paths: dict[str, list[str]] = {"pending": []}
    queue = deque(["pending"])
    while queue:
        at = queue.popleft()
        for nxt in sorted(TRANSITIONS[at]):
            if nxt not in paths:
                paths[nxt] = [*paths[at], nxt]
                queue.append(nxt)
    return paths[state]


PAIRS = [(a, b) for a in TASK_STATES for b in TASK_STATES]


def test_every_state_is_reachable_and_the_table_names_only_states() -> None:
    assert set(TRANSITIONS) == set(TASK_STATES)
    assert all(targets <= set(TASK_STATES) for targets in TRANSITIONS.values())
    assert all(path_to(state) is not None for state in TASK_STATES)


def test_the_transition_table_is_enforced_both_ways(hive: Hive) -> None:
    tasks = [{"id": f"{a}-{b}", "description": f"from {a} to {b}"} for a, b in PAIRS]
    plan = hive.create_plan(NS, tasks, plan_id="table")
    for a, b in PAIRS:
        task_id = f"{a}-{b}"
        for move in path_to(a):
            hive.transition_task(plan.id, task_id, move, namespace=NS, agent="worker")
        before = hive.plan(plan.id, namespace=NS).task(task_id)
        assert before.state == a
        if b in TRANSITIONS[a]:
            after = hive.transition_task(plan.id, task_id, b, namespace=NS, agent="worker")
            assert (after.state, after.version) == (b, before.version + 1), (a, b)
        else:
            with pytest.raises(InvalidTransition) as err:
                hive.transition_task(plan.id, task_id, b, namespace=NS, agent="worker")
            assert err.value.details["task"] == task_id
            assert (err.value.details["state"], err.value.details["to"]) == (a, b)
            assert hive.plan(plan.id, namespace=NS).task(task_id) == before, (a, b)


def test_agents_hold_tasks_and_a_retry_counts_attempts(hive: Hive) -> None:
    hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p")
    with pytest.raises(InvalidInput) as err:
        hive.transition_task("p", "a", "assigned", namespace=NS)
    assert err.value.field == "agent"
    task = hive.assign_task("p", "a", "alice", namespace=NS)
    assert (task.state, task.agent) == ("assigned", "alice")
    with pytest.raises(InvalidTransition) as held:
        hive.transition_task("p", "a", "running", namespace=NS, agent="bob")
    assert held.value.details["holder"] == "alice"
    running = hive.transition_task("p", "a", "running", namespace=NS, agent="alice")
    assert running.attempts == 1
    failed = hive.transition_task("p", "a", "failed", namespace=NS, notes="timed out")
    assert (failed.state, failed.agent, failed.notes) == ("failed", "alice", "timed out")
    retried = hive.transition_task("p", "a", "pending", namespace=NS)
    assert (retried.state, retried.agent) == ("pending", None)
    hive.assign_task("p", "a", "bob", namespace=NS)
    assert hive.transition_task("p", "a", "running", namespace=NS).attempts == 2
    done = hive.transition_task("p", "a", "done", namespace=NS, agent="bob", notes="42 rows")
    assert (done.state, done.agent, done.notes, done.version) == ("done", "bob", "42 rows", 8)
    states = [m.data["state"] for m in hive.history(done.memory_id)]
    assert states == ["pending", "assigned", "running", "failed", "pending", "assigned", "running", "done"]


def test_a_task_runs_only_after_its_dependencies_are_done(hive: Hive) -> None:
    hive.create_plan(NS, pipeline(), plan_id="p")
    hive.assign_task("p", "clean", "alice", namespace=NS)  # assigning ahead is fine
    with pytest.raises(InvalidTransition) as err:
        hive.transition_task("p", "clean", "running", namespace=NS)
    assert err.value.details["waiting_on"] == ["fetch"]
    for move in ("assigned", "running", "done"):
        hive.transition_task("p", "fetch", move, namespace=NS, agent="bob")
    assert hive.transition_task("p", "clean", "running", namespace=NS).state == "running"
    plan = hive.plan("p", namespace=NS)
    assert [t.id for t in plan.ready()] == ["docs"]
    assert plan.progress.by_state == {
        "pending": 3,
        "assigned": 0,
        "running": 1,
        "done": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert plan.progress.fraction == pytest.approx(1 / 5)


def test_progress_leaves_cancelled_tasks_out(hive: Hive) -> None:
    tasks = [{"id": "a", "description": "x"}, {"id": "b", "description": "y"}]
    hive.create_plan(NS, tasks, plan_id="p")
    for move in ("assigned", "running", "done"):
        hive.transition_task("p", "a", move, namespace=NS, agent="bob")
    hive.transition_task("p", "b", "cancelled", namespace=NS)
    progress = hive.plan("p", namespace=NS).progress
    assert (progress.fraction, progress.finished) == (1.0, True)


def test_expected_version_makes_a_transition_compare_and_swap(hive: Hive) -> None:
    plan = hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p")
    read = plan.task("a")
    hive.assign_task("p", "a", "alice", namespace=NS, expected_version=read.version)
    hive.transition_task("p", "a", "pending", namespace=NS)
    with pytest.raises(VersionConflict) as err:
        hive.assign_task("p", "a", "bob", namespace=NS, expected_version=read.version)
    assert err.value.current_version == 3
    assert hive.plan("p", namespace=NS).task("a").state == "pending"


def test_bad_transition_arguments(hive: Hive) -> None:
    hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p")
    for kwargs, field in (
        ({"state": "finished"}, "state"),
        ({"state": "done", "agent": ""}, "agent"),
        ({"state": "assigned", "agent": "bob", "expected_version": 0}, "expected_version"),
        ({"state": "assigned", "agent": "bob", "notes": ""}, "notes"),
        ({"state": "assigned", "agent": "a/b"}, "agent"),
    ):
        state = kwargs.pop("state")
        with pytest.raises(InvalidInput) as err:
            hive.transition_task("p", "a", state, namespace=NS, **kwargs)
        assert err.value.field == field
    with pytest.raises(NotFound):
        hive.transition_task("p", "zz", "assigned", namespace=NS, agent="bob")
    with pytest.raises(NotFound):
        hive.transition_task("p", "a", "assigned", namespace="team/elsewhere", agent="bob")
    assert hive.plan("p", namespace=NS).task("a").version == 1


# --------------------------------------------------------------------------- records, events, recall


def test_plan_changes_are_events(hive: Hive) -> None:
    plan = hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p")
    hive.assign_task("p", "a", "alice", namespace=NS)
    events = hive.events("team", types=["plan.created", "task.state_changed"])
    assert [e.type for e in events] == ["plan.created", "task.state_changed"]
    assert events[0].subject == plan.memory_id and events[0].data["plan_id"] == "p"
    change = events[1].data
    assert (change["task_id"], change["from"], change["to"], change["agent"]) == ("a", "pending", "assigned", "alice")
    updated = hive.events("team", types=["memory.updated"])
    assert [e.subject for e in updated] == [plan.task("a").memory_id]


def test_recall_leaves_plans_out_unless_asked(hive: Hive) -> None:
    note = hive.remember(NS, "invoices arrive every monday")
    hive.create_plan(NS, [{"id": "a", "description": "import the invoices"}], plan_id="p", title="invoices")
    assert [h.memory.id for h in hive.recall("invoices", namespace="team")] == [note.id]
    found = hive.recall("invoices", namespace="team", kinds=["task"])
    assert [h.memory.data["task_id"] for h in found] == ["a"]
    assert {h.memory.kind for h in hive.recall("invoices", kinds=["plan", "note"])} == {"plan", "note"}


def test_plans_survive_export_and_import(open_hive: Any) -> None:
    source = open_hive("a")
    source.create_plan(NS, pipeline(), plan_id="p")
    source.assign_task("p", "fetch", "alice", namespace=NS)
    target = open_hive("b")
    assert target.import_memories(list(source.export())) == 6
    assert target.plan("p", namespace=NS) == source.plan("p", namespace=NS)


# --------------------------------------------------------------------------- concurrency


def test_of_threads_claiming_one_task_exactly_one_wins(hive: Hive) -> None:
    hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p")
    start = threading.Barrier(8)
    won: list[str] = []
    lost: list[str] = []

    def claim(agent: str) -> None:
        start.wait()
        try:
            hive.assign_task("p", "a", agent, namespace=NS)
            won.append(agent)
        except InvalidTransition:
            lost.append(agent)

    threads = [threading.Thread(target=claim, args=(f"agent-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(lost) == 7
    task = hive.plan("p", namespace=NS).task("a")
    assert (task.state, task.agent, task.version) == ("assigned", won[0], 2)


def _claimer(target: str, agent: str, start: Any, results: Any) -> None:
    with hivemem.open(target, embedder=None) as hive:
        start.wait(timeout=60)
        try:
            hive.assign_task("p", "a", agent, namespace=NS)
            results.put((agent, "won"))
        except InvalidTransition:
            results.put((agent, "lost"))


def test_of_processes_claiming_one_task_exactly_one_wins(shared: str) -> None:
    with hivemem.open(shared, embedder=None) as hive:
        hive.create_plan(NS, [{"id": "a", "description": "x"}], plan_id="p")
    start, results = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_claimer, args=(shared, f"agent-{i}", start, results)) for i in range(4)]
    for p in procs:
        p.start()
    start.set()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    winners = [agent for agent, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1
    with hivemem.open(shared, embedder=None) as hive:
        assert hive.plan("p", namespace=NS).task("a").agent == winners[0]


def test_a_users_own_plan_and_task_records_are_not_plans(hive: Hive) -> None:
    hive.remember(NS, "my plan", kind="plan", key="plan:mine", data={"plan_id": 5})
    hive.remember(NS, "my task", kind="task", key="task:mine:a", data={"state": "weird"})
    with pytest.raises(NotFound):
        hive.plan("mine", namespace=NS)
    with pytest.raises(NotFound):
        hive.transition_task("mine", "a", "assigned", namespace=NS, agent="bob")
    assert hive.plans(NS) == []


def test_a_plan_of_long_tasks_is_stored_whole_in_its_tasks(open_hive: Any) -> None:
    hive = open_hive(max_content_bytes=200)
    tasks = [{"id": f"t{i}", "description": f"step {i} " + "é" * 80} for i in range(5)]
    plan = hive.create_plan(NS, tasks, plan_id="long", title="long plan")
    assert [t.description for t in plan.tasks] == [t["description"] for t in tasks]
    assert len(hive.get(plan.memory_id).content.encode()) <= 200
    with pytest.raises(PayloadTooLarge) as err:
        hive.create_plan(NS, tasks, title="x" * 1001)
    assert err.value.details["field"] == "title"
