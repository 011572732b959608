"""The Hive: HiveMem's one public API.

A Hive composes a Store (where data lives), a Retriever (embedding and hybrid
recall) and the record rules in :mod:`hivemem.records`. Every method checks
its input first, so a bad call is refused with the field named and nothing
written, and every write is one store transaction.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from hivemem import agents as agent_rules
from hivemem import checkpoints, leases, packing, workflows
from hivemem import plans as plan_rules
from hivemem import validation as v
from hivemem.access import ApiKey, Grant, Principal, hash_key, key_id_of, new_key
from hivemem.agents import AgentProfile, AgentScore, ExperienceContext, Outcome
from hivemem.checkpoints import StepRecord, Workflow
from hivemem.clock import Clock, SystemClock, new_id, to_datetime, utc
from hivemem.config import HiveConfig
from hivemem.conflicts import SETTING as CONFLICT_SETTING
from hivemem.conflicts import ConflictPolicy, ConflictResolver, checked_strategy
from hivemem.errors import EventsPruned, Forbidden, InvalidInput, NotFound, PayloadTooLarge, Unauthenticated
from hivemem.events import MAX_SEQ, Event, Inbox, sequence_number, types_of
from hivemem.leases import Fence, Lease, LeaseRequest, LeaseSet
from hivemem.models import Conflict, Group, Hit, Memory, Page, Related, Relation, decode_cursor, encode_cursor
from hivemem.packing import Pack
from hivemem.plans import Plan, Task
from hivemem.records import (
    UPDATE_FIELDS,
    Draft,
    KeyedOptions,
    MemoryOptions,
    RememberOptions,
    content_hash,
    draft,
    entity_content,
    entity_key,
    episode_fields,
    merged_entity_data,
    names,
    text_field,
    update_changes,
)
from hivemem.retrieval.embedders import Embedder
from hivemem.retrieval.search import Retriever
from hivemem.storage.base import ORDER_COLUMNS, MemoryFilter, Store, StoreTx, T
from hivemem.summarize import Summarizer, make_summarizer
from hivemem.tokens import checked_counter
from hivemem.workflows import Retry, StepContext, WorkflowFunction
from hivemem.working import BufferSettings, WorkingMemory, WorkingMessage, WorkingStats

if TYPE_CHECKING:
    from hivemem.resources import ResourceRegistry


class _Unset:
    """Marks an argument that was not given (None is a real value for some fields)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(slots=True)
class _Once:
    """The call running under :meth:`Hive.run_once`: who, which key, how to record its result."""

    principal: str
    key: str
    encode: Callable[[Any], Any]
    recorded: bool = False
    encoded: Any = None


class _Replayed(Exception):
    """Raised in a write transaction whose idempotency key another transaction recorded first."""

    def __init__(self, result: Any) -> None:
        super().__init__("replayed")
        self.result = result


_ONCE: ContextVar[_Once | None] = ContextVar("hivemem_once", default=None)
R = TypeVar("R")
_SWEEP_BATCH = 1000
#: Events a sweep deletes per transaction (each finds the old ones with one scan of the table).
_EVENT_BATCH = 50_000
_MAX_K = 1000
_MAX_PAGE = 1000
#: Longest plan title (UTF-8 bytes).
_MAX_TITLE_BYTES = 1000
#: Kinds of the records plans and agent profiles keep: recall leaves them out unless asked for.
_COORDINATION_KINDS = (plan_rules.PLAN_KIND, plan_rules.TASK_KIND, agent_rules.AGENT_KIND)
#: Tries of upsert_entity that embed outside the transaction before one embeds inside it.
_ENTITY_OPTIMISTIC_TRIES = 3


class Hive:
    """Shared, durable memory for a team of agents.

    Open one with :func:`hivemem.open`; use it as a context manager or call
    :meth:`close`. A Hive is safe to share between threads. It acts for
    :attr:`principal`: everything, unless it is a view made by :meth:`as_principal`.

    Args:
        store: The backend.
        embedder: Makes vectors; None gives keyword-only recall.
        config: Limits and ranking weights.
        clock: Source of "now" (tests inject a manual clock).
    """

    def __init__(self, store: Store, embedder: Embedder | None, config: HiveConfig, clock: Clock | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config
        self.clock = clock or SystemClock()
        self.principal = Principal.everything()
        self._owns_store = True
        self._retriever = Retriever(store, embedder, config.ranking)
        self._conflicts = ConflictPolicy(config)
        self.summarizer: Summarizer = make_summarizer(
            config.summarizer, base_url=config.summarizer_url, api_key=config.summarizer_api_key
        )
        if embedder is not None:
            store.bind_embedder(embedder.name, embedder.dim)

    def __enter__(self) -> Hive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store and helper threads (a view from :meth:`as_principal` releases nothing)."""
        if self._owns_store:
            self._retriever.close()
            self.store.close()

    def as_principal(self, principal: Principal) -> Hive:
        """This Hive as ``principal`` sees it: the same store, its grants applied to every call.

        Memories outside its read grants behave as if they did not exist;
        writes outside its write grants raise Forbidden. See :mod:`hivemem.access`.
        """
        view = copy.copy(self)
        view.principal = principal
        view._owns_store = False
        return view

    # -- writing -------------------------------------------------------------------------------

    # Methods taking **options make self positional-only: an option called "self" is then refused
    # like any unknown one, and typed wrappers (the async client's methods) can carry the signature.
    def remember(self, /, namespace: str, content: str, **options: Unpack[RememberOptions]) -> Memory:
        """Store a memory; with a ``key``, create or update the one memory under that key.

        Args:
            namespace: Where to write, e.g. ``"swarm-1/agent-a"``.
            content: The searchable text.
            **options: :class:`~hivemem.records.RememberOptions`: ``kind`` ("note"), ``tier``
                ("short"), ``key``, ``data`` (a JSON object), ``tags``, ``importance`` (0..1, 0.5),
                ``agent_id``, ``session_id``, ``parent_id``, ``occurred_at`` (aware datetime),
                ``ttl`` (seconds or timedelta) or ``expires_at``, ``sensitive``; ``fence`` (a
                :class:`Lease`): write only if no newer lease on its resource exists.

        Returns:
            The stored memory (for a keyed update: the new version).

        Raises:
            InvalidInput: An argument is bad; nothing was written.
            PayloadTooLarge: Content or data is over the configured limit.
            StaleFencingToken: ``fence`` was superseded; nothing was written.
        """
        fence = options.pop("fence", None)
        d = draft(namespace, content, self.config, **options)
        return self._store_drafts([d], lambda stored: stored[0], None if fence is None else Fence.of(fence))

    def remember_many(self, items: Iterable[Mapping[str, Any]]) -> builtins.list[Memory]:
        """Store many memories in one transaction; embeddings are computed in batches.

        Args:
            items: Dicts of :meth:`remember`'s arguments (``namespace``, ``content``, options).

        Returns:
            The stored memories in input order.

        Raises:
            InvalidInput: An item is bad (``field`` reads ``items[3].importance``); nothing was written.
            PayloadTooLarge: More items than ``max_batch``, or an item over a size limit.
        """
        if isinstance(items, str | Mapping) or not isinstance(items, Iterable):
            raise InvalidInput("items", "must be a list of dicts of remember() arguments")
        drafts: builtins.list[Draft] = []
        for index, item in enumerate(items):
            if len(drafts) >= self.config.max_batch:
                raise PayloadTooLarge(f"items: more than {self.config.max_batch} in one batch", field="items")
            if not isinstance(item, Mapping):
                raise InvalidInput(f"items[{index}]", "must be a dict of remember() arguments")
            options = dict(item)
            try:
                namespace, content = options.pop("namespace", None), options.pop("content", None)
                drafts.append(draft(namespace, content, self.config, **options))
            except (InvalidInput, PayloadTooLarge) as exc:
                field = f"items[{index}].{exc.details.get('field', '?')}"
                if isinstance(exc, PayloadTooLarge):
                    raise PayloadTooLarge(
                        f"{field}: {exc.message.split(': ', 1)[-1]}", **{**exc.details, "field": field}
                    ) from None
                raise InvalidInput(field, exc.message.split(": ", 1)[-1]) from None
        return self._store_drafts(drafts, lambda stored: stored)

    def _store_drafts(
        self, drafts: Sequence[Draft], result: Callable[[builtins.list[Memory]], R], fence: Fence | None = None
    ) -> R:
        """Store ``drafts`` in one transaction, which returns ``result`` of them (the method's result)."""
        for d in drafts:
            self._may("write", d.namespace)
        vectors = self._retriever.vectors_for([d.content for d in drafts])

        def write(tx: StoreTx) -> R:
            if fence is not None:
                leases.check_fence(tx, fence)
            now = self.clock.now()
            Retriever.store_vectors(tx, vectors)
            return result([self._write_draft(tx, d, now) for d in drafts])

        return self._write(write)

    def _write_draft(self, tx: StoreTx, d: Draft, now: float) -> Memory:
        # -inf: see the keyed row even if it expired, since it still owns the key.
        stored = tx.get_by_key(d.namespace, d.key, float("-inf")) if d.key is not None else None
        return self._apply_draft(tx, d, now, stored)

    @staticmethod
    def _apply_draft(tx: StoreTx, d: Draft, now: float, stored: Memory | None) -> Memory:
        """Write ``d`` given the row that holds its key (expired or not), if any."""
        if stored is not None:
            if _live(stored, now):
                memory = d.next_version_of(stored, now)
                tx.replace(memory, stored)
                return memory
            tx.delete([stored.id])
        memory = d.new_memory(new_id(), now)
        tx.insert(memory)
        return memory

    def update(
        self,
        memory_id: str,
        *,
        content: str = UNSET,
        data: Mapping[str, Any] | None = UNSET,
        tags: Sequence[str] = UNSET,
        importance: float = UNSET,
        tier: str = UNSET,
        expected_version: int | None = None,
        fence: Lease | Fence | None = None,
        on_conflict: str | ConflictResolver | None = None,
    ) -> Memory:
        """Change a memory: version + 1, the previous version kept in :meth:`history`.

        With ``expected_version`` (the version the caller read) the update is a
        compare-and-swap: if the stored version is newer, ``on_conflict`` (else
        the namespace's default, see :meth:`set_conflict_strategy`, else
        ``reject``) decides, in the write's own transaction:

        * ``reject``: raise VersionConflict; nothing is written.
        * ``last_writer_wins``: the given fields are written over the stored
          version; fields not given keep their stored values.
        * ``merge``: a three-way merge of base (the version read), ours (base
          with these changes) and theirs (the stored version): a field one side
          changed takes that side; a field both changed takes, for ``data``, a
          key-by-key deep merge (ours where both changed a key); for ``tags``,
          what either side added minus what either removed; for ``importance``,
          the higher; for ``content`` and ``tier``, ours.
        * a function ``(base, ours, theirs)`` returning the resolved Memory, or
          a dict of the fields (content, data, tags, importance, tier) that
          differ from theirs. It runs inside the write transaction, perhaps more
          than once (a busy store retries it), so it must be quick, must not
          call the Hive and must have no other effects; new text it writes is
          embedded there. Functions work only in this process (not over HTTP).

        A resolved conflict is written as version ``theirs + 1`` (so
        :meth:`history` shows theirs, then the resolution) and recorded with
        base, ours and theirs, readable through :meth:`conflicts`.

        Args:
            memory_id: The memory to change.
            content: New text.
            data: New data (replaces the old object; None empties it).
            tags: New tags.
            importance: New importance.
            tier: New tier.
            expected_version: If given, the version the caller read: a newer stored version is a conflict.
            on_conflict: ``reject``, ``last_writer_wins``, ``merge`` or a function; None for the namespace's default.
            fence: A lease (from :meth:`lock`): the write happens only if no newer lease on its resource exists.

        Raises:
            NotFound: No such memory.
            VersionConflict: ``expected_version`` is stale and the strategy is ``reject``
                (or that version is not in history to merge from); ``current_version``
                and ``current`` say what is stored.
            StaleFencingToken: ``fence`` was superseded by a newer lease; nothing was written.
            InvalidInput: An argument is bad, or a merge or function produced a bad
                value (``field`` reads ``on_conflict.tags``...); nothing was written.
        """
        given = dict(zip(UPDATE_FIELDS, (content, data, tags, importance, tier), strict=True))
        changes = update_changes({name: value for name, value in given.items() if value is not UNSET}, self.config)
        if expected_version is not None:
            v.positive_int(expected_version, "expected_version")
        fenced = None if fence is None else Fence.of(fence)
        chosen = None if on_conflict is None else checked_strategy(on_conflict)
        vectors = self._retriever.vectors_for([changes["content"]] if "content" in changes else [])

        def write(tx: StoreTx) -> Memory:
            if fenced is not None:
                leases.check_fence(tx, fenced)
            now = self.clock.now()
            current = self._require(tx, memory_id, now, "write")
            Retriever.store_vectors(tx, vectors)
            applied = changes
            if expected_version is not None and current.version != expected_version:
                applied, conflict = self._conflicts.resolve(
                    tx, current, changes, expected_version, chosen, now, self.principal.name
                )
                tx.put_conflict(conflict)
            memory = dataclasses.replace(current, **applied, version=current.version + 1, updated_at=to_datetime(now))
            if memory.content_hash not in (current.content_hash, changes.get("content_hash")):
                self._retriever.store_vector_now(tx, memory.content)
            tx.replace(memory, current)
            return memory

        return self._write(write)

    def forget(self, memory_id: str, *, cascade: bool = False) -> int:
        """Delete a memory with its history, relations and group memberships.

        Args:
            memory_id: The memory.
            cascade: Also delete its children (by ``parent_id``), recursively.

        Returns:
            How many memories were deleted.

        Raises:
            NotFound: No such memory.
        """

        v.boolean(cascade, "cascade")

        def write(tx: StoreTx) -> int:
            self._require(tx, memory_id, self.clock.now(), "write")
            doomed = [memory_id]
            frontier = [memory_id]
            while cascade and frontier:
                frontier = [c for c in tx.child_ids(frontier) if c not in doomed]
                doomed += frontier
            return tx.delete(doomed)

        return self._write(write)

    def forget_namespace(self, prefix: str) -> int:
        """Delete every memory under a namespace prefix; returns how many."""
        ns = v.namespace_prefix(prefix if prefix is not None else "")
        assert ns is not None
        self._may("write", ns)
        return self._write(lambda tx: tx.delete(tx.ids_in_namespace(ns)))

    def reinforce(self, memory_id: str, factor: float = 1.2) -> Memory:
        """Raise a memory's importance (capped at 1) and count an access; no new version.

        Raises:
            NotFound: No such memory.
            InvalidInput: ``factor`` is not positive.
        """
        factor = v.positive_float(factor, "factor")

        def write(tx: StoreTx) -> Memory:
            now = self.clock.now()
            current = self._require(tx, memory_id, now, "write")
            importance = min(1.0, max(current.importance, 0.01) * factor)
            tx.record_access(memory_id, importance, now)
            return self._require(tx, memory_id, now)

        return self._write(write)

    def sweep(self) -> dict[str, int]:
        """Delete expired memories, vectors no memory uses, lapsed leases, old idempotency keys and old events.

        Events older than ``event_retention_seconds`` go, oldest first; a reader
        resuming before them gets :class:`~hivemem.errors.EventsPruned`.
        Idempotent; returns counts.

        Raises:
            Forbidden: The principal lacks ``admin:*`` (a sweep spans every namespace).
        """
        self._require_admin("sweep")
        expired = 0
        while True:
            batch = self._write(lambda tx: tx.delete(tx.expired_ids(self.clock.now(), _SWEEP_BATCH)))
            expired += batch
            if batch < _SWEEP_BATCH:
                break
        vectors = self._write(lambda tx: tx.prune_embeddings(100_000))
        cutoff = self.clock.now() - self.config.idempotency_ttl_seconds
        keys = self._write(lambda tx: tx.prune_once(cutoff))
        lapsed = self._write(lambda tx: tx.prune_leases(tx.db_now()))
        events = 0
        retention = self.config.event_retention_seconds
        while retention:
            batch = self._write(lambda tx: tx.prune_events(tx.db_now() - retention, _EVENT_BATCH))
            events += batch
            if batch < _EVENT_BATCH:
                break
        return {
            "expired": expired,
            "embeddings_pruned": vectors,
            "idempotency_keys_pruned": keys,
            "leases_pruned": lapsed,
            "events_pruned": events,
        }

    # -- leases (see hivemem.leases) -----------------------------------------------------------

    def lock(
        self, resource: str, *, mode: str = "write", ttl: float = 30.0, wait: float = 10.0, owner: str | None = None
    ) -> Lease:
        """Take a lease on ``resource``: readers share it, a writer excludes everyone.

        Use it as a context manager (``with hive.lock("team-a/deploy") as lease:``)
        to release it on exit. Pass it to a write (``update(..., fence=lease)``) to
        have the write refused once a newer lease on the resource exists.

        Args:
            resource: What to lock, named like a namespace (``"team-a/deploy"``). A
                write lease needs write access there, a read lease read access.
            mode: ``"write"`` (exclusive) or ``"read"`` (shared).
            ttl: Seconds until it lapses unless renewed, by the database's clock.
            wait: Seconds to wait for the resource; 0 tries once.
            owner: Who holds it within the principal (e.g. an agent id), shown by :meth:`locks`.

        Returns:
            The lease, with a fencing token higher than every earlier grant of the resource.

        Raises:
            LockHeld: The resource was not free within ``wait``.
            Forbidden: The principal may not ``mode`` in the resource's namespace.
            InvalidInput: A bad argument.
        """
        request = LeaseRequest.of(resource, mode, ttl, wait, self.principal.name, owner)
        self._may(request.mode, request.resource)
        return leases.acquire(self.store, request).bound_to(self)

    def acquire_all(
        self,
        resources: Iterable[str],
        *,
        mode: str = "write",
        ttl: float = 30.0,
        wait: float = 10.0,
        owner: str | None = None,
    ) -> LeaseSet:
        """Lease several resources, always in sorted order, so two callers can never deadlock.

        If one cannot be had within ``wait``, those already taken are released and
        LockHeld is raised. The result is a context manager releasing them all.
        """
        return leases.acquire_each(self, leases.ordered(resources), mode=mode, ttl=ttl, wait=wait, owner=owner)

    def renew_lease(self, lease: Lease, *, ttl: float | None = None) -> Lease:
        """Extend a lease to ``ttl`` seconds (default: its own ttl) from the database's now.

        Raises:
            LeaseExpired: It lapsed or was released first; the resource may have a new holder.
        """
        lease = Lease.of(lease)
        ttl = lease.ttl if ttl is None else leases.lease_ttl(ttl)
        self._may(lease.mode, lease.resource)
        return leases.renew(self.store, lease, ttl, self.principal.name).bound_to(self)

    def release_lease(self, lease: Lease) -> bool:
        """Give a lease up; False if it had lapsed or was released already."""
        lease = Lease.of(lease)
        return leases.release(self.store, lease, self.principal.name)

    def locks(self, namespace: str | None = None) -> builtins.list[Lease]:
        """The live leases on resources under ``namespace`` the principal may read, by resource."""
        prefix = v.namespace_prefix(namespace)
        readable = self._readable()
        rows = self.store.read(lambda tx: tx.leases(tx.db_now()), primary=True)
        return [
            Lease(resource, lease_id, mode, token, holder, expires - acquired, utc(acquired), utc(expires))
            for resource, lease_id, mode, token, holder, acquired, expires in rows
            if v.in_prefix(resource, prefix) and (readable is None or any(v.in_prefix(resource, r) for r in readable))
        ]

    # -- events and inboxes (see hivemem.events) -----------------------------------------------

    def events(
        self, namespace: str, *, since: int = 0, limit: int = 100, types: Sequence[str] | None = None
    ) -> builtins.list[Event]:
        """Changes committed under ``namespace`` after sequence number ``since``, oldest first.

        Sequence numbers count per namespace root (``team-a`` for ``team-a/x``), without
        gaps, in commit order: page on with ``since=events[-1].seq``. Events in
        namespaces the principal may not read are left out. :meth:`sweep` deletes
        events older than ``event_retention_seconds``; ``since=0`` reads from the
        oldest one kept.

        Args:
            namespace: A namespace prefix.
            since: Only events after this sequence number.
            limit: At most this many (1-1000).
            types: Only these event types (see :data:`hivemem.events.TYPES`).

        Raises:
            EventsPruned: Events after ``since`` were deleted by a sweep: reading on
                would miss them (``details["oldest"]`` is the oldest kept).
        """
        prefix, after, limit, wanted = self._event_query(namespace, since, limit, types)
        root = v.root_of(prefix)

        def read(tx: StoreTx) -> builtins.list[Any]:
            rows = tx.events(root, after, limit, prefix, self._readable(), wanted)
            if after and (not rows or rows[0][0] > after + 1):  # a jump may be filtered events, or pruned ones
                oldest = tx.first_event_seq(root)
                if after + 1 < oldest:
                    raise EventsPruned(
                        f"events of {root} after {after} up to {oldest - 1} were pruned; "
                        f"read on from since={oldest - 1} (or 0) knowing they are gone",
                        namespace=prefix,
                        since=after,
                        oldest=oldest,
                    )
            return rows

        return [Event.from_row(r) for r in self.store.read(read, primary=True)]

    def subscribe(
        self, namespace: str, *, since: int = 0, types: Sequence[str] | None = None, poll: float = 1.0
    ) -> Iterator[Event]:
        """:meth:`events` as they commit, from any process, forever (close the iterator to stop).

        Resume after a restart with ``since`` = the last sequence number handled.
        Waiting is woken by commits (in this process; on PostgreSQL by NOTIFY from
        any process) and rechecks the table at least every ``poll`` seconds.
        """
        return (event for event in self.follow(namespace, since=since, types=types, idle=poll) if event is not None)

    def follow(
        self, namespace: str, *, since: int = 0, types: Sequence[str] | None = None, idle: float = 1.0
    ) -> Iterator[Event | None]:
        """:meth:`subscribe`, also yielding None after each ``idle`` seconds without events (a heartbeat)."""
        prefix, after, _, wanted = self._event_query(namespace, since, 500, types)
        idle = v.positive_float(idle, "idle")
        with self.store.event_waiter() as waiter:
            while True:
                batch = self.events(prefix, since=after, limit=500, types=wanted)
                yield from batch
                if batch:
                    after = batch[-1].seq
                else:
                    waiter.wait(idle)
                    yield None

    def send(self, to_agent: str, body: Any, *, namespace: str) -> Event:
        """Put a message in ``to_agent``'s inbox in ``namespace`` (a ``message`` event).

        Args:
            to_agent: The recipient's agent id.
            body: Any JSON value (text or an object, usually).
            namespace: Where the inbox lives; needs write access.

        Returns:
            The message event, with its sequence number.
        """
        ns = v.namespace(namespace)
        agent = v.agent_id(to_agent, "to_agent")
        data = v.data({"from": self.principal.name, "body": body}, self.config.max_data_bytes, "body")
        self._may("write", ns)

        def write(tx: StoreTx) -> Event:
            seq, at = tx.append_event(ns, "message", agent, data)
            return Event(seq, ns, "message", agent, data, utc(at))

        return self._write(write)

    def inbox(self, agent: str, *, namespace: str) -> Inbox:
        """``agent``'s messages in ``namespace``: :meth:`Inbox.pending`, :meth:`Inbox.ack`, :meth:`Inbox.follow`."""
        return Inbox(self, v.agent_id(agent, "agent"), v.namespace(namespace))

    def inbox_messages(self, agent: str, *, namespace: str, after: int = 0, limit: int = 100) -> builtins.list[Event]:
        """``agent``'s messages in ``namespace`` after its acknowledged ones (and after ``after``), oldest first."""
        agent = v.agent_id(agent, "agent")
        prefix, after, limit, _ = self._event_query(namespace, after, limit, None)

        def read(tx: StoreTx) -> builtins.list[Any]:
            start = max(after, tx.inbox_cursor(prefix, agent))
            return tx.events(v.root_of(prefix), start, limit, prefix, self._readable(), ("message",), agent)

        return [Event.from_row(r) for r in self.store.read(read, primary=True)]

    def ack(self, agent: str, seq: int, *, namespace: str) -> None:
        """Mark ``agent``'s messages in ``namespace`` up to ``seq`` handled: they are not delivered again.

        Raises:
            InvalidInput: ``seq`` is not one of this inbox's messages.
        """
        agent = v.agent_id(agent, "agent")
        ns = v.namespace(namespace)
        seq = v.positive_int(seq, "seq", MAX_SEQ)
        self._may("write", ns)

        def write(tx: StoreTx) -> None:
            found = tx.events(v.root_of(ns), seq - 1, 1, ns, None, ("message",), agent)
            if not found or found[0][0] != seq:
                raise InvalidInput("seq", f"is not a message to {agent} in {ns}", value=seq)
            tx.put_inbox_cursor(ns, agent, seq)

        self._write(write)

    def _event_query(
        self, namespace: object, since: object, limit: object, types: object
    ) -> tuple[str, int, int, tuple[str, ...] | None]:
        prefix = v.namespace_prefix(namespace)
        if prefix is None:
            raise InvalidInput("namespace", "is required: events are numbered per namespace root")
        return prefix, sequence_number(since), v.positive_int(limit, "limit", 1000), types_of(types)

    # -- typed helpers -------------------------------------------------------------------------

    def remember_episode(
        self,
        /,
        namespace: str,
        *,
        context: str,
        action: str,
        outcome: str,
        success: bool,
        lesson: str | None = None,
        tools: Sequence[str] = (),
        metrics: Mapping[str, Any] | None = None,
        **options: Unpack[KeyedOptions],
    ) -> Memory:
        """Record an experience: what the situation was, what was done, what came of it.

        The content is searchable text built from the fields; ``data`` keeps
        them (``context``, ``action``, ``outcome``, ``success``, ``lesson``,
        ``tools``, ``metrics``). At equal relevance, recall ranks successful
        episodes above failed ones.

        Args:
            namespace: Where to write.
            context: The situation or task.
            action: What the agent did.
            outcome: What happened.
            success: Whether it worked.
            lesson: What to do next time.
            tools: Tools used.
            metrics: Numbers worth keeping (duration, tokens...).
            **options: Other :meth:`remember` options (tags, importance, agent_id...); tier defaults to ``mid``.
        """
        _refuse_options(options, ("kind", "data"), "remember_episode")
        content, data = episode_fields(context, action, outcome, success, lesson, tools, metrics)
        options.setdefault("tier", "mid")
        return self.remember(namespace, content, kind="episode", data=data, **options)

    def upsert_entity(
        self,
        /,
        namespace: str,
        type: str,
        name: str,
        properties: Mapping[str, Any] | None = None,
        **options: Unpack[MemoryOptions],
    ) -> Memory:
        """Create or update the one record of an entity (by type and name).

        Properties are merged into those stored, ``interactions`` counts the
        calls, ``first_seen`` is kept and ``last_updated`` moves.

        Raises:
            InvalidInput: A bad type, name or properties.
        """
        _refuse_options(options, ("kind", "data", "key"), "upsert_entity")
        options.setdefault("tier", "long")
        entity_type = v.kind(type, "type")
        entity_name = text_field(name, "name")
        assert entity_name is not None
        props = v.data(properties, self.config.max_data_bytes, "properties")
        key = entity_key(entity_type, entity_name)
        ns = v.namespace(namespace)
        self._may("write", ns)
        vectors: dict[str, Any] = {}

        def write(tx: StoreTx, inline: bool) -> Memory:
            now = self.clock.now()
            # One read serves the merge and the write: a second read could see a
            # row another writer committed in between (PostgreSQL, read committed).
            stored = tx.get_by_key(ns, key, float("-inf"))
            current = stored if stored is not None and _live(stored, now) else None
            data = merged_entity_data(current.data if current else None, entity_type, entity_name, props, utc(now))
            text = entity_content(entity_type, data["name"], data["properties"])
            digest = content_hash(text)
            if self.embedder is not None and digest not in vectors and not tx.known_hashes([digest]):
                if not inline:
                    raise _NeedsVector(text)
                vectors[digest] = self.embedder.embed([text])[0]
            Retriever.store_vectors(tx, {h: vec for h, vec in vectors.items() if h == digest})
            entity = draft(ns, text, self.config, kind="entity", key=key, data=data, **options)
            return self._apply_draft(tx, entity, now, stored)

        # The merge happens inside the transaction (no lost update); the model
        # runs outside it, so a text without a vector is embedded and retried.
        # Under contention the text keeps changing under the retries, so the
        # last try embeds inside the transaction (one short model run while
        # holding the row), which always lands.
        for _ in range(_ENTITY_OPTIMISTIC_TRIES):
            try:
                return self._write(functools.partial(write, inline=False))
            except _NeedsVector as need:
                vectors.update(self._retriever.vectors_for([need.text]))
        return self._write(functools.partial(write, inline=True))

    def add_rule(
        self,
        /,
        namespace: str,
        text: str,
        *,
        rule_type: str = "guideline",
        confidence: float = 0.5,
        source_memory_id: str | None = None,
        **options: Unpack[KeyedOptions],
    ) -> Memory:
        """Store a rule (a guideline, constraint or preference learned or given).

        Args:
            namespace: Where to write.
            text: The rule.
            rule_type: e.g. ``guideline``, ``constraint``, ``preference``.
            confidence: 0..1; also the rule's importance unless given.
            source_memory_id: The memory the rule was learned from, if any.
            **options: Other :meth:`remember` options; tier defaults to ``long``.
        """
        _refuse_options(options, ("kind", "data"), "add_rule")
        certainty = v.unit_float(confidence, "confidence")
        data = {
            "rule_type": v.kind(rule_type, "rule_type"),
            "confidence": certainty,
            "source_memory_id": v.optional_id(source_memory_id, "source_memory_id"),
        }
        options.setdefault("tier", "long")
        options.setdefault("importance", certainty)
        if source_memory_id is not None:
            options.setdefault("parent_id", source_memory_id)
        return self.remember(namespace, text, kind="rule", data=data, **options)

    # -- reading -------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory:
        """The memory with this id.

        Raises:
            NotFound: No such memory, or it expired.
        """
        return self.store.read(lambda tx: self._require(tx, memory_id, self.clock.now()))

    def get_by_key(self, namespace: str, key: str) -> Memory:
        """The memory stored under ``key`` in exactly ``namespace``.

        Raises:
            NotFound: Nothing is stored under that key.
        """
        ns = v.namespace(namespace)
        key = v.identifier(key, "key")
        found = self._try_get_by_key(ns, key) if self.principal.allows("read", ns) else None
        if found is None:
            raise NotFound(f"no memory with key {key!r} in {namespace}", namespace=namespace, key=key)
        return found

    def _try_get_by_key(self, namespace: str, key: str) -> Memory | None:
        return self.store.read(lambda tx: tx.get_by_key(namespace, key, self.clock.now()))

    def history(self, memory_id: str) -> builtins.list[Memory]:
        """Every version of a memory, oldest first, the current one last.

        Raises:
            NotFound: No such memory.
        """

        def read(tx: StoreTx) -> builtins.list[Memory]:
            current = self._require(tx, memory_id, self.clock.now())
            return [*tx.history(memory_id), current]

        return self.store.read(read)

    def list(
        self,
        namespace: str | None = None,
        *,
        kinds: Sequence[str] | str | None = None,
        tiers: Sequence[str] | str | None = None,
        tags: Sequence[str] = (),
        agent_id: str | None = None,
        session_id: str | None = None,
        where: Mapping[str, Any] | None = None,
        order_by: str = "created_at",
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of memories in a stable order; pass ``next_cursor`` back for the next page.

        Pages are keyset-paginated on ``(order_by, id)``: writes between calls
        never repeat or skip a memory that stays put.

        Args:
            namespace: Namespace prefix, or None for all.
            kinds: Only these kinds.
            tiers: Only these tiers.
            tags: Only memories carrying all of these tags.
            agent_id: Only this agent's memories.
            session_id: Only this session's memories.
            where: Conditions on ``data`` fields (see :meth:`recall`).
            order_by: ``created_at``, ``updated_at``, ``occurred_at`` or ``importance``.
            descending: Newest / highest first.
            limit: Page size, 1..1000.
            cursor: From the previous page.

        Raises:
            InvalidInput: A bad argument or a cursor from another listing.
        """
        if order_by not in ORDER_COLUMNS:
            raise InvalidInput("order_by", f"must be one of {', '.join(ORDER_COLUMNS)}")
        limit = v.positive_int(limit, "limit", _MAX_PAGE)
        v.boolean(descending, "descending")
        after: tuple[Any, str] | None = None
        if cursor is not None:
            try:
                order, value, last_id = decode_cursor(cursor)
                valid_value = not isinstance(value, bool) and v.storable_scalar(value, "cursor")
                if order != f"{order_by}:{descending}" or not isinstance(last_id, str) or not valid_value:
                    raise ValueError("cursor from another listing")
                v.identifier(last_id, "cursor")
            except (ValueError, TypeError, InvalidInput):
                raise InvalidInput("cursor", "not a cursor of this listing") from None
            after = (value, last_id)
        flt = self._filter(namespace, kinds, tiers, tags, agent_id, session_id, None, None, where)
        items = self.store.read(lambda tx: tx.list(flt, order_by, descending, after, limit + 1))
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            key_value: Any = getattr(last, order_by)
            if order_by == "occurred_at":
                key_value = last.occurred_at or last.created_at
            if isinstance(key_value, datetime):
                key_value = key_value.timestamp()
            next_cursor = encode_cursor([f"{order_by}:{descending}", key_value, last.id])
        return Page(tuple(items), next_cursor)

    def recall(
        self,
        query: str,
        *,
        namespace: str | None = None,
        k: int = 10,
        kinds: Sequence[str] | str | None = None,
        tiers: Sequence[str] | str | None = None,
        tags: Sequence[str] = (),
        agent_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
    ) -> builtins.list[Hit]:
        """The memories most useful for ``query``, best first.

        Keyword (BM25 over stemmed words) and vector (cosine) candidates are
        fused by reciprocal rank into ``relevance``, then recency, importance
        and outcome adjust the score; ``Hit.scores`` shows every part.

        Args:
            query: What the agent is about to do or asks.
            namespace: Namespace prefix: ``"swarm-1"`` also sees ``"swarm-1/agent-a/..."``.
            k: How many hits, 1..1000.
            kinds: Only these kinds. Without it, every kind but the records plans and
                agent profiles keep (``plan``, ``task``, ``agent``): name them to find those.
            tiers: Only these tiers.
            tags: Only memories carrying all of these tags.
            agent_id: Only this agent's memories.
            session_id: Only this session's memories.
            since: Only memories whose event time is at or after this.
            until: Only memories whose event time is before this.
            where: Conditions on ``data`` fields: ``{"success": True}``,
                ``{"metrics.tokens": {"$lt": 500}}``, ``{"tool": {"$in": ["a", "b"]}}``;
                operators ``$eq $ne $gt $gte $lt $lte $in``.
            min_score: Drop hits scoring below this.

        Raises:
            InvalidInput: A bad argument.
        """
        text = v.content(query, self.config.max_content_bytes, "query")
        k = v.positive_int(k, "k", _MAX_K)
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, int | float)):
            raise InvalidInput("min_score", "must be a number")
        flt = self._filter(namespace, kinds, tiers, tags, agent_id, session_id, since, until, where)
        if flt.kinds is None:
            flt = dataclasses.replace(flt, exclude_kinds=_COORDINATION_KINDS)
        return self._retriever.recall(text, flt, k, min_score)

    def _filter(
        self,
        namespace: str | None,
        kinds: Sequence[str] | str | None,
        tiers: Sequence[str] | str | None,
        tags: Sequence[str],
        agent_id: str | None,
        session_id: str | None,
        since: datetime | None,
        until: datetime | None,
        where: Mapping[str, Any] | None,
    ) -> MemoryFilter:
        return MemoryFilter(
            now=self.clock.now(),
            namespace=v.namespace_prefix(namespace),
            kinds=names(kinds, "kinds", v.kind),
            tiers=names(tiers, "tiers", v.tier),
            tags=v.tags(tags),
            agent_id=v.optional_id(agent_id, "agent_id"),
            session_id=v.optional_id(session_id, "session_id"),
            since=v.timestamp(since, "since"),
            until=v.timestamp(until, "until"),
            where=v.where(where),
            within=self._readable(),
        )

    def stats(self, namespace: str | None = None) -> dict[str, Any]:
        """Counts and bytes of live memories under a prefix, by kind and by tier, and their conflicts.

        Returns:
            ``{"memories": n, "bytes": b, "conflicts": c, "by_kind": {kind: {"memories", "bytes"}},
            "by_tier": {...}}``; ``conflicts`` counts the resolved ones (see :meth:`conflicts`).
        """
        flt = MemoryFilter(now=self.clock.now(), namespace=v.namespace_prefix(namespace), within=self._readable())
        rows, conflicts = self.store.read(lambda tx: (tx.stats(flt), tx.count_conflicts(flt)))
        out: dict[str, Any] = {"memories": 0, "bytes": 0, "conflicts": conflicts, "by_kind": {}, "by_tier": {}}
        for kind, tier, count, size in rows:
            out["memories"] += count
            out["bytes"] += size
            for group, name in (("by_kind", kind), ("by_tier", tier)):
                slot = out[group].setdefault(name, {"memories": 0, "bytes": 0})
                slot["memories"] += count
                slot["bytes"] += size
        return out

    # -- conflicts -----------------------------------------------------------------------------

    def set_conflict_strategy(self, namespace: str, strategy: str | ConflictResolver | None) -> None:
        """Set the strategy :meth:`update` uses on a conflict under a namespace prefix, when the call names none.

        The longest prefix with a strategy applies; with none, ``reject``. A
        named strategy is stored, so every process and server on this store
        uses it. A function is kept in this Hive object only (its views share
        it): other processes and servers do not see it, and it cannot be sent
        over HTTP. On one prefix a function of this process wins over a stored
        name; setting a name (or None) there removes the function.

        Args:
            namespace: The prefix, e.g. ``"swarm-1"`` or ``"swarm-1/agent-a"``.
            strategy: ``reject``, ``last_writer_wins``, ``merge``, a function
                ``(base, ours, theirs)`` (see :meth:`update`), or None to remove
                the prefix's own default.

        Raises:
            InvalidInput: A bad prefix or strategy.
            Forbidden: The caller may not write under the prefix.
        """
        prefix = v.namespace_prefix(namespace)
        if prefix is None:
            raise InvalidInput("namespace", "is required: a prefix such as 'swarm-1'")
        checked = None if strategy is None else checked_strategy(strategy, "strategy")
        self._may("write", prefix)
        if not callable(checked):
            self._write(lambda tx: tx.put_setting(prefix, CONFLICT_SETTING, checked, self.clock.now()))
        self._conflicts.set_function(prefix, checked if callable(checked) else None)

    def get_conflict_strategy(self, namespace: str) -> str | ConflictResolver:
        """The strategy an update of a memory in ``namespace`` uses when the call names none.

        Raises:
            InvalidInput: A bad namespace.
            Forbidden: The caller may not read the namespace.
        """
        ns = v.namespace(namespace)
        self._may("read", ns)
        return self.store.read(lambda tx: self._conflicts.strategy_for(tx, ns), primary=True)

    def conflicts(
        self, memory_id: str | None = None, *, namespace: str | None = None, limit: int = 100
    ) -> builtins.list[Conflict]:
        """Conflicts that versioned updates resolved, newest first, with base, ours and theirs.

        A rejected update records none. A memory's conflicts go when it does.

        Args:
            memory_id: Only this memory's conflicts.
            namespace: Only conflicts of memories under this prefix.
            limit: At most this many, 1..1000.

        Raises:
            NotFound: ``memory_id`` names no memory the caller can see.
            InvalidInput: A bad namespace or limit.
        """
        limit = v.positive_int(limit, "limit", _MAX_PAGE)
        flt = MemoryFilter(now=self.clock.now(), namespace=v.namespace_prefix(namespace), within=self._readable())

        def read(tx: StoreTx) -> builtins.list[Conflict]:
            if memory_id is not None:
                self._require(tx, memory_id, flt.now)
            return tx.conflicts(flt, memory_id, limit)

        return self.store.read(read)

    # -- moving data ---------------------------------------------------------------------------

    def export(self, namespace: str | None = None, *, batch_size: int = 500) -> Iterator[Memory]:
        """Every live memory under a prefix, oldest first, streamed page by page.

        The first page is read by the call itself, so a bad argument is refused
        here and not at the first item (over HTTP: before the answer starts).

        Raises:
            InvalidInput: A bad namespace or batch size.
        """
        return self._pages(self.list(namespace, limit=batch_size), namespace, batch_size)

    def _pages(self, page: Page, namespace: str | None, batch_size: int) -> Iterator[Memory]:
        while True:
            yield from page.items
            if page.next_cursor is None:
                return
            page = self.list(namespace, limit=batch_size, cursor=page.next_cursor)

    def import_memories(self, memories: Iterable[Memory], *, batch_size: int = 500) -> int:
        """Store exported memories exactly as they were (ids, versions, times, every field).

        A memory whose id exists here replaces it; so does one whose key is
        taken in its namespace by another id. Each batch is one transaction.

        Returns:
            How many memories were stored.

        Raises:
            InvalidInput: A record is malformed; the batch holding it is not written.
        """
        batch_size = v.positive_int(batch_size, "batch_size", self.config.max_batch)
        total = 0
        batch: builtins.list[Memory] = []
        for memory in memories:
            batch.append(self._checked_import(memory))
            if len(batch) >= batch_size:
                total += self._import_batch(batch)
                batch = []
        if batch:
            total += self._import_batch(batch)
        return total

    def _checked_import(self, memory: Memory) -> Memory:
        if not isinstance(memory, Memory):
            raise InvalidInput("memory", "must be a Memory record")
        checked = draft(
            memory.namespace,
            memory.content,
            self.config,
            kind=memory.kind,
            tier=memory.tier,
            key=memory.key,
            data=memory.data,
            tags=memory.tags,
            importance=memory.importance,
            agent_id=memory.agent_id,
            session_id=memory.session_id,
            parent_id=memory.parent_id,
            occurred_at=memory.occurred_at,
            expires_at=memory.expires_at,
            sensitive=memory.sensitive,
        )
        if memory.id is None or memory.created_at is None or memory.updated_at is None:
            raise InvalidInput("id", "an imported memory needs its id, created_at and updated_at")
        v.identifier(memory.id, "id")
        for name in ("created_at", "updated_at", "last_accessed_at"):
            v.timestamp(getattr(memory, name), name)
        v.positive_int(memory.version, "version", v.MAX_INT)
        v.count(memory.access_count, "access_count")
        self._may("write", checked.namespace)
        return dataclasses.replace(memory, content_hash=content_hash(memory.content))

    def _import_batch(self, batch: Sequence[Memory]) -> int:
        vectors = self._retriever.vectors_for([m.content for m in batch])

        def write(tx: StoreTx) -> int:
            Retriever.store_vectors(tx, vectors)
            for memory in batch:
                taken = tx.get_by_key(memory.namespace, memory.key, float("-inf")) if memory.key else None
                tx.delete([memory.id] + ([taken.id] if taken is not None and taken.id != memory.id else []))
                tx.insert(memory)
            return len(batch)

        return self._write(write)

    # -- relations and groups ------------------------------------------------------------------

    def relate(self, src_id: str, dst_id: str, type: str, *, strength: float = 1.0) -> Relation:
        """Create (or re-weight) a typed, directed edge between two memories.

        Raises:
            NotFound: Either memory does not exist.
            InvalidInput: A bad type or strength (0..1).
        """
        rel_type = v.kind(type, "type")
        weight = v.unit_float(strength, "strength")

        def write(tx: StoreTx) -> Relation:
            now = self.clock.now()
            self._require(tx, src_id, now, "write")
            self._require(tx, dst_id, now)
            relation = Relation(src_id, dst_id, rel_type, weight, utc(now))
            tx.put_relation(relation)
            return relation

        return self._write(write)

    def related(self, memory_id: str, *, type: str | None = None, direction: str = "out") -> builtins.list[Related]:
        """Memories linked to this one, with the edges.

        Args:
            memory_id: The memory.
            type: Only edges of this type.
            direction: ``out`` (edges from it), ``in`` (edges to it) or ``both``.

        Raises:
            NotFound: No such memory.
            InvalidInput: A bad direction or type.
        """
        if direction not in ("out", "in", "both"):
            raise InvalidInput("direction", "must be out, in or both")
        rel_type = None if type is None else v.kind(type, "type")

        def read(tx: StoreTx) -> builtins.list[Related]:
            now = self.clock.now()
            self._require(tx, memory_id, now)
            edges = tx.relations(memory_id, rel_type, direction)
            others = [e.dst_id if e.src_id == memory_id else e.src_id for e in edges]
            found = tx.get_many(others, MemoryFilter(now=now, within=self._readable()))
            return [Related(found[o], e) for o, e in zip(others, edges, strict=True) if o in found]

        return self.store.read(read)

    def children(self, memory_id: str) -> builtins.list[Memory]:
        """Memories whose ``parent_id`` is this memory, oldest first.

        Raises:
            NotFound: No such memory.
        """

        def read(tx: StoreTx) -> builtins.list[Memory]:
            now = self.clock.now()
            self._require(tx, memory_id, now)
            found = tx.get_many(tx.child_ids([memory_id]), MemoryFilter(now=now, within=self._readable()))
            return sorted(found.values(), key=lambda m: m.id)

        return self.store.read(read)

    def create_group(self, name: str, description: str | None = None) -> Group:
        """Create a named group of memories.

        Raises:
            InvalidInput: A bad name, or a group of that name exists.
        """
        group_name = v.optional_id(name, "name")
        if group_name is None:
            raise InvalidInput("name", "is required")
        text = text_field(description, "description", optional=True)
        if self.principal.prefixes("write") == ():
            raise Forbidden(f"{self.principal.name} may not write anywhere, so may not create groups")
        group = Group(group_name, text, utc(self.clock.now()))

        def write(tx: StoreTx) -> Group:
            if not tx.put_group(group):
                raise InvalidInput("name", f"a group named {group_name!r} exists")
            return group

        return self._write(write)

    def add_to_group(self, memory_id: str, group: str) -> None:
        """Add a memory to a group (adding twice is harmless).

        Raises:
            NotFound: The memory or the group does not exist.
        """

        v.identifier(group, "group")

        def write(tx: StoreTx) -> None:
            now = self.clock.now()
            self._require(tx, memory_id, now, "write")
            if tx.get_group(group) is None:
                raise NotFound(f"no group named {group!r}", group=group)
            tx.add_member(group, memory_id, now)

        self._write(write)

    def group_members(self, group: str) -> builtins.list[Memory]:
        """A group's live members in the order they were added.

        Raises:
            NotFound: No such group.
        """

        v.identifier(group, "group")

        def read(tx: StoreTx) -> builtins.list[Memory]:
            if tx.get_group(group) is None:
                raise NotFound(f"no group named {group!r}", group=group)
            ids = tx.member_ids(group)
            found = tx.get_many(ids, MemoryFilter(now=self.clock.now(), within=self._readable()))
            return [found[i] for i in ids if i in found]

        return self.store.read(read)

    # -- idempotency ---------------------------------------------------------------------------

    def run_once(self, key: str, call: Callable[[Hive], T], encode: Callable[[T], Any]) -> Any:
        """Run ``call(self)`` at most once per principal and ``key``; returns ``encode`` of its result.

        ``call`` is one write method of this Hive (the server's routes with an
        ``Idempotency-Key``). The key and the encoded result are recorded in the
        same transaction as its write, so a retry after a lost answer, a crash
        or a timeout finds the record and gets the first result back without
        writing again. A call that fails records nothing. What is recorded is
        the write transaction's result, which for every write method but
        ``sweep`` (idempotent by nature) is the method's result. Records are
        kept ``idempotency_ttl_seconds`` (see :class:`HiveConfig`); ``sweep``
        deletes older ones.

        Raises:
            InvalidInput: ``key`` is not a non-empty string of at most 200 characters.
        """
        checked = v.optional_id(key, "idempotency_key")
        if checked is None:
            raise InvalidInput("idempotency_key", "is required")
        once = _Once(self.principal.name, checked, encode)
        token = _ONCE.set(once)
        try:
            result = call(self)
        except _Replayed as replayed:
            return replayed.result
        finally:
            _ONCE.reset(token)
        return once.encoded if once.recorded else encode(result)

    def _write(self, fn: Callable[[StoreTx], T]) -> T:
        """Run ``fn`` in a write transaction, recording the idempotency key of a :meth:`run_once` call."""
        once = _ONCE.get()
        if once is None:
            step = workflows.current_step()
            return self.store.write(fn) if step is None else self._write_in_step(step, fn)
        if once.recorded:
            return self.store.write(fn)

        def recorded(tx: StoreTx) -> T:
            # The check shares the write's transaction: a repeat is answered before
            # the call's own checks (a stale expected_version, say) could refuse it.
            now = self.clock.now()
            since = now - self.config.idempotency_ttl_seconds
            stored = tx.get_once(once.principal, once.key, since)
            if stored is not None:
                raise _Replayed(json.loads(stored))
            result = fn(tx)
            once.encoded = once.encode(result)
            if not tx.put_once(once.principal, once.key, json.dumps(once.encoded, separators=(",", ":")), now, since):
                stored = tx.get_once(once.principal, once.key, float("-inf"))
                raise _Replayed(json.loads(stored) if stored is not None else None)
            return result

        result = self.store.write(recorded)
        once.recorded = True
        return result

    def _write_in_step(self, step: StepContext, fn: Callable[[StoreTx], T]) -> T:
        """A write made by a workflow step: applied once per step key, fenced by the executor's lease.

        The key (the step's n-th write, see :mod:`hivemem.workflows`) is recorded
        with the write, scoped by the principal that started the run; a step run
        again gets the recorded result back, as the write first returned it. A
        write that fails takes no key, so the next one gets the same key again.
        """
        key = step.write_key()

        def recorded(tx: StoreTx) -> T:
            if step.fence is not None:
                leases.check_fence(tx, step.fence)
            now = self.clock.now()
            since = now - self.config.idempotency_ttl_seconds
            stored = tx.get_once(step.principal, key, since)
            if stored is not None:
                raise _Replayed(workflows.decode_result(json.loads(stored)))
            result = fn(tx)
            encoded = json.dumps(workflows.encode_result(result), separators=(",", ":"))
            if not tx.put_once(step.principal, key, encoded, now, since):
                stored = tx.get_once(step.principal, key, float("-inf"))
                raise _Replayed(None if stored is None else workflows.decode_result(json.loads(stored)))
            return result

        try:
            result: T = self.store.write(recorded)
        except _Replayed as replayed:
            result = replayed.result
        step.wrote()
        return result

    # -- API keys ------------------------------------------------------------------------------

    def create_api_key(self, principal: str, grants: Sequence[str]) -> tuple[ApiKey, str]:
        """A new API key for ``principal`` with ``grants`` such as ``["write:team-a"]``.

        Returns:
            The stored record and the key itself, which is not stored: show it once.

        Raises:
            InvalidInput: A bad principal name or grant.
            Forbidden: The caller lacks ``admin:*``.
        """
        self._require_admin("managing API keys")
        name = v.optional_id(principal, "principal")
        if name is None:
            raise InvalidInput("principal", "is required")
        if isinstance(grants, str) or not isinstance(grants, Iterable):
            raise InvalidInput("grants", "must be a list such as ['read:team-a', 'write:team-a/agent-1']")
        parsed = tuple(dict.fromkeys(Grant.parse(g) for g in grants))
        if not parsed:
            raise InvalidInput("grants", "at least one grant is needed")
        key_id, key = new_key()
        record = ApiKey(key_id, Principal(name, parsed), hash_key(key), utc(self.clock.now()))
        self._write(lambda tx: tx.put_api_key(record))
        return record, key

    def api_keys(self) -> builtins.list[ApiKey]:
        """Every API key record, revoked ones included (never the keys themselves).

        Raises:
            Forbidden: The caller lacks ``admin:*``.
        """
        self._require_admin("managing API keys")
        return self.store.read(lambda tx: tx.api_keys(), primary=True)

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke a key: it stops working at once here, and within the auth cache time on servers.

        Raises:
            NotFound: No such key, or it is revoked already.
            Forbidden: The caller lacks ``admin:*``.
        """
        self._require_admin("managing API keys")
        now = self.clock.now()
        if not isinstance(key_id, str) or not self._write(lambda tx: tx.revoke_api_key(key_id, now)):
            raise NotFound(f"no active API key {key_id!r}", key_id=key_id)

    def authenticate(self, key: str) -> Principal:
        """The principal an API key stands for.

        Raises:
            Unauthenticated: Not a key, an unknown key or a revoked one (one answer for all).
        """
        key_id = key_id_of(key) if isinstance(key, str) else None
        found = self.store.read(lambda tx: tx.api_keys(key_id), primary=True) if key_id else []
        if not found or found[0].revoked_at is not None or not found[0].matches(key):
            raise Unauthenticated("the API key is not valid")
        return found[0].principal

    # -- plans and agents (see hivemem.plans and hivemem.agents) -------------------------------

    def create_plan(
        self,
        namespace: str,
        tasks: Sequence[Mapping[str, Any]],
        *,
        plan_id: str | None = None,
        title: str | None = None,
    ) -> Plan:
        """Store a plan: tasks with descriptions, required skills and dependencies, all pending.

        The tasks are validated and ordered in parallel levels before anything is
        written; the plan and its tasks are written in one transaction, with a
        ``plan.created`` event.

        Args:
            namespace: Where to store it.
            tasks: Dicts of ``id``, ``description``, ``skills`` (optional list) and
                ``depends_on`` (optional list of task ids).
            plan_id: Its id, unique in the namespace (default: a new time-ordered id).
            title: What the plan is for.

        Returns:
            The plan with its levels and tasks.

        Raises:
            InvalidInput: A bad task (``field`` reads ``tasks[1].depends_on``), an unknown
                dependency, a dependency cycle (``cycle`` lists it), or the id is taken.
            PayloadTooLarge: A description or the title is over its limit.
        """
        ns = v.namespace(namespace)
        pid = new_id() if plan_id is None else plan_rules.checked_id(plan_id, "plan_id")
        heading = text_field(title, "title", optional=True)
        if heading is not None:
            v.content(heading, _MAX_TITLE_BYTES, "title")
        specs = plan_rules.parse_tasks(tasks, self.config.max_content_bytes)
        ordered = plan_rules.levels(specs)
        level_of = {task: n for n, level in enumerate(ordered) for task in level}
        plan_data = {"plan_id": pid, "title": heading, "tasks": [s.id for s in specs], "levels": ordered}
        drafts = [
            draft(
                ns,
                plan_rules.plan_content(pid, heading, specs, self.config.max_content_bytes),
                self.config,
                kind=plan_rules.PLAN_KIND,
                tier="mid",
                key=plan_rules.plan_key(pid),
                data=plan_data,
            ),
            *(
                draft(
                    ns,
                    plan_rules.task_content(s),
                    self.config,
                    kind=plan_rules.TASK_KIND,
                    tier="mid",
                    key=plan_rules.task_key(pid, s.id),
                    data=plan_rules.task_data(pid, s, level_of[s.id]),
                )
                for s in specs
            ),
        ]
        self._may("write", ns)
        vectors = self._retriever.vectors_for([d.content for d in drafts])

        def write(tx: StoreTx) -> Plan:
            if tx.get_by_key(ns, plan_rules.plan_key(pid), float("-inf")) is not None:
                raise InvalidInput("plan_id", f"a plan {pid!r} exists in {ns}", plan_id=pid)
            now = self.clock.now()
            Retriever.store_vectors(tx, vectors)
            stored = [self._write_draft(tx, d, now) for d in drafts]
            tx.record_event(ns, "plan.created", stored[0].id, {"plan_id": pid, "tasks": len(specs)})
            return Plan.of(stored[0], stored[1:])

        return self._write(write)

    def plan(self, plan_id: str, *, namespace: str) -> Plan:
        """A plan with every task's state and the plan's progress.

        Raises:
            NotFound: No plan with this id in ``namespace``.
        """
        ns = v.namespace(namespace)
        pid = plan_rules.checked_id(plan_id, "plan_id")
        found = (
            self.store.read(lambda tx: plan_rules.read_plan(tx, ns, pid, self.clock.now()))
            if self.principal.allows("read", ns)
            else None
        )
        if found is None:
            raise NotFound(f"no plan {pid!r} in {ns}", plan_id=pid, namespace=ns)
        return found

    def plans(self, namespace: str, *, limit: int = 100) -> builtins.list[Plan]:
        """The plans stored under a namespace prefix, newest first.

        Args:
            namespace: A namespace prefix.
            limit: At most this many, 1..1000.

        Raises:
            InvalidInput: A bad namespace or limit.
        """
        if v.namespace_prefix(namespace) is None:
            raise InvalidInput("namespace", "is required: plans are stored in a namespace")
        limit = v.positive_int(limit, "limit", _MAX_PAGE)
        records = self.list(namespace, kinds=plan_rules.PLAN_KIND, order_by="created_at", descending=True, limit=limit)

        def read(tx: StoreTx) -> builtins.list[Plan]:
            out = [plan_rules.read_plan(tx, m.namespace, m.data.get("plan_id", ""), self.clock.now()) for m in records]
            return [p for p in out if p is not None]

        return self.store.read(read)

    def transition_task(
        self,
        plan_id: str,
        task_id: str,
        state: str,
        *,
        namespace: str,
        agent: str | None = None,
        expected_version: int | None = None,
        notes: str | None = None,
    ) -> Task:
        """Move a plan's task to another state, as :data:`hivemem.plans.TRANSITIONS` allows.

        The task is read and written in one transaction, so of several agents
        moving one task at once exactly one succeeds. Each transition writes the
        task record's next version (``history`` keeps them all) and a
        ``task.state_changed`` event.

        Args:
            plan_id: The plan.
            task_id: The task.
            state: ``pending``, ``assigned``, ``running``, ``done``, ``failed`` or ``cancelled``.
            namespace: Where the plan is stored.
            agent: Who acts: required to assign; later moves by another agent than the holder are refused.
            expected_version: The task version the caller read: a newer one is a VersionConflict.
            notes: A note kept with the task (a result, a reason for failing...).

        Returns:
            The task after the move.

        Raises:
            NotFound: No such plan task.
            InvalidTransition: The table forbids the move, another agent holds the task,
                or (to run) a dependency is not done; nothing was written.
            VersionConflict: ``expected_version`` is stale.
            InvalidInput: A bad argument.
        """
        ns = v.namespace(namespace)
        pid = plan_rules.checked_id(plan_id, "plan_id")
        tid = plan_rules.checked_id(task_id, "task_id")
        to = plan_rules.checked_state(state)
        who = None if agent is None else agent_rules.checked_name(agent)
        note = None if notes is None else v.content(notes, self.config.max_content_bytes, "notes")
        if expected_version is not None:
            v.positive_int(expected_version, "expected_version")
        self._may("write", ns)

        move = plan_rules.Move(ns, pid, tid, to, who, note, expected_version)
        return self._write(lambda tx: move.apply(tx, self.clock.now()))

    def assign_task(
        self, plan_id: str, task_id: str, agent: str, *, namespace: str, expected_version: int | None = None
    ) -> Task:
        """Give a pending task to an agent: :meth:`transition_task` to ``assigned``.

        Of several agents claiming one task at once, exactly one gets it; the
        others meet InvalidTransition (it is assigned already).

        Raises:
            NotFound: No such plan task.
            InvalidTransition: The task is not pending.
            VersionConflict: ``expected_version`` is stale.
        """
        return self.transition_task(
            plan_id, task_id, "assigned", namespace=namespace, agent=agent, expected_version=expected_version
        )

    def register_agent(
        self,
        namespace: str,
        name: str,
        *,
        specializations: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentProfile:
        """Register an agent, or update a registered one's specializations and metadata (its counts stay).

        Args:
            namespace: Where its profile lives (selection reads profiles under a prefix).
            name: Its name: also the ``agent_id`` of the episodes its outcomes store.
            specializations: What it is good at, e.g. ``["python", "database migrations"]``
                (None keeps the stored ones; a new agent has none).
            metadata: Anything else (model, cost...); None keeps the stored metadata.

        Raises:
            InvalidInput: A bad name, specialization or metadata.
        """
        ns = v.namespace(namespace)
        who = agent_rules.checked_name(name, "name")
        specs = None if specializations is None else agent_rules.checked_specializations(specializations)
        meta = None if metadata is None else v.data(metadata, self.config.max_data_bytes, "metadata")
        self._may("write", ns)
        weights = self.config.selection
        # The text is made of the specializations: with new ones it is known here and embedded
        # outside the transaction; when they are kept, it is embedded inside only if new.
        vectors = self._retriever.vectors_for([agent_rules.profile_content(who, specs)] if specs is not None else [])

        def write(tx: StoreTx) -> AgentProfile:
            now = self.clock.now()
            stored = tx.get_by_key(ns, agent_rules.agent_key(who), float("-inf"))
            # A user's own record under the key (not a profile) is replaced; history keeps it.
            live = stored if stored is not None and _live(stored, now) and agent_rules.is_profile(stored) else None
            data = agent_rules.profile_data(live.data if live else None, who, specs, meta)
            text = agent_rules.profile_content(who, data["specializations"])
            Retriever.store_vectors(tx, vectors)
            self._retriever.store_vector_now(tx, text)
            d = draft(
                ns,
                text,
                self.config,
                kind=agent_rules.AGENT_KIND,
                tier="long",
                key=agent_rules.agent_key(who),
                data=data,
            )
            return AgentProfile.of(self._apply_draft(tx, d, now, stored), weights)

        return self._write(write)

    def agents(self, namespace: str | None = None) -> builtins.list[AgentProfile]:
        """The agents registered under a namespace prefix (None: everywhere the caller reads), by name.

        Raises:
            InvalidInput: A bad namespace.
        """
        return sorted(self._profiles(namespace), key=lambda p: (p.name, p.namespace))

    def _profiles(self, namespace: object) -> builtins.list[AgentProfile]:
        prefix = v.namespace_prefix(namespace)
        page = self.list(prefix, kinds=agent_rules.AGENT_KIND, limit=_MAX_PAGE)
        records = [m for m in page]
        while page.next_cursor is not None:
            page = self.list(prefix, kinds=agent_rules.AGENT_KIND, limit=_MAX_PAGE, cursor=page.next_cursor)
            records += page.items
        return [AgentProfile.of(m, self.config.selection) for m in records if agent_rules.is_profile(m)]

    def record_outcome(
        self,
        agent: str,
        task: str,
        *,
        namespace: str,
        success: bool,
        duration: float | None = None,
        notes: str | None = None,
        lesson: str | None = None,
    ) -> Outcome:
        """Record how a task went for an agent: an episode, and the agent's counts, in one transaction.

        Args:
            agent: The registered agent.
            task: What the task was (the episode's context, matched by later recalls).
            namespace: Where the agent is registered; the episode is stored there.
            success: Whether it worked.
            duration: Seconds it took, if known.
            notes: What was done (the episode's action).
            lesson: What to do next time.

        Returns:
            The episode and the updated profile.

        Raises:
            NotFound: No agent of that name is registered in ``namespace``.
            InvalidInput: A bad argument; nothing was written.
        """
        ns = v.namespace(namespace)
        who = agent_rules.checked_name(agent)
        v.boolean(success, "success")
        seconds = None if duration is None else _duration(duration)
        noted = text_field(notes, "notes", optional=True)
        action = noted if noted is not None else f"{who} carried out the task"
        outcome = "succeeded" if success else "failed"
        if seconds is not None:
            outcome += f" in {seconds:g} s"
        content, data = episode_fields(
            task, action, outcome, success, lesson, (), None if seconds is None else {"duration": seconds}
        )
        episode = draft(ns, content, self.config, kind="episode", tier="mid", data=data, agent_id=who)
        self._may("write", ns)
        vectors = self._retriever.vectors_for([episode.content])
        weights = self.config.selection

        def write(tx: StoreTx) -> Outcome:
            now = self.clock.now()
            profile = tx.get_by_key(ns, agent_rules.agent_key(who), now)
            if profile is None or not agent_rules.is_profile(profile):
                raise NotFound(f"no agent {who!r} registered in {ns}", agent=who, namespace=ns)
            Retriever.store_vectors(tx, vectors)
            stored = self._write_draft(tx, episode, now)
            counted = dataclasses.replace(
                profile,
                data=agent_rules.counted(profile.data, success, seconds),
                version=profile.version + 1,
                updated_at=to_datetime(now),
            )
            tx.replace(counted, profile)
            return Outcome(stored, AgentProfile.of(counted, weights))

        return self._write(write)

    def select_agent(
        self,
        task: str,
        candidates: Sequence[str] | None = None,
        *,
        namespace: str | None = None,
        skills: Sequence[str] = (),
        weights: Mapping[str, float] | None = None,
    ) -> builtins.list[AgentScore]:
        """Rank agents for a task: specialization match, relevant successful experience and success rate.

        ``score = w_spec * specialization + w_exp * experience + w_perf * performance``;
        see :mod:`hivemem.agents` for each part and :class:`hivemem.config.SelectionWeights`
        for the default weights (0.4, 0.3, 0.3).

        Args:
            task: What is to be done.
            namespace: Prefix under which agents are registered and their episodes stored
                (None: everywhere the caller reads).
            candidates: Only these agents (names); None for every registered one.
            skills: Skills the task needs; without them the task text is matched.
            weights: Per-call weights (``specialization``, ``experience``, ``performance``).

        Returns:
            Every candidate with its score and the three parts, best first.

        Raises:
            NotFound: A candidate is not registered under ``namespace``.
            InvalidInput: A bad argument.
        """
        text = v.content(task, self.config.max_content_bytes, "task")
        wanted = v.tags(skills, "skills")
        chosen = agent_rules.selection_weights(self.config.selection, weights)
        names_given = None
        if candidates is not None:
            if isinstance(candidates, str) or not isinstance(candidates, Iterable):
                raise InvalidInput("candidates", "must be a list of agent names")
            names_given = [agent_rules.checked_name(c, "candidates") for c in candidates]
        profiles = self._profiles(namespace)
        if names_given is not None:
            known = {p.name for p in profiles}
            for name in names_given:
                if name not in known:
                    raise NotFound(f"no agent {name!r} registered under {namespace or 'any namespace'}", agent=name)
            profiles = [p for p in profiles if p.name in names_given]
        hits: builtins.list[Hit] = []
        if profiles and chosen.experience > 0:
            hits = self.recall(text, namespace=namespace, kinds="episode", k=min(chosen.experience_pool, _MAX_K))
        return agent_rules.ranked(text, wanted, profiles, hits, chosen)

    def context_for(
        self,
        agent: str,
        task: str,
        *,
        namespace: str | None = None,
        k: int = 5,
        token_budget: int | None = None,
        counter: str | None = None,
    ) -> ExperienceContext:
        """An agent's past experiences most relevant to a task, formatted for its prompt.

        Recalls the agent's episodes (``agent_id``) under ``namespace``; successful
        ones come first, each with its action, outcome and lesson, and entries
        are added best first while the text stays within ``token_budget``.

        Args:
            agent: Whose experiences.
            task: What the agent is about to do.
            namespace: Prefix to recall from (None: everywhere the caller reads).
            k: At most this many episodes, 1..1000.
            token_budget: Most tokens the text may take; None for no limit.
            counter: How tokens are counted (:func:`hivemem.tokens.counter_for`; default ``minilm``).

        Raises:
            InvalidInput: A bad argument.
        """
        who = agent_rules.checked_name(agent)
        text = v.content(task, self.config.max_content_bytes, "task")
        budget = None if token_budget is None else v.positive_int(token_budget, "token_budget")
        hits = self.recall(text, namespace=namespace, kinds="episode", agent_id=who, k=k)
        return agent_rules.format_context(who, hits, budget, checked_counter(counter).count)

    # -- working memory (see hivemem.working) --------------------------------------------------

    def load_resources(self, resources: str | ResourceRegistry | None) -> ResourceRegistry | None:
        """Use a memory resources file (YAML) or registry for :meth:`working`; None forgets it.

        Raises:
            InvalidInput: The file is malformed (see ``hivemem resources check``).
        """
        from hivemem.resources import ResourceRegistry

        registry = ResourceRegistry.load(resources) if isinstance(resources, str) else resources
        self._resources: ResourceRegistry | None = registry
        return registry

    def working(self, key_or_resource: str, /, *, agent: str | None = None, **options: Any) -> WorkingMemory:
        """A handle on a working-memory buffer: ``append``, ``messages``, ``clear``, ``flush``, ``stats``.

        With a resource id of the loaded resources (:meth:`load_resources`,
        ``hivemem.open(..., resources="file.yaml")``), its key template is filled
        from ``options`` (``hive.working("support", user_id="u1")``) and its
        settings apply, overridden by the agent's, overridden by ``options`` that
        name a setting (``max_tokens=2000``). Anything else is the buffer's key
        itself (a namespace path) and ``options`` are its settings
        (:class:`~hivemem.working.BufferSettings`); with no options the handle
        uses the buffer's stored settings (the defaults for a new buffer).

        Raises:
            InvalidInput: A bad key, template variable or setting.
        """
        from hivemem.buffers import buffer_key
        from hivemem.working import resource_handle

        registry: ResourceRegistry | None = getattr(self, "_resources", None)
        if registry is not None and isinstance(key_or_resource, str):
            handle = resource_handle(self, registry, key_or_resource, agent, options)
            if handle is not None:
                return handle
        return WorkingMemory(self, buffer_key(key_or_resource), BufferSettings.of(options, "options"), bool(options))

    def working_append(
        self,
        key: str,
        role: str,
        content: str,
        *,
        priority: int = 0,
        metadata: Mapping[str, Any] | None = None,
        pinned: bool = False,
        settings: Mapping[str, Any] | None = None,
    ) -> WorkingStats:
        """Append a message to a working-memory buffer, keeping it within its limits, in one transaction.

        Content is redacted with the buffer's patterns before it is stored; a
        role in ``never_persist_roles`` is dropped (not stored; ``dropped`` is 1).
        If the buffer is over a limit, the strategy's messages are evicted
        (archived as memories of kind ``message`` if the buffer archives); system
        and pinned messages and this message are never evicted. If the buffer is
        then above its flush threshold, its oldest part is summarised: in the
        same transaction with the extractive summarizer; with a model, after it
        commits (then the stats returned are those before the flush).

        Args:
            key: The buffer, a namespace path (needs write access).
            role: ``user``, ``assistant``, ``system``, ``tool``...
            content: The message text.
            priority: Kept longer by the ``priority`` strategy when higher.
            metadata: A JSON object kept with the message; ``{"pinned": true}`` pins it.
            pinned: Never evict or summarise this message.
            settings: The buffer's settings (see BufferSettings); given, they replace the stored ones.

        Returns:
            The buffer's stats after the append.

        Raises:
            PayloadTooLarge: This message with the system and pinned ones exceeds a limit; nothing is stored.
            InvalidInput: A bad key, role, content, priority, metadata or setting.
            Forbidden: No write access to the key.
        """
        from hivemem import buffers

        return buffers.append(
            self, key, role, content, priority=priority, metadata=metadata, pinned=pinned, settings=settings
        )

    def working_messages(self, key: str, *, token_budget: int | None = None) -> builtins.list[WorkingMessage]:
        """A buffer's messages, oldest first; with a budget, system and pinned ones, then the newest that fit.

        Counts the read for the ``lru`` and ``lfu`` strategies. An unknown buffer has none.

        Args:
            key: The buffer (needs read access).
            token_budget: Most tokens to return.

        Raises:
            InvalidInput: A bad key or budget.
        """
        from hivemem import buffers

        return buffers.messages(self, key, token_budget)

    def working_clear(self, key: str) -> int:
        """Delete every message of a buffer (its settings and counters stay); returns how many.

        Raises:
            InvalidInput: A bad key.
            Forbidden: No write access to the key.
        """
        from hivemem import buffers

        return buffers.clear(self, key)

    def working_flush(self, key: str) -> int:
        """Summarise a buffer's oldest messages into one ``summary`` message now; returns how many it replaced.

        The summary and the removal commit in one transaction (archiving the
        originals as memories if the buffer archives), so a crash leaves either
        both or neither.

        Raises:
            InvalidInput: A bad key.
            Forbidden: No write access to the key.
        """
        from hivemem import buffers

        return buffers.flush(self, key)

    def working_stats(self, key: str) -> WorkingStats:
        """A buffer's tokens, messages, evictions, flushes and settings (zeros for an unknown buffer).

        Raises:
            InvalidInput: A bad key.
        """
        from hivemem import buffers

        return buffers.stats(self, key)

    def pack(
        self,
        query: str,
        *,
        token_budget: int,
        working: str | None = None,
        namespace: str | None = None,
        k: int = 10,
    ) -> Pack:
        """Prompt text combining a working-memory buffer with recalled memories, within ``token_budget``.

        Fills the budget with the buffer's system and pinned messages, then the
        best recalled memories (up to half of what is left), then the newest
        messages, then more memories; ``left_out`` says what did not fit and why.

        Args:
            query: What to recall memories for.
            token_budget: Most tokens the text may count (by the buffer's counter).
            working: A buffer key, or None for recalled memories only.
            namespace: Where to recall from (a prefix); None for everything readable.
            k: How many memories to recall.

        Raises:
            InvalidInput: A bad argument.
        """
        return packing.pack(self, query, token_budget, working, namespace, k)

    # -- workflows (see hivemem.workflows) -------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        namespace: str,
        timeout: float | None = None,
        lease_ttl: float = workflows.LEASE_TTL,
        wait: float = 60.0,
        durability: str = "sync",
    ) -> Callable[[Callable[..., Any]], WorkflowFunction]:
        """Decorate a plain or async function as a durable workflow that runs on this Hive.

        Call the result with the function's own arguments: the run's id derives
        from them (or give one: ``fn.with_id("run-7")(...)``). Completed steps
        come back from their checkpoints, the first unfinished one runs next.
        See :func:`hivemem.workflows.workflow` for every argument.
        """
        return workflows.workflow(
            name, namespace=namespace, timeout=timeout, lease_ttl=lease_ttl, wait=wait, durability=durability, hive=self
        )

    def step(
        self, name: str | None = None, *, retry: Retry | None = None, timeout: float | None = None
    ) -> Callable[[Callable[..., Any]], workflows.StepFunction]:
        """Decorate a plain or async function as a workflow step (:func:`hivemem.workflows.step`).

        Inside a workflow its result is recorded under (run id, step number) and
        a replay returns it without running it again; its HiveMem writes apply
        once; :func:`hivemem.workflows.current_step` gives the idempotency key
        (``<run id>:<step>``) for external effects.
        """
        return workflows.step(name, retry=retry, timeout=timeout)

    def recover(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Resume every unfinished run of the workflows registered in this process (or only ``names``).

        A run whose executor holds its lease is left to it, so several processes
        may recover at once and each run still runs once. See
        :func:`hivemem.workflows.recover` for the counts returned.
        """
        return workflows.recover(self, names)

    def start_workflow(
        self,
        name: str,
        *,
        namespace: str,
        workflow_id: str,
        inputs: Any = None,
        deadline: datetime | None = None,
        fence: Lease | Fence | None = None,
    ) -> Workflow:
        """Record a new run (status ``pending``), or return the run of that id if it exists.

        With ``fence`` (the executor's lease on ``<namespace>/wf.<id>``) it also
        claims the run in the same transaction: an unfinished run becomes
        ``running`` and comes back with its recorded steps. A primitive of
        :mod:`hivemem.workflows` (the decorators call it); public so that
        workflows run in a client's process over HTTP.

        Args:
            name: The workflow's registered name.
            namespace: Where the run lives; needs write access.
            workflow_id: The run's id (letters, digits, ``_.:@-``, at most 60).
            inputs: Its JSON inputs.
            deadline: When it times out (an aware datetime), if ever.
            fence: The executor's lease, to claim the run.

        Raises:
            InvalidInput: A bad argument, or the id is taken by a run of another
                workflow or with other inputs.
            StaleFencingToken: ``fence`` was superseded by a newer executor.
        """
        return checkpoints.start_run(self, name, namespace, workflow_id, inputs, deadline, fence)

    def record_steps(
        self,
        workflow_id: str,
        steps: Sequence[Mapping[str, Any]],
        *,
        namespace: str,
        fence: Lease | Fence | None = None,
    ) -> builtins.list[StepRecord]:
        """Record finished steps of a run, all in one transaction (one durable commit).

        A step number recorded already keeps its first record, which is returned.

        Args:
            workflow_id: The run.
            steps: Each ``{"step": n, "name": ..., "status": "succeeded" | "failed",
                "result": <JSON>, "error": {"type", "message"}, "attempts": n,
                "started_at": <Unix seconds>}`` (status, attempts and started_at optional).
            namespace: The run's namespace.
            fence: The executor's lease: refused once a newer executor holds the run.

        Returns:
            The steps as recorded, in the order given.

        Raises:
            NotFound: No such run.
            WorkflowDiverged: A step number is recorded under another name.
            WorkflowCancelled: The run was cancelled.
            StaleFencingToken: ``fence`` was superseded.
            InvalidInput: A bad step (``field`` reads ``steps[2].result``...), or the run has ended.
        """
        return checkpoints.record_many(self, workflow_id, namespace, steps, fence)

    def _step_log(self, wf: Workflow, fence: Lease) -> checkpoints.StepLog | None:
        """How a runner in this process records run ``wf``'s steps: straight into the store (None: record_steps)."""
        return checkpoints.StepLog(self, wf, fence)

    def finish_workflow(
        self,
        workflow_id: str,
        *,
        namespace: str,
        status: str,
        result: Any = None,
        error: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> Workflow:
        """End a run as ``succeeded`` (with its JSON result) or ``failed`` (with its error).

        A run that has ended already (cancelled, say) is returned unchanged.

        Args:
            workflow_id: The run.
            namespace: The run's namespace.
            status: ``succeeded`` or ``failed``.
            result: The JSON result of a success.
            error: ``{"type": ..., "message": ...}`` of a failure.
            lease: The executor's lease: fences this write, and is released in its transaction.

        Raises:
            NotFound: No such run.
            StaleFencingToken: ``lease`` was superseded.
            InvalidInput: A bad status, result, error or lease.
        """
        return checkpoints.finish(self, workflow_id, namespace, status, result, error, lease)

    def cancel_workflow(self, workflow_id: str, *, namespace: str) -> Workflow:
        """Cancel a run: its executor records no further step and raises WorkflowCancelled.

        A run that has ended is returned unchanged.

        Raises:
            NotFound: No such run.
        """
        return checkpoints.cancel(self, workflow_id, namespace)

    def get_workflow(self, workflow_id: str, *, namespace: str) -> Workflow:
        """A run with its recorded steps.

        Raises:
            NotFound: No such run (or not readable by the principal).
        """
        return checkpoints.show(self, workflow_id, namespace)

    def workflows(
        self, *, status: str | Sequence[str] | None = None, namespace: str | None = None, limit: int = 100
    ) -> builtins.list[Workflow]:
        """Runs the principal may read, oldest first (without their steps).

        Args:
            status: Only runs with this status (or one of these).
            namespace: Only runs under this namespace prefix.
            limit: At most this many (1-1000).
        """
        return checkpoints.listed(self, status, namespace, limit)

    # -- helpers -------------------------------------------------------------------------------

    def _require_admin(self, what: str) -> None:
        if self.principal.prefixes("admin") is not None:
            raise Forbidden(f"{what} needs admin on every namespace (admin:*)")

    def _require(self, tx: StoreTx, memory_id: str, now: float, level: str = "read") -> Memory:
        """The live memory ``memory_id``, if the principal may see it (and act on it at ``level``)."""
        v.identifier(memory_id, "id")
        found = tx.get(memory_id, now)
        if found is None or not self.principal.allows("read", found.namespace):
            raise NotFound(f"no memory with id {memory_id}", id=memory_id)
        self._may(level, found.namespace)
        return found

    def _may(self, level: str, namespace: str) -> None:
        if not self.principal.allows(level, namespace):
            raise Forbidden(f"{self.principal.name} may not {level} in {namespace}", namespace=namespace, level=level)

    def _readable(self) -> tuple[str, ...] | None:
        return self.principal.prefixes("read")


def _refuse_options(options: Mapping[str, Any], owned: Sequence[str], helper: str) -> None:
    """Typed helpers set some remember() fields themselves; refuse them as options."""
    for name in owned:
        if name in options:
            raise InvalidInput(name, f"is set by {helper} and cannot be given")


def _duration(value: object) -> float:
    """A duration in seconds: a finite number of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput("duration", "must be a number of seconds, at least 0", value=repr(value)[:80])
    return float(value)


def _live(memory: Memory, now: float) -> bool:
    return memory.expires_at is None or memory.expires_at.timestamp() > now


class _NeedsVector(Exception):
    """Raised inside a write transaction whose text has no vector yet: embed outside, then retry."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
