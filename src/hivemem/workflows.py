"""Checkpointed durable workflows: plain or async functions whose steps run once, across crashes.

A *workflow* is a function decorated with :func:`workflow` (or ``hive.workflow``);
a *step* is a function decorated with :func:`step` that the workflow calls. A run
has an id (given with :meth:`WorkflowFunction.with_id`, else derived from the
namespace, the workflow's name and its inputs) and lives in a namespace, so
grants apply to it like to memories. Each step's result is recorded under
``(workflow id, step number)``. Run again after a crash, the workflow gets the
recorded result of every finished step back without executing it, and goes on
at the first unfinished one. Replaying a run whose code now calls a different
step at a recorded number raises :class:`~hivemem.errors.WorkflowDiverged` and
marks the run failed: recorded results are never mixed with another program.

**Exactly once for HiveMem writes.** Every HiveMem write a step makes carries a
deterministic idempotency key, ``wf:<namespace>/<workflow id>:<step>:<n>`` for
its n-th write, recorded in the write's own transaction by the machinery of
:meth:`Hive.run_once` (embedded) or the server's ``Idempotency-Key`` (HTTP).
A step executed again after a crash, a retry or a takeover by another executor
makes the same writes with the same keys, and each of them returns the result
recorded the first time instead of applying again; then the step's checkpoint
commits. This is not the letter of "a step's writes commit in its checkpoint's
transaction", and it is chosen over it on purpose: holding one write
transaction open across arbitrary user code would block every other writer of
a SQLite file for the whole step, and cannot exist over HTTP at all, whereas
keyed writes give the same outcome (each write applied once, the step recorded
once) on SQLite, PostgreSQL and HTTP alike, at no cost beyond the key row.
What it asks of a step: its HiveMem writes happen in the same order on every
execution (results may differ: the first recorded one wins). Records live
``idempotency_ttl_seconds`` (a day by default): resume a crashed run within it.
Keys are scoped by the principal that started the run; resume it as that
principal (the same API key over HTTP, or on the server, which resumes as any).

**External effects run at least once.** :func:`current_step` gives the running
step's :attr:`StepContext.idempotency_key` (``<workflow id>:<step>``) to pass
to other services, which can then drop repeats.

**One executor per run.** An executor holds a write lease on the run's resource
(``<namespace>/wf.<id>``), renewed in the background while it runs, and every
checkpoint (and, embedded, every step write) is fenced by it: an executor that
stalled past its lease cannot record anything after another took over.
:func:`recover` resumes every unfinished run of the functions registered in
this process, skipping runs whose lease is held, so several processes or
servers may call it at once and each run still has one executor.

**Cost.** A run takes three commits of its own (its lease; its start, which
claims it; its finish, which releases the lease), and a call of a run that has
ended takes one read. With ``durability="sync"`` (the default) each step adds
one store transaction (one durable commit on SQLite) before the next step
starts; with ``durability="async"`` checkpoints commit in the background, in
step order and several per commit (:class:`_Pipeline`). A step's attempts,
timeouts and failures are recorded only when it ends.

**Over HTTP** the workflow runs in the caller's process and only its
checkpoints travel (:meth:`Hive.start_workflow`, :meth:`Hive.record_steps`,
:meth:`Hive.finish_workflow`). A step's writes carry their keys as
``Idempotency-Key`` headers, which the server applies once per key whatever the
body; they are not fenced there (only the checkpoints are). A blocking Hive
used by an ``async def`` workflow makes its checkpoint calls in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hivemem import checkpoints
from hivemem import validation as v
from hivemem.checkpoints import (
    MAX_STEPS,
    UNFINISHED,
    StepRecord,
    Workflow,
    check_id,
    derived_id,
    diverged,
    error_of,
    json_copy,
    resource_of,
    to_json_text,
    workflow_name,
)
from hivemem.clock import utc
from hivemem.errors import (
    HiveError,
    InvalidInput,
    LeaseExpired,
    LockHeld,
    NotFound,
    StaleFencingToken,
    StepFailed,
    WorkflowCancelled,
    WorkflowDiverged,
    WorkflowFailed,
)
from hivemem.events import Event
from hivemem.leases import Fence, Lease
from hivemem.models import Conflict, Group, Memory, Relation

if TYPE_CHECKING:
    from hivemem.hive import Hive

__all__ = ["REGISTRY", "Registry", "Retry", "StepContext", "StepFunction", "WorkflowFunction", "current_step"]

#: Default seconds an executor's lease lasts unless renewed (it is renewed every third of it).
LEASE_TTL = 30.0
#: Errors about the run itself, not a step: they pass through a step's retries unrecorded.
_CONTROL = (WorkflowCancelled, WorkflowDiverged, StaleFencingToken, LeaseExpired, WorkflowFailed)


# -- what a running step knows -------------------------------------------------------------------


@dataclass(slots=True)
class StepContext:
    """The step running now (see :func:`current_step`).

    Attributes:
        workflow_id: The run's id.
        namespace: The run's namespace.
        step: The step's number.
        name: The step's name.
        attempt: Which attempt this is (1 first).
        principal: Who started the run (the scope of its write keys).
        fence: The executor's lease, as a fence: embedded step writes are fenced by it.
    """

    workflow_id: str
    namespace: str
    step: int
    name: str
    attempt: int
    principal: str
    fence: Fence | None
    writes: int = 0

    @property
    def idempotency_key(self) -> str:
        """``<workflow id>:<step>``: pass it to external services so they can drop a repeat."""
        return f"{self.workflow_id}:{self.step}"

    def write_key(self) -> str:
        """The idempotency key of the step's next HiveMem write (call :meth:`wrote` once it commits)."""
        key = f"wf:{self.namespace}/{self.workflow_id}:{self.step}:{self.writes + 1}"
        return key if len(key) <= 200 else "wf:" + hashlib.sha256(key.encode()).hexdigest()

    def wrote(self) -> None:
        """Count a committed (or replayed) write: the next one takes the next key."""
        self.writes += 1


_STEP: ContextVar[StepContext | None] = ContextVar("hivemem_step", default=None)


def current_step() -> StepContext | None:
    """The step running in this context (thread or task), or None outside steps."""
    return _STEP.get()


def is_step_key(key: str) -> bool:
    """Whether an idempotency key is a workflow step write's (the server then takes it as is)."""
    return key.startswith("wf:")


def encode_result(value: Any) -> Any:
    """A write's result as JSON tagged with its record type, so a replay returns the same type."""
    if isinstance(value, list):
        return {"t": "list", "v": [encode_result(item) for item in value]}
    for name, cls in _RECORDS.items():
        if isinstance(value, cls):
            return {"t": name, "v": value.to_dict()}
    return {"t": "json", "v": value}


def decode_result(payload: Any) -> Any:
    """The result :func:`encode_result` recorded, as the write first returned it."""
    tag, value = payload["t"], payload["v"]
    if tag == "list":
        return [decode_result(item) for item in value]
    if tag == "json":
        return value
    return _DECODERS[tag](value)


_RECORDS: dict[str, type[Any]] = {
    "memory": Memory,
    "event": Event,
    "relation": Relation,
    "group": Group,
    "conflict": Conflict,
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "memory": Memory.from_dict,
    "event": Event.from_dict,
    "relation": lambda p: Relation(
        p["src_id"], p["dst_id"], p["type"], p["strength"], datetime.fromisoformat(p["created_at"])
    ),
    "group": lambda p: Group(p["name"], p["description"], datetime.fromisoformat(p["created_at"])),
    "conflict": Conflict.from_dict,
}


# -- policies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """How often a step is tried, and how long to wait between tries.

    Attributes:
        attempts: Tries in all (1: no retry).
        backoff: Seconds before the second try.
        factor: Each further wait is this many times the last.
        max_delay: The longest wait.
        on: Error classes worth another try; others fail the step at once.
    """

    attempts: int = 1
    backoff: float = 0.1
    factor: float = 2.0
    max_delay: float = 30.0
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        v.positive_int(self.attempts, "retry.attempts", 1000)
        for name in ("backoff", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
                raise InvalidInput(f"retry.{name}", "must be seconds from 0 to 3600", value=repr(value))
        if isinstance(self.factor, bool) or not isinstance(self.factor, int | float) or not 1 <= self.factor <= 10:
            raise InvalidInput("retry.factor", "must be a number from 1 to 10", value=repr(self.factor))
        on = self.on
        classes = isinstance(on, tuple) and all(isinstance(c, type) and issubclass(c, BaseException) for c in on)
        if not classes:
            raise InvalidInput("retry.on", "must be a tuple of exception classes")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed tries (with jitter of up to a quarter)."""
        base = min(self.max_delay, self.backoff * self.factor ** (failures - 1))
        return float(base * random.uniform(0.75, 1.0))

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another try."""
        return isinstance(exc, self.on) and not isinstance(exc, _CONTROL)


def _seconds(value: object, field: str) -> float | None:
    if value is None:
        return None
    return v.positive_float(value, field)


# -- registry ------------------------------------------------------------------------------------


class Registry:
    """Workflow functions by name, for :func:`recover` to find the code of a recorded run.

    One process-wide instance, :data:`REGISTRY`, is what the decorators fill and
    what :meth:`Hive.recover` and ``hivemem serve --workflows`` read: it holds
    code, as a router holds routes, not data or connections.
    """

    def __init__(self) -> None:
        self._functions: dict[str, WorkflowFunction] = {}
        self._lock = threading.Lock()

    def add(self, function: WorkflowFunction) -> None:
        """Register ``function`` under its name (a later one of the same name replaces it)."""
        with self._lock:
            self._functions[function.name] = function

    def get(self, name: str) -> WorkflowFunction | None:
        """The function registered as ``name``."""
        with self._lock:
            return self._functions.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        with self._lock:
            return sorted(self._functions)


REGISTRY = Registry()


# -- decorators ----------------------------------------------------------------------------------


def workflow(
    name: str | None = None,
    *,
    namespace: str,
    timeout: float | None = None,
    lease_ttl: float = LEASE_TTL,
    wait: float = 60.0,
    durability: str = "sync",
    hive: Hive | None = None,
) -> Callable[[Callable[..., Any]], WorkflowFunction]:
    """Make a function a durable workflow (see the module docstring).

    Without ``hive`` (``hivemem.workflow``) the function's first parameter is
    the Hive it runs on: call it as ``fn(hive, *inputs)``; :func:`recover`
    passes the recovering Hive. With ``hive`` (``hive.workflow``) it runs on
    that Hive: call it as ``fn(*inputs)``. An ``async def`` gives a coroutine
    function. Inputs and the result must be JSON; the function gets its inputs
    back as JSON (tuples become lists), so a replay sees exactly what the first
    run saw. Its steps must be called one at a time, in an order that depends
    only on the inputs and earlier steps' results.

    Args:
        name: The registered name (default: ``module.qualname``); keep it stable across deploys.
        namespace: Where its runs live; the caller needs write access there.
        timeout: Seconds a run may take from its start; checked before each step.
        lease_ttl: Seconds an executor's lease lasts unless renewed; a crashed
            executor's run can be resumed after this long.
        wait: Seconds a call waits for another executor of the same run to let go.
        durability: ``sync``: each step's checkpoint commits before the next step
            starts. ``async``: checkpoints commit in the background, in order and
            in groups, while the next steps run (see :class:`_Pipeline`); a crash
            may then run again steps that had finished, with their HiveMem writes
            still applied once. Async workflows (``async def``) always use sync.
        hive: The Hive it runs on (``hive.workflow``), or None to take it as first argument.

    Raises:
        InvalidInput: A bad name, namespace, timeout, lease_ttl or wait.
    """
    ns = v.namespace(namespace)
    checked_timeout = _seconds(timeout, "timeout")
    if durability not in ("sync", "async"):
        raise InvalidInput("durability", "must be sync or async", value=repr(durability))
    ttl = v.positive_float(lease_ttl, "lease_ttl")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 3600:
        raise InvalidInput("wait", "must be seconds from 0 to 3600", value=repr(wait))

    def decorate(fn: Callable[..., Any]) -> WorkflowFunction:
        if not callable(fn):
            raise InvalidInput("workflow", "decorates a function")
        chosen = workflow_name(name if name is not None else f"{fn.__module__}.{fn.__qualname__}")
        function = WorkflowFunction(fn, chosen, ns, hive, checked_timeout, ttl, float(wait), durability)
        REGISTRY.add(function)
        return function

    return decorate


def step(
    name: str | None = None, *, retry: Retry | None = None, timeout: float | None = None
) -> Callable[[Callable[..., Any]], StepFunction]:
    """Make a function a step: inside a workflow, run once per run and recorded; outside, a plain call.

    Its result must be JSON; the caller gets it back as JSON (tuples become
    lists) on the first run and on replays alike. A step called inside another
    step is a plain call, part of the outer one.

    Args:
        name: The recorded name (default: the function's qualified name); a replay checks it.
        retry: Tries and backoff; default one try.
        timeout: Seconds an attempt may take. An async step is cancelled then; a
            plain one is left running in its thread (Python cannot stop it) and its
            HiveMem writes keep their keys, so they still apply once.

    Raises:
        InvalidInput: A bad name, retry or timeout.
    """
    policy = retry if retry is not None else Retry()
    if not isinstance(policy, Retry):
        raise InvalidInput("retry", "must be a hivemem.workflows.Retry")
    checked_timeout = _seconds(timeout, "timeout")

    def decorate(fn: Callable[..., Any]) -> StepFunction:
        if not callable(fn):
            raise InvalidInput("step", "decorates a function")
        return StepFunction(fn, workflow_name(name if name is not None else fn.__qualname__), policy, checked_timeout)

    return decorate


# -- running -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """A run being executed in this context: what was recorded, and which step comes next."""

    hive: Any
    workflow: Workflow
    lease: Lease
    recorded: dict[int, StepRecord]
    deadline: float | None
    pipeline: _Pipeline | None = None
    log: checkpoints.StepLog | None = None
    done: int = 0
    diverged: WorkflowDiverged | None = None
    fence: Fence = field(init=False)

    def __post_init__(self) -> None:
        self.fence = self.lease.fence  # what every step context carries: made once, not per step

    def record(self, item: dict[str, Any], result_text: str | None = None) -> StepRecord | None:
        """Record a finished step: now (sync durability), or queued for the next group commit (async).

        ``result_text`` is a succeeded item's result as JSON (the runner encodes it once).
        Returns None when the step is recorded as given, or the record its
        number already had (another executor recorded it first), which counts.
        """
        wf = self.workflow
        if self.log is not None:
            return self.log.record(item, result_text)
        if self.pipeline is not None:
            self.pipeline.submit(item)
            return None
        recorded: list[StepRecord] = self.hive.record_steps(wf.id, [item], namespace=wf.namespace, fence=self.lease)
        return recorded[0]

    async def arecord(self, item: dict[str, Any]) -> StepRecord:
        """:meth:`record` from async code (always sync durability)."""
        wf = self.workflow
        recorded: list[StepRecord] = await _acall(
            self.hive.record_steps, wf.id, [item], namespace=wf.namespace, fence=self.lease
        )
        return recorded[0]

    def next_step(self, name: str) -> tuple[int, StepRecord | None]:
        """The next step's number and its record, if any; a different recorded name is divergence."""
        if self.pipeline is not None:
            self.pipeline.check()
        self.done += 1
        number = self.done
        found = self.recorded.get(number)
        if found is not None and found.name != name:
            self.diverged = diverged(self.workflow.id, number, found.name, name)
            raise self.diverged
        if self.deadline is not None and found is None and time.time() > self.deadline:
            raise WorkflowFailed(
                f"workflow {self.workflow.id} timed out before step {number}",
                workflow_id=self.workflow.id,
                error={"type": "WorkflowTimeout", "message": f"timed out before step {number}"},
            )
        return number, found

    def check_complete(self) -> None:
        """Raise if the code ended before every recorded step was replayed."""
        if self.diverged is not None:
            raise self.diverged
        later = [n for n in self.recorded if n > self.done]
        if later:
            first = min(later)
            self.diverged = diverged(self.workflow.id, first, self.recorded[first].name, None)
            raise self.diverged

    def context(self, number: int, name: str, attempt: int) -> StepContext:
        wf = self.workflow
        return StepContext(wf.id, wf.namespace, number, name, attempt, wf.principal, self.fence)


_RUN: ContextVar[_Run | None] = ContextVar("hivemem_workflow_run", default=None)


def _outcome(wf: Workflow) -> Any:
    """What calling a finished run returns or raises."""
    if wf.status == "succeeded":
        return wf.result
    if wf.status == "cancelled":
        raise WorkflowCancelled(f"workflow {wf.id} was cancelled", workflow_id=wf.id)
    error = dict(wf.error or {})
    if error.get("type") == "WorkflowDiverged":
        raise WorkflowDiverged(f"workflow {wf.id} failed: {error.get('message')}", workflow_id=wf.id, error=error)
    raise WorkflowFailed(f"workflow {wf.id} failed: {error.get('message')}", workflow_id=wf.id, error=error)


def _json_copy(value: Any, field: str) -> Any:
    return json_copy(value, to_json_text(value, field))


class _Keeper:
    """Renews running executors' leases, each every third of its ttl, from one background thread.

    One thread for the whole process rather than one per run: a thread that
    touches a SQLite Hive keeps a connection of its own, so a thread per run
    would leave a connection behind per run. It is a worker, not state: it
    holds only the leases of runs executing now, and :meth:`drop` returns only
    once no renewal of that lease is under way (the Hive may close next).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: dict[int, tuple[Any, Lease, float, float]] = {}
        self._busy: int | None = None
        self._next = 0
        self._thread: threading.Thread | None = None
        # When the thread next looks at the entries by itself (monotonic seconds).
        self._wakes_at = math.inf

    def keep(self, hive: Any, lease: Lease, ttl: float) -> int:
        """Start renewing ``lease`` through ``hive``; the handle for :meth:`drop`."""
        with self._changed:
            self._next += 1
            due = time.monotonic() + ttl / 3
            self._entries[self._next] = (hive, lease, ttl, due)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="hivemem-workflow-leases")
                self._thread.start()
            if due < self._wakes_at:  # else it finds the entry in time; waking it costs a run ~75 us
                self._changed.notify_all()
            return self._next

    def drop(self, handle: int) -> None:
        """Stop renewing; waits for a renewal of it under way to end."""
        with self._changed:
            self._entries.pop(handle, None)
            self._changed.wait_for(lambda: self._busy != handle)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while True:
                    now = time.monotonic()
                    due = min(self._entries.items(), key=lambda item: item[1][3], default=None)
                    if due is not None and due[1][3] <= now:
                        break
                    self._wakes_at = math.inf if due is None else due[1][3]
                    self._changed.wait(None if due is None else due[1][3] - now)
                self._wakes_at = math.inf
                handle, (hive, lease, ttl, _) = due
                self._busy = handle
            try:
                hive.renew_lease(lease)
                lapsed = False
            except HiveError:
                lapsed = True  # the next fenced checkpoint tells the executor
            with self._changed:
                self._busy = None
                if handle in self._entries:
                    if lapsed:
                        del self._entries[handle]
                    else:
                        self._entries[handle] = (hive, lease, ttl, time.monotonic() + ttl / 3)
                self._changed.notify_all()


_KEEPER = _Keeper()
#: Threads that run plain steps with a timeout (a step past its timeout keeps its thread until it ends).
_STEP_THREADS = ThreadPoolExecutor(32, thread_name_prefix="hivemem-step")


class _Pipeline:
    """A run's step checkpoints with ``durability="async"``: committed in order, in groups, in the background.

    A step's checkpoint is queued and the next step starts at once; a writer
    thread commits every queued checkpoint of the run in one transaction
    (:meth:`Hive.record_steps`), then the ones queued meanwhile, and so on. A
    crash before a checkpoint commits runs that step again on resume, which is
    what a crash inside a step does anyway: its HiveMem writes are keyed, so they
    still apply once, and its external effects are at least once. Checkpoints
    commit in step order, so what is recorded is always a prefix of the run.
    A checkpoint refused (the run cancelled, the lease superseded) is raised at
    the next step or at the end; the run is finished only after every
    checkpoint before it has committed.
    """

    def __init__(self, hive: Any, wf: Workflow, lease: Lease) -> None:
        self._hive = hive
        self._wf = wf
        self._lease = lease
        self._changed = threading.Condition()
        self._queued: list[dict[str, Any]] = []
        self._writing = False
        self._error: BaseException | None = None

    def submit(self, item: dict[str, Any]) -> None:
        """Queue a finished step's checkpoint."""
        with self._changed:
            self._queued.append(item)
            if not self._writing:
                self._writing = True
                _CHECKPOINT_THREADS.submit(self._drain)

    def check(self) -> None:
        """Raise the error a background commit met, if any."""
        with self._changed:
            if self._error is not None:
                raise self._error

    def settle(self) -> None:
        """Wait until no checkpoint is being written."""
        with self._changed:
            self._changed.wait_for(lambda: not self._writing)

    def flush(self) -> None:
        """Wait until every queued checkpoint has committed; raise what stopped one."""
        with self._changed:
            self._changed.wait_for(lambda: not self._writing)
            if self._error is not None:
                raise self._error

    def _drain(self) -> None:
        while True:
            with self._changed:
                batch, self._queued = self._queued, []
                if not batch or self._error is not None:
                    self._writing = False
                    self._changed.notify_all()
                    return
            try:
                for start in range(0, len(batch), MAX_STEPS):
                    chunk = batch[start : start + MAX_STEPS]
                    self._hive.record_steps(self._wf.id, chunk, namespace=self._wf.namespace, fence=self._lease)
            except Exception as exc:
                with self._changed:
                    self._error = exc
                    self._queued = []


#: The writers of async checkpoints: a few threads for every run (each keeps a SQLite connection).
_CHECKPOINT_THREADS = ThreadPoolExecutor(4, thread_name_prefix="hivemem-checkpoint")


class WorkflowFunction:
    """A durable workflow (made by :func:`workflow`); call it to run or resume a run."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        namespace: str,
        hive: Hive | None,
        timeout: float | None,
        lease_ttl: float,
        wait: float,
        durability: str = "sync",
    ) -> None:
        self.fn = fn
        self.name = name
        self.namespace = namespace
        self.hive = hive
        self.timeout = timeout
        self.lease_ttl = lease_ttl
        self.wait = wait
        self.durability = durability
        self.is_async = inspect.iscoroutinefunction(fn)
        _take_names(self, fn, name)

    def __repr__(self) -> str:
        return f"<workflow {self.name} in {self.namespace}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run (or resume, or return the outcome of) the run whose id derives from these inputs."""
        return self.with_id(None)(*args, **kwargs)

    def with_id(self, workflow_id: str | None) -> Callable[..., Any]:
        """This workflow as a function that runs the run ``workflow_id`` (None: derived from the inputs).

        Raises:
            InvalidInput: A bad id.
        """
        wid = None if workflow_id is None else check_id(workflow_id)

        def call(*args: Any, **kwargs: Any) -> Any:
            hive, inputs = self._split(args, kwargs)
            if self.is_async:
                return self._arun(hive, inputs, wid)
            return self._run(hive, inputs, wid)

        return call

    def _split(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if self.hive is not None:
            hive, rest = self.hive, args
        elif args and hasattr(args[0], "start_workflow"):
            hive, rest = args[0], args[1:]
        else:
            raise InvalidInput("hive", f"workflow {self.name} takes the Hive it runs on as its first argument")
        return hive, _json_copy({"args": list(rest), "kwargs": kwargs}, "inputs")

    def _call_args(self, hive: Any, inputs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        args = list(inputs.get("args") or [])
        return ([] if self.hive is not None else [hive]) + args, dict(inputs.get("kwargs") or {})

    def _start_args(self, inputs: Any, wid: str | None, namespace: str | None) -> dict[str, Any]:
        deadline = None if self.timeout is None else utc(time.time() + self.timeout)
        ns = namespace or self.namespace
        return {
            "namespace": ns,
            "workflow_id": wid or derived_id(ns, self.name, inputs),
            "inputs": inputs,
            "deadline": deadline,
        }

    # -- sync ------------------------------------------------------------------------------------

    def _run(
        self, hive: Any, inputs: Any, wid: str | None, lease: Lease | None = None, namespace: str | None = None
    ) -> Any:
        # A finished run is answered from one read; an unfinished one costs three commits besides its
        # steps: the lease, the start (with the claim), and the finish (with the release).
        start = self._start_args(inputs, wid, namespace)
        if lease is None:
            known = _existing(hive, start)
            if known is not None and known.finished:
                return _outcome(self._same(known, start))
            lease = _take(hive, resource_of(start["namespace"], start["workflow_id"]), self.lease_ttl, self.wait)
        assert lease is not None
        held = lease
        keeper = _KEEPER.keep(hive, held, self.lease_ttl)
        released = False
        try:
            wf = hive.start_workflow(self.name, **start, fence=held)
            if wf.finished:
                return _outcome(wf)
            pipeline = _Pipeline(hive, wf, held) if self.durability == "async" else None
            log = hive._step_log(wf, held) if pipeline is None else None
            run = _Run(hive, wf, held, {s.step: s for s in wf.steps}, _deadline(wf), pipeline, log)
            args, kwargs = self._call_args(hive, wf.inputs)
            token = _RUN.set(run)
            try:
                result = self.fn(*args, **kwargs)
                run.check_complete()
                text = _json_copy(result, "result")
                if pipeline is not None:
                    pipeline.flush()
            except Exception as exc:
                if pipeline is not None:
                    with contextlib.suppress(Exception):
                        pipeline.flush()  # the steps before the failure are recorded before it
                failure = _failure_of(exc)
                if failure is not None:
                    released = True
                    _quietly(
                        lambda: hive.finish_workflow(
                            wf.id, namespace=wf.namespace, status="failed", error=failure, lease=held
                        )
                    )
                raise
            except BaseException:
                if pipeline is not None:
                    pipeline.settle()  # nothing is written once the lease is let go
                raise
            finally:
                _RUN.reset(token)
            _KEEPER.drop(keeper)
            released = True
            finished = hive.finish_workflow(wf.id, namespace=wf.namespace, status="succeeded", result=text, lease=held)
            return _outcome(finished)
        finally:
            _KEEPER.drop(keeper)
            if not released:
                _quietly(lambda: hive.release_lease(held))

    def _same(self, wf: Workflow, start: Mapping[str, Any]) -> Workflow:
        """``wf``, if it is a run of this workflow with these inputs (as start_workflow checks)."""
        if wf.name != self.name:
            raise InvalidInput("workflow_id", f"is taken by a run of {wf.name!r}", workflow_id=wf.id)
        if wf.inputs != start["inputs"]:
            raise InvalidInput("inputs", f"differ from those run {wf.id} began with", workflow_id=wf.id)
        return wf

    # -- async -----------------------------------------------------------------------------------

    async def _arun(
        self, hive: Any, inputs: Any, wid: str | None, lease: Lease | None = None, namespace: str | None = None
    ) -> Any:
        start = self._start_args(inputs, wid, namespace)
        if lease is None:
            known = await _aexisting(hive, start)
            if known is not None and known.finished:
                return _outcome(self._same(known, start))
            resource = resource_of(start["namespace"], start["workflow_id"])
            lease = await _atake(hive, resource, self.lease_ttl, self.wait)
        assert lease is not None
        held = lease
        keeper = asyncio.ensure_future(_akeep(hive, held, self.lease_ttl))
        released = False
        try:
            wf = await _acall(hive.start_workflow, self.name, **start, fence=held)
            if wf.finished:
                return _outcome(wf)
            run = _Run(hive, wf, held, {s.step: s for s in wf.steps}, _deadline(wf))
            args, kwargs = self._call_args(hive, wf.inputs)
            token = _RUN.set(run)
            try:
                result = await self.fn(*args, **kwargs)
                run.check_complete()
                text = _json_copy(result, "result")
            except Exception as exc:
                failure = _failure_of(exc)
                if failure is not None:
                    released = True
                    finish = _acall(
                        hive.finish_workflow, wf.id, namespace=wf.namespace, status="failed", error=failure, lease=held
                    )
                    await _aquietly(finish)
                raise
            finally:
                _RUN.reset(token)
            keeper.cancel()
            released = True
            finished = await _acall(
                hive.finish_workflow, wf.id, namespace=wf.namespace, status="succeeded", result=text, lease=held
            )
            return _outcome(finished)
        finally:
            keeper.cancel()
            if not released:
                await _aquietly(_acall(hive.release_lease, held))


_FIRST_TRY, _LAST_TRY = 0.005, 0.1


def _take(hive: Any, resource: str, ttl: float, wait: float) -> Lease:
    """The run's lease, asked for again and again (``wait=0``) until ``wait`` runs out.

    Never a long wait inside one call: over HTTP the server would go on waiting
    (and take the lease) for a caller that died meanwhile, and the run would stay
    blocked for a lease nobody renews. Asking from here, a dead caller asks no more.

    Raises:
        LockHeld: Another executor kept the run for ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    delay = _FIRST_TRY
    while True:
        try:
            lease: Lease = hive.lock(resource, ttl=ttl, wait=0)
            return lease
        except LockHeld:
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, _LAST_TRY)


async def _atake(hive: Any, resource: str, ttl: float, wait: float) -> Lease:
    """:func:`_take` for async code."""
    deadline = time.monotonic() + wait
    delay = _FIRST_TRY
    while True:
        try:
            lease: Lease = await _acall(hive.lock, resource, ttl=ttl, wait=0)
            return lease
        except LockHeld:
            if time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, _LAST_TRY)


def _failure_of(exc: BaseException) -> dict[str, Any] | None:
    """How ``exc`` fails the run, or None if this executor may not (or need not) record it."""
    if isinstance(exc, WorkflowCancelled | StaleFencingToken | LeaseExpired):
        return None
    error = exc.details.get("error") if isinstance(exc, WorkflowFailed) else None
    return dict(error) if isinstance(error, Mapping) else error_of(exc)


def _existing(hive: Any, start: Mapping[str, Any]) -> Workflow | None:
    try:
        found: Workflow = hive.get_workflow(start["workflow_id"], namespace=start["namespace"])
    except NotFound:
        return None
    return found


async def _aexisting(hive: Any, start: Mapping[str, Any]) -> Workflow | None:
    try:
        found: Workflow = await _acall(hive.get_workflow, start["workflow_id"], namespace=start["namespace"])
    except NotFound:
        return None
    return found


def _deadline(wf: Workflow) -> float | None:
    return None if wf.deadline is None else wf.deadline.timestamp()


def _quietly(call: Callable[[], Any]) -> None:
    """Clean-up that must not hide the error being raised (a lapsed lease, a lost connection)."""
    with contextlib.suppress(HiveError):
        call()


async def _aquietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(HiveError):
        await call


async def _acall(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a Hive method from async code: await an async client's, run a blocking Hive's in a thread."""
    if inspect.iscoroutinefunction(method):
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)


async def _akeep(hive: Any, lease: Lease, ttl: float) -> None:
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            await _acall(hive.renew_lease, lease)
        except HiveError:
            return


def _take_names(wrapper: Any, fn: Callable[..., Any], name: str) -> None:
    """Give a workflow or step wrapper its function's docstring and names (``name`` if it has none)."""
    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = getattr(fn, "__name__", name)
    wrapper.__qualname__ = getattr(fn, "__qualname__", name)


class StepFunction:
    """A step (made by :func:`step`): checkpointed when a workflow calls it."""

    def __init__(self, fn: Callable[..., Any], name: str, retry: Retry, timeout: float | None) -> None:
        self.fn = fn
        self.name = name
        self.retry = retry
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        _take_names(self, fn, name)

    def __repr__(self) -> str:
        return f"<step {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = _RUN.get()
        if run is None or _STEP.get() is not None:
            return self.fn(*args, **kwargs)
        if self.is_async:
            return self._acall(run, args, kwargs)
        return self._call(run, args, kwargs)

    def _call(self, run: _Run, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        number, found = run.next_step(self.name)
        if found is not None:
            return _replayed(found)
        started = time.time()
        attempt = 0
        while True:
            attempt += 1
            token = _STEP.set(run.context(number, self.name, attempt))
            try:
                value = self.fn(*args, **kwargs) if self.timeout is None else self._timed(args, kwargs)
                text = to_json_text(value, "result")
            except Exception as exc:
                if isinstance(exc, _CONTROL):
                    raise
                if self.retry.retries(exc) and attempt < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt))
                    continue
                failure = _failure(number, self.name, exc, attempt, started)
                recorded = run.record(failure)
                if recorded is not None and recorded.status == "succeeded":  # another executor recorded it first
                    return recorded.result
                error = failure["error"] if recorded is None else recorded.error
                raise _step_failed(run.workflow.id, number, self.name, error) from exc
            finally:
                _STEP.reset(token)
            result = json_copy(value, text)  # what a replay returns, so the first execution returns it too
            recorded = run.record(_success(number, self.name, result, attempt, started), text)
            return result if recorded is None else _replayed(recorded)

    def _timed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the step in a thread of its own, given up on (not stopped) after its timeout."""
        context = contextvars.copy_context()
        future = _STEP_THREADS.submit(context.run, self.fn, *args, **kwargs)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            raise TimeoutError(f"step {self.name} took longer than {self.timeout:g} s") from None

    async def _acall(self, run: _Run, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        number, found = run.next_step(self.name)
        if found is not None:
            return _replayed(found)
        started = time.time()
        attempt = 0
        while True:
            attempt += 1
            token = _STEP.set(run.context(number, self.name, attempt))
            try:
                if self.timeout is None:
                    value = await self.fn(*args, **kwargs)
                else:
                    try:
                        value = await asyncio.wait_for(self.fn(*args, **kwargs), self.timeout)
                    except TimeoutError:
                        raise TimeoutError(f"step {self.name} took longer than {self.timeout:g} s") from None
                result = _json_copy(value, "result")
            except Exception as exc:
                if isinstance(exc, _CONTROL):
                    raise
                if self.retry.retries(exc) and attempt < self.retry.attempts:
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                failed = await run.arecord(_failure(number, self.name, exc, attempt, started))
                if failed.status == "succeeded":  # another executor recorded it first
                    return failed.result
                raise _step_failed(failed.workflow_id, failed.step, failed.name, failed.error) from exc
            finally:
                _STEP.reset(token)
            return _replayed(await run.arecord(_success(number, self.name, result, attempt, started)))


def _success(number: int, name: str, result: Any, attempts: int, started: float) -> dict[str, Any]:
    return {
        "step": number,
        "name": name,
        "status": "succeeded",
        "result": result,
        "attempts": attempts,
        "started_at": started,
    }


def _failure(number: int, name: str, exc: BaseException, attempts: int, started: float) -> dict[str, Any]:
    return {
        "step": number,
        "name": name,
        "status": "failed",
        "error": error_of(exc),
        "attempts": attempts,
        "started_at": started,
    }


def _replayed(record: StepRecord) -> Any:
    if record.status == "succeeded":
        return record.result
    raise _step_failed(record.workflow_id, record.step, record.name, record.error)


def _step_failed(workflow_id: str, step: int, name: str, error: Mapping[str, Any] | None) -> StepFailed:
    details = dict(error or {})
    return StepFailed(
        f"step {step} ({name}) of workflow {workflow_id} failed: {details.get('type')}: {details.get('message')}",
        workflow_id=workflow_id,
        step=step,
        error=details,
    )


# -- recovery ------------------------------------------------------------------------------------


def import_modules(modules: Iterable[str], registry: Registry = REGISTRY) -> list[str]:
    """Import modules that register workflows; the names they registered.

    Raises:
        ConfigError: A module cannot be imported.
    """
    import importlib

    from hivemem.errors import ConfigError

    before = set(registry.names())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import workflow module {module!r}: {exc}") from None
    return sorted(set(registry.names()) - before) or registry.names()


def recover(hive: Any, names: Iterable[str] | None = None, *, registry: Registry = REGISTRY) -> dict[str, int]:
    """Resume every unfinished run of the registered workflows (``names``: only these) on ``hive``.

    Each run is resumed only if its lease is free right now (taken with no
    wait), so concurrent recoverers split the runs and each runs once; a run
    whose executor is alive (or crashed less than its lease ttl ago) is
    skipped and left to it (or to a later recover). Runs go one after another
    in this thread; an async workflow runs in its own event loop here.

    Returns:
        Counts: ``resumed`` (run to an end here), ``succeeded``, ``failed``
        (ended in failure or cancellation), ``held`` (skipped: another executor
        holds it), ``unknown`` (skipped: no function registered by that name).
    """
    wanted = None if names is None else set(names)
    counts = {"resumed": 0, "succeeded": 0, "failed": 0, "held": 0, "unknown": 0}
    seen: set[tuple[str, str]] = set()
    while True:
        batch = [
            wf
            for wf in hive.workflows(status=list(UNFINISHED), limit=1000)
            if (wf.namespace, wf.id) not in seen and (wanted is None or wf.name in wanted)
        ]
        if not batch:
            return counts
        for wf in batch:
            seen.add((wf.namespace, wf.id))
            function = registry.get(wf.name)
            if function is None:
                counts["unknown"] += 1
                continue
            on = function.hive if function.hive is not None else hive
            try:
                lease = on.lock(resource_of(wf.namespace, wf.id), ttl=function.lease_ttl, wait=0)
            except LockHeld:
                counts["held"] += 1
                continue
            counts["resumed"] += 1
            try:
                if function.is_async:
                    asyncio.run(function._arun(on, wf.inputs, wf.id, lease, wf.namespace))
                else:
                    function._run(on, wf.inputs, wf.id, lease, wf.namespace)
                counts["succeeded"] += 1
            except Exception:  # the run recorded its own failure; recovery goes on with the next
                counts["failed"] += 1
