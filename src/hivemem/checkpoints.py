"""What a workflow run records, and the Hive's primitives that record it (:mod:`hivemem.workflows`).

The records (:class:`Workflow`, :class:`StepRecord`), the checks of their
arguments, and one store transaction per primitive: start a run (and claim it
for an executor, fenced by its lease), record finished steps, finish, cancel,
show and list. They are Hive methods with HTTP routes, so a workflow runs in
the caller's process whatever the deployment; the decorators and the runner
that call them live in :mod:`hivemem.workflows`. Each primitive is idempotent
by design (a step number keeps its first record; finishing or cancelling an
ended run returns it unchanged), so a retried request needs no key.
"""

from __future__ import annotations

import hashlib
import json
from _json import encode_basestring_ascii, make_encoder
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from hivemem import validation as v
from hivemem.clock import utc
from hivemem.errors import InvalidInput, NotFound, WorkflowCancelled, WorkflowDiverged
from hivemem.leases import Fence, Lease, check_fence
from hivemem.storage.base import STEP_COLUMNS, WORKFLOW_COLUMNS

if TYPE_CHECKING:
    from hivemem.hive import Hive

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
#: Statuses of a run that :func:`recover` resumes.
UNFINISHED = ("pending", "running")
#: A workflow id is one namespace segment with room for the lease resource's ``wf.`` prefix.
MAX_ID = 60

# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A finished step as recorded.

    Attributes:
        workflow_id: The run it belongs to.
        step: Its number in the run (1, 2, 3... in call order).
        name: The step function's name (a replay must call the same one here).
        status: ``succeeded`` or ``failed``.
        result: Its JSON result (None for a failure).
        error: For a failure, ``{"type": ..., "message": ...}`` of the last attempt's error.
        attempts: How many attempts it took.
        started_at: When its first attempt (of the execution that finished it) began.
        finished_at: When it was recorded.
    """

    workflow_id: str
    step: int
    name: str
    status: str
    result: Any
    error: Mapping[str, Any] | None
    attempts: int
    started_at: datetime
    finished_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-ready data."""
        out = {name: getattr(self, name) for name in _STEP_FIELDS}
        out["error"] = None if self.error is None else dict(self.error)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> StepRecord:
        """Rebuild a step from :meth:`to_dict` output."""
        values = {name: payload[name] for name in _STEP_FIELDS}
        values["started_at"] = datetime.fromisoformat(payload["started_at"])
        values["finished_at"] = datetime.fromisoformat(payload["finished_at"])
        return cls(**values)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StepRecord:
        """A step from a row in :data:`hivemem.storage.base.STEP_COLUMNS` order."""
        wid, step, name, status, result, error, attempts, started, finished = row
        return cls(
            wid,
            int(step),
            name,
            status,
            None if result is None else json.loads(result),
            None if error is None else json.loads(error),
            int(attempts),
            utc(float(started)),
            utc(float(finished)),
        )


#: A step record travels (to_dict) with the fields its row is stored with.
_STEP_FIELDS = STEP_COLUMNS


@dataclass(frozen=True, slots=True)
class Workflow:
    """One run of a workflow as recorded.

    Attributes:
        id: The run's id, unique in its namespace root.
        namespace: Where it lives (grants apply).
        name: The workflow function's registered name.
        inputs: Its JSON inputs, ``{"args": [...], "kwargs": {...}}``.
        status: ``pending``, ``running``, ``succeeded``, ``failed`` or ``cancelled``.
        principal: Who started it (its step writes' idempotency keys are scoped by this name).
        owner: The lease holder of its latest executor, if it ever ran.
        deadline: When it times out, if it has a timeout.
        created_at: When it was started.
        updated_at: When its status last changed.
        result: Its JSON result once succeeded.
        error: ``{"type", "message"}`` once failed (or cancelled).
        steps: Its recorded steps, in order (only where asked for: get_workflow, start_workflow with a fence).
    """

    id: str
    namespace: str
    name: str
    inputs: Any
    status: str
    principal: str
    owner: str | None
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    result: Any
    error: Mapping[str, Any] | None
    steps: tuple[StepRecord, ...] = ()

    @property
    def finished(self) -> bool:
        """Whether the run has ended (succeeded, failed or cancelled)."""
        return self.status not in UNFINISHED

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data (times in ISO 8601)."""
        out = {name: getattr(self, name) for name in _WORKFLOW_FIELDS}
        out["error"] = None if self.error is None else dict(self.error)
        for name in ("deadline", "created_at", "updated_at"):
            value = getattr(self, name)
            out[name] = None if value is None else value.isoformat()
        out["steps"] = [s.to_dict() for s in self.steps]
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Workflow:
        """Rebuild a run from :meth:`to_dict` output."""
        values = {name: payload[name] for name in _WORKFLOW_FIELDS}
        for name in ("deadline", "created_at", "updated_at"):
            values[name] = None if payload[name] is None else datetime.fromisoformat(payload[name])
        return cls(**values, steps=tuple(StepRecord.from_dict(s) for s in payload.get("steps") or ()))

    @classmethod
    def from_row(cls, row: tuple[Any, ...], steps: Iterable[tuple[Any, ...]] = ()) -> Workflow:
        """A run from a row in :data:`hivemem.storage.base.WORKFLOW_COLUMNS` order, with its step rows."""
        _, wid, ns, name, inputs, status, principal, owner, deadline, created, updated, result, error = row
        return cls(
            wid,
            ns,
            name,
            json.loads(inputs),
            status,
            principal,
            owner,
            None if deadline is None else utc(float(deadline)),
            utc(float(created)),
            utc(float(updated)),
            None if result is None else json.loads(result),
            None if error is None else json.loads(error),
            tuple(StepRecord.from_row(s) for s in steps),
        )


#: A run travels (to_dict) with the columns it is stored with, but for its namespace root.
_WORKFLOW_FIELDS = WORKFLOW_COLUMNS[1:]


# -- checks shared by the Hive's primitives ------------------------------------------------------


def check_id(value: object, field: str = "workflow_id") -> str:
    """A run id: one namespace segment (letters, digits, ``_.:@-``) of at most :data:`MAX_ID` characters.

    Raises:
        InvalidInput: Anything else.
    """
    if not isinstance(value, str) or len(value) > MAX_ID or "/" in value:
        raise InvalidInput(field, f"must be letters, digits and _.:@- (at most {MAX_ID} characters)", value=repr(value))
    return v.namespace(value, field)


def workflow_name(value: object, field: str = "name") -> str:
    """A workflow or step name: non-empty text of at most 200 characters.

    Raises:
        InvalidInput: Anything else.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInput(field, "must be non-empty text of at most 200 characters", value=repr(value))
    return v.encodable(value, field)


def statuses(value: object, field: str = "status") -> tuple[str, ...] | None:
    """A ``status`` filter: None (all), one status, or a list of them.

    Raises:
        InvalidInput: Not one of :data:`STATUSES`.
    """
    if value is None:
        return None
    wanted = (value,) if isinstance(value, str) else value
    if not isinstance(wanted, list | tuple) or not wanted or any(s not in STATUSES for s in wanted):
        raise InvalidInput(field, f"must be one of {', '.join(STATUSES)} (or a list of them)", value=repr(value))
    return tuple(wanted)


def _unencodable(value: object) -> NoReturn:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: json.dumps(value, separators=(",", ":"), allow_nan=False), with json's C encoder built once:
#: JSONEncoder.encode builds one on every call, most of what encoding a small value costs. It keeps
#: no circular-reference markers (markers shared between threads would see a dict two threads encode
#: at once as a cycle), so a cycle ends in RecursionError instead of ValueError.
_encode = make_encoder(None, _unencodable, encode_basestring_ascii, None, ":", ",", False, False, False)


def to_json_text(value: object, field: str) -> str:
    """``value`` as compact JSON text.

    Raises:
        InvalidInput: It is not JSON (a set, a datetime, NaN, an object with non-text keys...).
    """
    try:
        return "".join(_encode(value, 0))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(field, f"must be JSON-serialisable: {exc}") from None


#: Types whose values come back from JSON as they went in (not subclasses: an enum member comes back a plain value).
_SAME_AS_JSON = frozenset({str, int, float, bool, type(None)})


def json_copy(value: object, text: str) -> Any:
    """What ``text``, ``value`` as JSON, decodes to: ``value`` itself when that is the same."""
    return value if type(value) in _SAME_AS_JSON else json.loads(text)


def _bounded(hive: Hive, text: str, field: str) -> str:
    """JSON ``text``, which must be at most the Hive's ``max_data_bytes``.

    Raises:
        InvalidInput: It is longer.
    """
    if len(text.encode()) > hive.config.max_data_bytes:
        raise InvalidInput(field, f"is over {hive.config.max_data_bytes} bytes as JSON")
    return text


def error_record(value: object, field: str = "error") -> dict[str, str]:
    """An error as recorded: ``{"type": text, "message": text}``.

    Raises:
        InvalidInput: Anything else.
    """
    if not isinstance(value, Mapping) or set(value) != {"type", "message"}:
        raise InvalidInput(field, "must be {'type': ..., 'message': ...}")
    if not all(isinstance(value[k], str) for k in value):
        raise InvalidInput(field, "type and message must be text")
    return {"type": value["type"][:200], "message": value["message"][:2000]}


def resource_of(namespace: str, wid: str) -> str:
    """The lease resource an executor of run ``wid`` holds."""
    return f"{namespace}/wf.{wid}"


def derived_id(namespace: str, name: str, inputs: Any) -> str:
    """The id of a run not given one: a digest of its namespace, workflow name and inputs."""
    text = json.dumps([namespace, name, inputs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def error_of(exc: BaseException) -> dict[str, str]:
    """How a raised error is recorded."""
    return {"type": type(exc).__name__, "message": str(exc)[:2000]}


def diverged(wid: str, number: int, recorded: str, called: str | None) -> WorkflowDiverged:
    doing = f"called {called!r}" if called is not None else "ended"
    return WorkflowDiverged(
        f"workflow {wid} replayed differently: step {number} was {recorded!r}, the code now {doing}",
        workflow_id=wid,
        step=number,
        recorded=recorded,
        called=called,
    )


# -- the Hive's checkpoint primitives (one store transaction each) --------------------------------


def _checked_ns(hive: Hive, namespace: object, level: str) -> str:
    ns = v.namespace(namespace)
    hive._may(level, ns)
    return ns


def _found(tx: Any, hive: Hive, ns: str, wid: str) -> Workflow:
    """The run ``wid`` in ``ns`` (locked in a write), or NotFound (also for one the principal may not read)."""
    row = tx.workflow(v.root_of(ns), wid)
    if row is None or row[2] != ns or not hive.principal.allows("read", ns):
        raise NotFound(f"no workflow {wid} in {ns}", workflow_id=wid, namespace=ns)
    return Workflow.from_row(row)


def _run_fence(fence: object, ns: str, wid: str) -> Fence:
    """The executor's fence, which must be on the run's own lease resource.

    Raises:
        InvalidInput: Not a fence, or a fence on another resource.
    """
    fenced = Fence.of(fence)
    if fenced.resource != resource_of(ns, wid):
        raise InvalidInput("fence", f"must be the lease on {resource_of(ns, wid)}", resource=fenced.resource)
    return fenced


def start_run(
    hive: Hive, name: object, namespace: object, wid: object, inputs: object, deadline: object, fence: object
) -> Workflow:
    """:meth:`Hive.start_workflow`."""
    checked_name = workflow_name(name)
    ns = _checked_ns(hive, namespace, "write")
    checked_id = check_id(wid)
    text = _bounded(hive, to_json_text(inputs, "inputs"), "inputs")
    ends = v.timestamp(deadline, "deadline")
    fenced = None if fence is None else _run_fence(fence, ns, checked_id)
    root = v.root_of(ns)

    def write(tx: Any) -> Workflow:
        if fenced is not None:
            check_fence(tx, fenced)
        now = hive.clock.now()
        row = {
            "root": root,
            "id": checked_id,
            "namespace": ns,
            "name": checked_name,
            "inputs": text,
            # A run started by its executor is claimed at once.
            "status": "pending" if fenced is None else "running",
            "principal": hive.principal.name,
            "owner": None if fenced is None else f"{hive.principal.name}#{fenced.token}",
            "deadline": ends,
            "created_at": now,
            "updated_at": now,
            "result": None,
            "error": None,
        }
        if tx.put_workflow(row):
            return Workflow.from_row(tuple(row.values()))  # a new run has no steps yet
        found = _found(tx, hive, ns, checked_id)
        if found.name != checked_name:
            raise InvalidInput("workflow_id", f"is taken by a run of {found.name!r}", workflow_id=checked_id)
        if found.inputs != json.loads(text):
            raise InvalidInput("inputs", f"differ from those run {checked_id} began with", workflow_id=checked_id)
        if fenced is None:
            return found
        if not found.finished:
            tx.set_workflow(root, checked_id, "running", row["owner"], None, None, now)
        return Workflow.from_row(tx.workflow(root, checked_id), tx.workflow_steps(root, checked_id))

    return hive.store.write(write)


#: What one item of :meth:`Hive.record_steps` may hold.
STEP_ITEM_FIELDS = frozenset({"step", "name", "status", "result", "error", "attempts", "started_at"})
MAX_STEPS = 1000
#: The latest ``started_at`` a step may carry (3000-01-01): later ones are no time a datetime holds.
_LAST_SECOND = 32_503_680_000.0


def _step_item(hive: Hive, item: object, where: str) -> dict[str, Any]:
    """One checked step of a :meth:`Hive.record_steps` call, as its row lacks only the times."""
    if not isinstance(item, Mapping):
        raise InvalidInput(where, "must be a step: {'step': n, 'name': ..., 'status': ..., 'result' or 'error': ...}")
    unknown = sorted(set(item) - STEP_ITEM_FIELDS)
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown field of a step")
    status = item.get("status", "succeeded")
    if status not in ("succeeded", "failed"):
        raise InvalidInput(f"{where}.status", "must be succeeded or failed", value=repr(status))
    result_text = None
    if status == "succeeded":
        result_text = _bounded(hive, to_json_text(item.get("result"), f"{where}.result"), f"{where}.result")
    error = item.get("error")
    error_text = to_json_text(error_record(error, f"{where}.error"), "error") if status == "failed" else None
    began = item.get("started_at")
    if began is not None and (
        isinstance(began, bool) or not isinstance(began, int | float) or not 0 <= began <= _LAST_SECOND
    ):
        raise InvalidInput(f"{where}.started_at", "must be Unix seconds before the year 3000", value=repr(began))
    return {
        "step": v.positive_int(item.get("step"), f"{where}.step", 1_000_000),
        "name": workflow_name(item.get("name"), f"{where}.name"),
        "status": status,
        "result": result_text,
        "error": error_text,
        "attempts": v.positive_int(item.get("attempts", 1), f"{where}.attempts", 1_000_000),
        "started_at": None if began is None else float(began),
    }


def record_many(hive: Hive, wid: object, namespace: object, steps: object, fence: object) -> list[StepRecord]:
    """:meth:`Hive.record_steps`."""
    ns = _checked_ns(hive, namespace, "write")
    checked_id = check_id(wid)
    if isinstance(steps, str | bytes | Mapping) or not isinstance(steps, Iterable):
        raise InvalidInput("steps", "must be a list of steps")
    items = [_step_item(hive, item, f"steps[{i}]") for i, item in enumerate(steps)]
    if not items or len(items) > MAX_STEPS:
        raise InvalidInput("steps", f"must hold 1 to {MAX_STEPS} steps")
    fenced = None if fence is None else _run_fence(fence, ns, checked_id)
    root, key = v.root_of(ns), None if fenced is None else (fenced.resource, fenced.token)

    def write(tx: Any) -> list[StepRecord]:
        now = hive.clock.now()
        out = []
        for item in items:
            row = _step_row(checked_id, item, item["result"], item["error"], now)
            if tx.put_step(root, ns, row, key):
                out.append(StepRecord.from_row(tuple(row.values())))
            else:
                out.append(_recorded_instead(tx, ns, row, fenced))
        return out

    return hive.store.write(write)


class StepLog:
    """Records one run's steps for its executor in this process: :meth:`Hive.record_steps` for one step, leaner.

    A run's namespace, id, grant and fence are checked when it starts
    (:meth:`Hive.start_workflow`) and cannot change while it runs, and the
    runner makes each step's item itself (numbers in order, names checked by
    :func:`~hivemem.workflows.step`, results already JSON), so none of that is
    checked again: a sync checkpoint is one short transaction, which is most of
    what a step costs beyond its own work. The fence and the run's status are
    still checked by the store in that transaction. Embedded Hives only; over
    HTTP each checkpoint is a record_steps request.
    """

    __slots__ = ("_fence", "_hive", "_key", "_ns", "_root", "_wid")

    def __init__(self, hive: Hive, wf: Workflow, fence: Lease) -> None:
        self._hive = hive
        self._ns = wf.namespace
        self._root = v.root_of(wf.namespace)
        self._wid = wf.id
        self._fence = _run_fence(fence, wf.namespace, wf.id)
        self._key = (self._fence.resource, self._fence.token)

    def record(self, item: Mapping[str, Any], result_text: str | None) -> StepRecord | None:
        """Record a finished step: an item as the runner makes them, and its result as JSON (None if it failed).

        Returns None when it is recorded as given, or the record its number
        already had (an earlier executor of the run recorded it first).

        Raises:
            InvalidInput: Its result is over the Hive's ``max_data_bytes`` as JSON, or the run has ended.
            WorkflowCancelled, WorkflowDiverged, StaleFencingToken: As :meth:`Hive.record_steps`.
        """
        hive = self._hive
        if item["status"] == "failed":
            result, error = None, to_json_text(item["error"], "error")
        else:
            assert result_text is not None, "the runner encodes a succeeded step's result"
            result, error = _bounded(hive, result_text, "result"), None
        row = _step_row(self._wid, item, result, error, hive.clock.now())  # finished now, whenever it commits
        if hive.store.put_step(self._root, self._ns, row, self._key):
            return None
        # Every reason the step was not recorded stays true once it is (a newer fence, an ended run,
        # a taken number), so a transaction after the insert still finds it.
        return hive.store.write(lambda tx: _recorded_instead(tx, self._ns, row, self._fence))


def _step_row(wid: str, item: Mapping[str, Any], result: str | None, error: str | None, now: float) -> dict[str, Any]:
    """A step's row (:data:`STEP_COLUMNS` by name) from a checked item and its result and error as JSON text."""
    began = item["started_at"]
    return {
        "workflow_id": wid,
        "step": item["step"],
        "name": item["name"],
        "status": item["status"],
        "result": result,
        "error": error,
        "attempts": item["attempts"],
        "started_at": now if began is None else min(began, now),
        "finished_at": now,
    }


def _recorded_instead(tx: Any, ns: str, row: Mapping[str, Any], fenced: Fence | None) -> StepRecord:
    """Why :meth:`StoreTx.put_step` wrote nothing: raised, or the record its step number already has.

    Raises:
        StaleFencingToken: ``fenced`` was superseded.
        NotFound: No such run in ``ns``.
        WorkflowCancelled: The run was cancelled.
        InvalidInput: The run has ended.
        WorkflowDiverged: The number is recorded under another step's name.
    """
    wid = row["workflow_id"]
    if fenced is not None:
        check_fence(tx, fenced)
    found = tx.workflow(v.root_of(ns), wid)
    if found is None or found[2] != ns:  # read access follows from write access (checked by the caller)
        raise NotFound(f"no workflow {wid} in {ns}", workflow_id=wid, namespace=ns)
    status = found[5]  # the status alone: this parses none of the run's JSON
    if status == "cancelled":
        raise WorkflowCancelled(f"workflow {wid} was cancelled", workflow_id=wid)
    if status not in UNFINISHED:
        raise InvalidInput("workflow_id", f"run {wid} has {status}; it records no more steps")
    number = row["step"]  # the run takes steps, so the number was taken
    existing = next(StepRecord.from_row(r) for r in tx.workflow_steps(v.root_of(ns), wid) if r[1] == number)
    if existing.name != row["name"]:
        raise diverged(wid, number, existing.name, row["name"])
    return existing


def finish(
    hive: Hive, wid: object, namespace: object, status: object, result: object, error: object, lease: object
) -> Workflow:
    """:meth:`Hive.finish_workflow`."""
    ns = _checked_ns(hive, namespace, "write")
    checked_id = check_id(wid)
    if status not in ("succeeded", "failed"):
        raise InvalidInput("status", "must be succeeded or failed", value=repr(status))
    result_text = _bounded(hive, to_json_text(result, "result"), "result") if status == "succeeded" else None
    error_text = to_json_text(error_record(error), "error") if status == "failed" else None
    held = None if lease is None else Lease.of(lease)
    fenced = None if held is None else _run_fence(held, ns, checked_id)

    def write(tx: Any) -> Workflow:
        if fenced is not None:
            check_fence(tx, fenced)
        found = _found(tx, hive, ns, checked_id)
        if not found.finished:
            now = hive.clock.now()
            tx.set_workflow(v.root_of(ns), checked_id, str(status), found.owner, result_text, error_text, now)
            ended = None if result_text is None else json.loads(result_text)
            failure = None if error_text is None else json.loads(error_text)
            found = replace(found, status=str(status), result=ended, error=failure, updated_at=utc(now))
        if held is not None:
            tx.release_lease(v.root_of(held.resource), held.resource, held.lease_id, hive.principal.name, tx.db_now())
        return found

    return hive.store.write(write)


def cancel(hive: Hive, wid: object, namespace: object) -> Workflow:
    """:meth:`Hive.cancel_workflow`."""
    ns = _checked_ns(hive, namespace, "write")
    checked_id = check_id(wid)

    def write(tx: Any) -> Workflow:
        found = _found(tx, hive, ns, checked_id)
        if found.finished:
            return found
        root = v.root_of(ns)
        error = to_json_text({"type": "WorkflowCancelled", "message": f"cancelled by {hive.principal.name}"}, "error")
        tx.set_workflow(root, checked_id, "cancelled", found.owner, None, error, hive.clock.now())
        return Workflow.from_row(tx.workflow(root, checked_id))

    return hive.store.write(write)


def show(hive: Hive, wid: object, namespace: object) -> Workflow:
    """:meth:`Hive.get_workflow`."""
    ns = v.namespace(namespace)
    checked_id = check_id(wid)

    def read(tx: Any) -> Workflow:
        _found(tx, hive, ns, checked_id)
        return Workflow.from_row(tx.workflow(v.root_of(ns), checked_id), tx.workflow_steps(v.root_of(ns), checked_id))

    return hive.store.read(read, primary=True)


def listed(hive: Hive, status: object, namespace: object, limit: object) -> list[Workflow]:
    """:meth:`Hive.workflows`."""
    wanted = statuses(status)
    prefix = v.namespace_prefix(namespace)
    count = v.positive_int(limit, "limit", 1000)
    rows = hive.store.read(lambda tx: tx.workflow_rows(wanted, prefix, hive._readable(), count), primary=True)
    return [Workflow.from_row(r) for r in rows]
