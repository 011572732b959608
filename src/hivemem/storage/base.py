"""The abstract Store: what every backend provides, and nothing more.

Services hold the rules; a Store holds the data. A Store offers two ways in:
:meth:`Store.write` runs a function inside one write transaction (retrying
transient failures such as a busy database) and :meth:`Store.read` runs one
inside a consistent snapshot. Both hand the function a :class:`StoreTx`, the
small set of primitive operations a backend implements in its own SQL. Search
is the only place where dialects really differ (full text, vectors), so it
has its own two hooks.
"""

from __future__ import annotations

import builtins
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from hivemem.access import ApiKey
from hivemem.clock import to_datetime
from hivemem.models import Conflict, Group, Memory, Relation
from hivemem.validation import in_prefix

T = TypeVar("T")

#: Columns ``Hive.list`` may order by.
ORDER_COLUMNS = ("created_at", "updated_at", "occurred_at", "importance")


@dataclass(frozen=True, slots=True)
class MemoryFilter:
    """Which memories a read may see.

    Attributes:
        namespace: Namespace prefix (segment-wise), or None for all.
        kinds: Allowed kinds, or None for all.
        exclude_kinds: Kinds that never pass (recall leaves out plan, task and agent records by default).
        tiers: Allowed tiers, or None for all.
        tags: Tags a memory must all carry.
        agent_id: Only this agent's memories.
        session_id: Only this session's memories.
        since: Earliest event time (``occurred_at``, else ``created_at``), Unix seconds.
        until: Latest event time, Unix seconds (exclusive).
        where: Normalised ``data`` conditions (see :func:`hivemem.validation.where`).
        now: Memories that expired at or before this time are invisible.
        within: The namespace prefixes the reader may see (its grants), or None
            for every namespace. Unlike ``namespace`` (what the caller asked
            for) this is who the caller is; a memory must pass both.
    """

    now: float
    namespace: str | None = None
    kinds: tuple[str, ...] | None = None
    exclude_kinds: tuple[str, ...] = ()
    tiers: tuple[str, ...] | None = None
    tags: tuple[str, ...] = ()
    agent_id: str | None = None
    session_id: str | None = None
    since: float | None = None
    until: float | None = None
    where: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    within: tuple[str, ...] | None = None

    def sees_namespace(self, ns: str) -> bool:
        """Whether memories of namespace ``ns`` pass ``namespace`` and ``within``."""
        if not in_prefix(ns, self.namespace):
            return False
        return self.within is None or any(in_prefix(ns, prefix) for prefix in self.within)


@dataclass(frozen=True, slots=True)
class ScoredId:
    """A search candidate: a memory id and the backend's raw score (higher is better)."""

    id: str
    score: float


@dataclass(frozen=True, slots=True)
class RankFacts:
    """What recall weighs besides relevance, read for every candidate (cheaper than whole memories).

    Attributes:
        importance: The memory's importance.
        when: Event time, else creation time, Unix seconds (None if neither is known).
        success: An episode's outcome (``data["success"]`` when it is a bool); None for anything else.
    """

    importance: float
    when: float | None
    success: bool | None

    @classmethod
    def of(cls, memory: Memory) -> RankFacts:
        """The facts of a whole memory."""
        when = memory.occurred_at or memory.created_at
        success = memory.data.get("success") if memory.kind == "episode" else None
        return cls(
            memory.importance,
            None if when is None else when.timestamp(),
            success if isinstance(success, bool) else None,
        )


class EventWaiter(ABC):
    """Blocks until new events may exist; a context manager that frees what it holds (a connection)."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Return when events may have committed since the last call, or after ``timeout`` seconds."""

    def close(self) -> None:  # noqa: B027 - most waiters hold nothing
        """Release what the waiter holds."""

    def __enter__(self) -> EventWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CommitSignal:
    """Wakes this process's event waiters after a commit that stored events."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._commits = 0

    def notify(self) -> None:
        """Say that events committed."""
        with self._changed:
            self._commits += 1
            self._changed.notify_all()

    def waiter(self, poll: float) -> EventWaiter:
        """A waiter woken by :meth:`notify`, and at least every ``poll`` seconds (for other processes' commits)."""
        return _SignalWaiter(self, poll)


class _SignalWaiter(EventWaiter):
    def __init__(self, signal: CommitSignal, poll: float) -> None:
        self._signal = signal
        self._poll = poll
        self._seen = signal._commits

    def wait(self, timeout: float) -> None:
        signal = self._signal
        with signal._changed:
            signal._changed.wait_for(lambda: signal._commits != self._seen, timeout=min(timeout, self._poll))
            self._seen = signal._commits


class StoreTx(ABC):
    """Primitive operations inside one transaction of a backend."""

    @abstractmethod
    def get(self, memory_id: str, now: float) -> Memory | None:
        """The live (unexpired) memory with this id, or None."""

    @abstractmethod
    def get_many(self, ids: Sequence[str], flt: MemoryFilter) -> dict[str, Memory]:
        """The memories among ``ids`` that pass ``flt``, by id."""

    def rank_facts(self, ids: Sequence[str], flt: MemoryFilter) -> dict[str, RankFacts]:
        """:class:`RankFacts` of the memories among ``ids`` that pass ``flt``, by id.

        Backends override this with a query that skips the content and data.
        """
        return {i: RankFacts.of(m) for i, m in self.get_many(ids, flt).items()}

    @abstractmethod
    def get_by_key(self, namespace: str, key: str, now: float) -> Memory | None:
        """The live memory stored under ``key`` in exactly ``namespace``, or None."""

    @abstractmethod
    def insert(self, memory: Memory) -> None:
        """Store a new memory (its id and key are free)."""

    @abstractmethod
    def replace(self, memory: Memory, previous: Memory) -> None:
        """Store ``memory`` as the new version of ``previous`` and keep ``previous`` in history."""

    @abstractmethod
    def record_access(self, memory_id: str, importance: float, now: float) -> None:
        """Set importance, add one to the access count and stamp the last access (no new version)."""

    @abstractmethod
    def history(self, memory_id: str) -> builtins.list[Memory]:
        """Earlier versions of a memory, oldest first."""

    @abstractmethod
    def past_version(self, memory: Memory, version: int) -> Memory | None:
        """The earlier version ``version`` of ``memory`` from its history, or None."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Delete memories with their history, conflicts, relations and group memberships; returns how many."""

    @abstractmethod
    def child_ids(self, parent_ids: Sequence[str]) -> builtins.list[str]:
        """Ids of memories whose ``parent_id`` is one of ``parent_ids``."""

    @abstractmethod
    def ids_in_namespace(self, prefix: str) -> builtins.list[str]:
        """Ids of every memory (expired included) under a namespace prefix."""

    @abstractmethod
    def list(
        self, flt: MemoryFilter, order_by: str, descending: bool, after: tuple[Any, str] | None, limit: int
    ) -> builtins.list[Memory]:
        """Memories passing ``flt`` in keyset order of ``(order_by, id)``, starting after ``after``."""

    @abstractmethod
    def expired_ids(self, now: float, limit: int) -> builtins.list[str]:
        """Up to ``limit`` ids of memories that expired at or before ``now``."""

    @abstractmethod
    def put_relation(self, relation: Relation) -> None:
        """Create or update (strength) the edge ``(src, dst, type)``."""

    @abstractmethod
    def relations(self, memory_id: str, type: str | None, direction: str) -> builtins.list[Relation]:
        """Edges touching a memory: ``out``, ``in`` or ``both``."""

    @abstractmethod
    def put_group(self, group: Group) -> bool:
        """Create a group; False if the name is taken."""

    @abstractmethod
    def get_group(self, name: str) -> Group | None:
        """The group named ``name``, or None."""

    @abstractmethod
    def add_member(self, group: str, memory_id: str, now: float) -> None:
        """Add a memory to a group (idempotent)."""

    @abstractmethod
    def member_ids(self, group: str) -> builtins.list[str]:
        """Ids of a group's members in the order they were added."""

    @abstractmethod
    def stats(self, flt: MemoryFilter) -> builtins.list[tuple[str, str, int, int]]:
        """``(kind, tier, count, bytes)`` rows for the memories ``flt`` passes."""

    @abstractmethod
    def put_conflict(self, conflict: Conflict) -> None:
        """Record a resolved conflict."""

    @abstractmethod
    def conflicts(self, flt: MemoryFilter, memory_id: str | None, limit: int) -> builtins.list[Conflict]:
        """Up to ``limit`` conflicts of the memories ``flt`` passes (or of ``memory_id`` only), newest first."""

    @abstractmethod
    def count_conflicts(self, flt: MemoryFilter) -> int:
        """How many conflicts the memories ``flt`` passes have had."""

    @abstractmethod
    def put_setting(self, prefix: str, name: str, value: str | None, now: float) -> None:
        """Set (or with None, remove) setting ``name`` on a namespace prefix."""

    @abstractmethod
    def settings(self, prefixes: Sequence[str], name: str) -> dict[str, str]:
        """Setting ``name`` on each of ``prefixes`` (prefixes of one namespace) that has it, by prefix."""

    @abstractmethod
    def known_hashes(self, hashes: Sequence[str]) -> set[str]:
        """Which content hashes already have a stored embedding."""

    @abstractmethod
    def put_embeddings(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """Store embeddings by content hash (existing ones are kept)."""

    @abstractmethod
    def prune_embeddings(self, limit: int) -> int:
        """Delete up to ``limit`` embeddings no memory refers to; returns how many."""

    @abstractmethod
    def put_api_key(self, key: ApiKey) -> None:
        """Store a new API key record."""

    @abstractmethod
    def api_keys(self, key_id: str | None = None) -> builtins.list[ApiKey]:
        """Every API key record (revoked ones too), or the one with ``key_id``."""

    @abstractmethod
    def revoke_api_key(self, key_id: str, now: float) -> bool:
        """Mark a key revoked; False if there is no such key or it was revoked already."""

    @abstractmethod
    def put_once(self, principal: str, key: str, result: str, now: float, expired_before: float) -> bool:
        """Record an idempotency key and its result; False if a live record of it exists."""

    @abstractmethod
    def get_once(self, principal: str, key: str, since: float) -> str | None:
        """The result recorded for an idempotency key at or after ``since``, if any."""

    @abstractmethod
    def prune_once(self, before: float) -> int:
        """Delete idempotency records made before ``before``; returns how many."""

    # -- leases (hivemem.leases); resources are keyed by namespace root first, like memories ------

    @abstractmethod
    def db_now(self) -> float:
        """The database's clock, Unix seconds: leases expire by it, whatever the callers' clocks say."""

    @abstractmethod
    def claim_resource(self, root: str, resource: str) -> None:
        """Create the resource's fencing counter if new, and hold it until commit (one granter at a time)."""

    @abstractmethod
    def live_lease_modes(self, root: str, resource: str, now: float) -> builtins.list[str]:
        """Drop the resource's leases that lapsed by ``now``; the modes of those left."""

    @abstractmethod
    def waiting_writers(self, root: str, resource: str, now: float) -> builtins.list[str]:
        """Drop lapsed writer registrations; ids of the live ones, oldest first."""

    @abstractmethod
    def lease_state(self, root: str, resource: str) -> tuple[builtins.list[str], builtins.list[str]]:
        """Read only: the modes of the resource's unlapsed leases and its live waiting writers, oldest first."""

    @abstractmethod
    def put_waiter(self, root: str, resource: str, waiter_id: str, now: float, expires_at: float) -> None:
        """Register (or keep alive, keeping its place) a writer waiting for the resource."""

    @abstractmethod
    def drop_waiter(self, root: str, resource: str, waiter_id: str) -> None:
        """Remove a writer's registration (it got the lease or gave up)."""

    @abstractmethod
    def grant_lease(
        self,
        root: str,
        resource: str,
        lease_id: str,
        mode: str,
        principal: str,
        holder: str,
        now: float,
        expires_at: float,
    ) -> int:
        """Store a lease of ``principal`` with the resource's next fencing token; returns the token."""

    @abstractmethod
    def renew_lease(
        self, root: str, resource: str, lease_id: str, principal: str, now: float, expires_at: float
    ) -> float | None:
        """Move the expiry of ``principal``'s live lease; the new expiry, or None if it lapsed or is gone."""

    @abstractmethod
    def release_lease(self, root: str, resource: str, lease_id: str, principal: str, now: float) -> bool:
        """Delete ``principal``'s lease; whether it was still live."""

    @abstractmethod
    def fence_token(self, root: str, resource: str) -> int:
        """The resource's newest fencing token (0 if never granted), stable until commit."""

    @abstractmethod
    def leases(self, now: float) -> builtins.list[tuple[str, str, str, int, str, float, float]]:
        """Live leases as ``(resource, lease_id, mode, token, holder, acquired_at, expires_at)``."""

    @abstractmethod
    def prune_leases(self, now: float) -> int:
        """Delete every lapsed lease and waiter registration; returns how many leases."""

    # -- events (hivemem.events) -----------------------------------------------------------------

    @abstractmethod
    def record_event(self, namespace: str, type: str, subject: str, data: Mapping[str, Any]) -> None:
        """Add an event to this transaction (numbered and stored when it commits)."""

    @abstractmethod
    def append_event(self, namespace: str, type: str, subject: str, data: Mapping[str, Any]) -> tuple[int, float]:
        """Store an event now (its root stays locked until commit); returns its number and time."""

    @abstractmethod
    def flush_events(self) -> builtins.list[str]:
        """Number this transaction's recorded events per root and store them; every root that got events.

        The store calls it just before commit. A root's numbers are taken under a
        lock held until commit, so events commit in the order of their numbers.
        """

    @abstractmethod
    def prune_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` events, oldest first, of roots with events from before ``before`` (database time).

        A root's events are deleted in number order up to its last one from
        before ``before``, so what a root keeps is always its newest numbers,
        without gaps. Returns how many were deleted.
        """

    @abstractmethod
    def first_event_seq(self, root: str) -> int:
        """The number of ``root``'s oldest kept event (its next number if none is kept, 1 if none ever was)."""

    @abstractmethod
    def events(
        self,
        root: str,
        after: int,
        limit: int,
        prefix: str,
        within: Sequence[str] | None,
        types: Sequence[str] | None,
        subject: str | None = None,
    ) -> builtins.list[tuple[Any, ...]]:
        """Up to ``limit`` events of ``root`` after ``after`` under ``prefix`` (and ``within``), oldest first,
        as ``(seq, namespace, type, subject, data, at)``."""

    @abstractmethod
    def inbox_cursor(self, namespace: str, agent: str) -> int:
        """The last message sequence number ``agent`` acknowledged in ``namespace`` (0: none)."""

    @abstractmethod
    def put_inbox_cursor(self, namespace: str, agent: str, seq: int) -> None:
        """Move the cursor forward to ``seq`` (never back)."""

    # -- working memory (hivemem.working); buffers are keyed by namespace root first ---------------

    @abstractmethod
    def working_buffer(self, key: str, *, create_at: float | None = None) -> dict[str, Any] | None:
        """The buffer's settings and counters, or None; a write transaction holds the row until commit.

        With ``create_at``, an absent buffer is first created empty (settings ``{}``).
        """

    @abstractmethod
    def put_working_buffer(self, key: str, row: Mapping[str, Any], now: float) -> None:
        """Store the settings and counters of an existing buffer."""

    @abstractmethod
    def working_entries(self, key: str) -> builtins.list[dict[str, Any]]:
        """Every message of the buffer, oldest first (seq, role, content, tokens, priority, pinned,
        metadata, created_at, last_used, uses)."""

    @abstractmethod
    def add_working_message(self, key: str, message: Mapping[str, Any]) -> None:
        """Store one message of the buffer."""

    @abstractmethod
    def drop_working_messages(self, key: str, seqs: Sequence[int]) -> None:
        """Delete the buffer's messages with these seqs."""

    @abstractmethod
    def clear_working_messages(self, key: str) -> None:
        """Delete every message of the buffer."""

    @abstractmethod
    def touch_working_messages(self, key: str, seqs: Sequence[int], tick: int) -> None:
        """Mark messages read at ``tick`` (``last_used``) and count the read (``uses``)."""

    # -- workflows (hivemem.workflows); keyed by namespace root first, like memories ------------

    @abstractmethod
    def put_workflow(self, row: Mapping[str, Any]) -> bool:
        """Store a new workflow (:data:`WORKFLOW_COLUMNS` by name) unless its id is taken; whether it was new."""

    @abstractmethod
    def workflow(self, root: str, workflow_id: str) -> tuple[Any, ...] | None:
        """The workflow's row in :data:`WORKFLOW_COLUMNS` order (locked until commit in a write), or None."""

    @abstractmethod
    def set_workflow(
        self,
        root: str,
        workflow_id: str,
        status: str,
        owner: str | None,
        result: str | None,
        error: str | None,
        now: float,
    ) -> None:
        """Set a workflow's status, executor, result and error (JSON text)."""

    @abstractmethod
    def workflow_steps(self, root: str, workflow_id: str) -> builtins.list[tuple[Any, ...]]:
        """The workflow's recorded steps in :data:`STEP_COLUMNS` order, by step number."""

    @abstractmethod
    def put_step(self, root: str, namespace: str, row: Mapping[str, Any], fence: tuple[str, int] | None) -> bool:
        """Record a finished step (:data:`STEP_COLUMNS` by name); whether it was.

        Only if its run is in ``namespace`` and unfinished (pending or running),
        ``fence`` (the resource, in ``root``, and token of the executor's lease)
        has not been passed by a newer grant, and the step's number is not taken. Otherwise nothing is written,
        and the caller's checks find out which of these failed.
        """

    @abstractmethod
    def workflow_rows(
        self, statuses: Sequence[str] | None, prefix: str | None, within: Sequence[str] | None, limit: int
    ) -> builtins.list[tuple[Any, ...]]:
        """Up to ``limit`` workflows under ``prefix`` (and ``within``) with one of ``statuses``, oldest first."""


class Store(ABC):
    """A backend: transactions plus the two search hooks."""

    #: Whether the store keeps data after close (False for ``:memory:``).
    durable: bool = True

    @abstractmethod
    def write(self, fn: Callable[[StoreTx], T], *, sync: bool = True) -> T:
        """Run ``fn`` in one write transaction, retrying transient failures.

        ``fn`` may be run more than once, so it must not have effects outside
        the transaction. Errors it raises roll the transaction back.

        ``sync=False`` lets a backend acknowledge the commit before the disk
        has it, for writes whose loss in a power failure is harmless and
        self-healing (a lease's release: the lease then lapses at its ttl).
        The commit is still atomic and survives a crash of the process; the
        next synced commit makes it durable too. Backends where the saving
        would cost more than a power failure (PostgreSQL: an asynchronous
        commit is lost when the server crashes) sync anyway.
        """

    @abstractmethod
    def read(self, fn: Callable[[StoreTx], T], *, primary: bool = False) -> T:
        """Run ``fn`` against one consistent snapshot.

        A backend with read replicas may serve the read from one (it can lag);
        ``primary=True`` asks for the primary, for reads a write depends on.
        """

    def put_step(self, root: str, namespace: str, row: Mapping[str, Any], fence: tuple[str, int] | None) -> bool:
        """:meth:`StoreTx.put_step` in a durable transaction of its own; whether the step was recorded.

        A workflow's sync checkpoint, one per step. A backend may commit the
        statement by itself, without a transaction around it.
        """
        return self.write(lambda tx: tx.put_step(root, namespace, row, fence))

    @abstractmethod
    def keyword_search(self, terms: Sequence[str], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        """Best ``limit`` memories for any of ``terms`` (stemmed full text, BM25), best first."""

    @abstractmethod
    def vector_search(self, vector: NDArray[np.float32], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        """Best ``limit`` memories by cosine similarity to ``vector``, best first.

        A backend may return fewer than ``limit`` although more match ``flt``
        (approximate or post-filtered search); callers widen ``limit`` then.
        """

    @abstractmethod
    def bind_embedder(self, name: str, dim: int | None) -> None:
        """Record which embedder made the stored vectors; refuse a different one.

        Raises:
            ConfigError: The store holds vectors of another embedder or dimension.
        """

    @abstractmethod
    def event_waiter(self) -> EventWaiter:
        """Something to block on until new events may have committed (a hint; the events table is the truth)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


#: Column order every backend selects memories in; :func:`memory_from_row` reads it.
MEMORY_COLUMNS = (
    "id",
    "namespace",
    "content",
    "kind",
    "tier",
    "key",
    "data",
    "tags",
    "importance",
    "agent_id",
    "session_id",
    "parent_id",
    "occurred_at",
    "created_at",
    "updated_at",
    "expires_at",
    "access_count",
    "last_accessed_at",
    "version",
    "content_hash",
    "sensitive",
)


#: Column order of the workflows table, as :meth:`StoreTx.workflow` returns a row.
WORKFLOW_COLUMNS = (
    "root",
    "id",
    "namespace",
    "name",
    "inputs",
    "status",
    "principal",
    "owner",
    "deadline",
    "created_at",
    "updated_at",
    "result",
    "error",
)
#: Column order of a recorded workflow step (without its root), as :meth:`StoreTx.workflow_steps` returns rows.
STEP_COLUMNS = ("workflow_id", "step", "name", "status", "result", "error", "attempts", "started_at", "finished_at")


def memory_from_row(row: Sequence[Any]) -> Memory:
    """Build a Memory from a row in :data:`MEMORY_COLUMNS` order (times as Unix seconds, JSON as text or parsed)."""
    values = dict(zip(MEMORY_COLUMNS, row, strict=True))
    for name in ("data", "tags"):
        if isinstance(values[name], str | bytes):
            values[name] = json.loads(values[name])
    values["tags"] = tuple(values["tags"])
    for name in ("occurred_at", "created_at", "updated_at", "expires_at", "last_accessed_at"):
        values[name] = to_datetime(values[name])
    values["sensitive"] = bool(values["sensitive"])
    return Memory(**values)


def memory_to_row(memory: Memory) -> dict[str, Any]:
    """A Memory as column values (times as Unix seconds, JSON as text), the reverse of :func:`memory_from_row`."""
    values = {name: getattr(memory, name) for name in MEMORY_COLUMNS}
    values["data"] = json.dumps(dict(memory.data), separators=(",", ":"))
    values["tags"] = json.dumps(list(memory.tags))
    for name in ("occurred_at", "created_at", "updated_at", "expires_at", "last_accessed_at"):
        value = values[name]
        values[name] = value.timestamp() if value is not None else None
    values["sensitive"] = int(memory.sensitive)
    return values
