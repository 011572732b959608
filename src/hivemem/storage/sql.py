"""SQL both relational backends share: the filter compiler and the queries that differ only in spelling.

A :class:`Dialect` says how one database spells the few things that differ
(bind placeholders, "one of these values", tags, typed JSON comparisons, the
namespace range); :class:`SqlTx` holds every primitive whose SQL is otherwise
the same on SQLite and PostgreSQL. Each backend subclasses both and keeps only
what really differs (writes, vectors, full text).
"""

from __future__ import annotations

import builtins
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from hivemem.access import ApiKey, Grant, Principal
from hivemem.clock import utc
from hivemem.models import Conflict, Group, Memory, Relation
from hivemem.storage.base import MEMORY_COLUMNS, MemoryFilter, RankFacts, StoreTx, memory_from_row
from hivemem.storage.workflow_sql import WorkflowSql
from hivemem.storage.working_sql import WorkingSql
from hivemem.validation import root_of

#: Comparison operators of ``where`` filters.
SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
COLUMNS = ", ".join(f"m.{c}" for c in MEMORY_COLUMNS)
#: Conflicts (alias ``c``) see what their memory (alias ``m``) passes: a filter, grants, expiry.
_MEMORY_OF_CONFLICT = "memories m ON m.root = c.root AND m.id = c.memory_id"


class Dialect(ABC):
    """How one database spells what the shared SQL needs. Clauses are on alias ``m``."""

    #: The bind placeholder ("?" or "%s").
    p: str
    #: An episode's boolean ``data.success`` as something ``bool()`` reads, else NULL.
    success: str
    #: The bytes a memory's content, data and tags take, as stored.
    stored_bytes: str
    #: The database's current time in Unix seconds.
    now: str

    @abstractmethod
    def namespace_clause(self, prefix: str, params: builtins.list[Any]) -> str:
        """``m.namespace`` equals ``prefix`` or lies below it (segment-wise, bytewise)."""

    @abstractmethod
    def one_of(self, column: str, values: Sequence[Any], params: builtins.list[Any]) -> str:
        """``column`` is one of ``values``."""

    @abstractmethod
    def has_tags(self, tags: Sequence[str], params: builtins.list[Any]) -> str:
        """``m.tags`` holds every one of ``tags``."""

    @abstractmethod
    def data_compare(self, path: str, op: str, operand: Any, params: builtins.list[Any]) -> str:
        """``m.data`` at dotted ``path`` compares with ``operand`` by ``op``, only between values of one JSON type.

        None matches a JSON null and a missing field alike; ``{"x": 1}`` does not
        match ``true`` and ``{"$gt": 5}`` does not match a string.
        """


def compile_filter(flt: MemoryFilter, params: builtins.list[Any], d: Dialect) -> str:
    """SQL conditions on alias ``m`` for ``flt``, appending bind values to ``params``."""
    p = d.p
    clauses = [f"(m.expires_at IS NULL OR m.expires_at > {p})"]
    params.append(flt.now)
    if flt.namespace is not None:
        clauses.append(d.namespace_clause(flt.namespace, params))
    if flt.within is not None:
        clauses.append(within_clause(flt.within, params, d))
    for column, values in (("kind", flt.kinds), ("tier", flt.tiers)):
        if values is not None:
            clauses.append(d.one_of(f"m.{column}", values, params))
    if flt.exclude_kinds:
        clauses.append(f"NOT {d.one_of('m.kind', flt.exclude_kinds, params)}")
    if flt.tags:
        clauses.append(d.has_tags(flt.tags, params))
    for column, value in (("agent_id", flt.agent_id), ("session_id", flt.session_id)):
        if value is not None:
            clauses.append(f"m.{column} = {p}")
            params.append(value)
    if flt.since is not None:
        clauses.append(f"COALESCE(m.occurred_at, m.created_at) >= {p}")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append(f"COALESCE(m.occurred_at, m.created_at) < {p}")
        params.append(flt.until)
    for path, ops in flt.where.items():
        for op, operand in ops.items():
            if op == "$in":
                matches = [d.data_compare(path, "$eq", item, params) for item in operand]
                clauses.append("(" + " OR ".join(matches) + ")")
            elif op == "$ne":
                clauses.append(f"NOT {d.data_compare(path, '$eq', operand, params)}")
            else:
                clauses.append(d.data_compare(path, op, operand, params))
    return " AND ".join(clauses)


def within_clause(prefixes: Sequence[str], params: builtins.list[Any], d: Dialect) -> str:
    """``m.namespace`` lies under one of ``prefixes`` (none: nothing passes)."""
    alternatives = [d.namespace_clause(prefix, params) for prefix in prefixes]
    return "(" + (" OR ".join(alternatives) or "1 = 0") + ")"


class SqlTx(WorkingSql, WorkflowSql, StoreTx):
    """The primitives whose SQL is the same on every relational backend, up to its :class:`Dialect`.

    Args:
        conn: A DB-API-like connection: ``conn.execute(sql, params).fetchall()``.
    """

    dialect: Dialect
    #: Appended to single-memory reads; a write transaction may lock what it reads.
    lock = ""
    #: Appended to reads of a fencing counter: to hold it exclusively (a grant), or shared (a fenced write).
    claim_lock = ""
    share_lock = ""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        # Events of this transaction, numbered and stored by flush_events just before commit.
        self._events: builtins.list[tuple[str, str, str, str]] = []
        self._evented_roots: set[str] = set()

    def _rows(self, sql: str, params: Any = ()) -> builtins.list[Any]:
        return builtins.list(self.conn.execute(sql, params).fetchall())

    def _execute(self, sql: str, params: Any = ()) -> None:
        """Run a statement whose result nobody reads (a backend may send it later, in order)."""
        self.conn.execute(sql, params)

    def _inserted(self, sql: str, params: Any = ()) -> bool:
        """Run ``sql``, an ``INSERT ... ON CONFLICT DO NOTHING``; whether it inserted a row."""
        return bool(self._rows(sql + " RETURNING 1", params))

    def _memories(self, where: str, params: Sequence[Any], suffix: str = "") -> builtins.list[Memory]:
        rows = self._rows(f"SELECT {COLUMNS} FROM memories m WHERE {where}{suffix}", params)
        return [memory_from_row(r) for r in rows]

    def get(self, memory_id: str, now: float) -> Memory | None:
        p = self.dialect.p
        found = self._memories(
            f"m.id = {p} AND (m.expires_at IS NULL OR m.expires_at > {p})", (memory_id, now), self.lock
        )
        return found[0] if found else None

    def get_by_key(self, namespace: str, key: str, now: float) -> Memory | None:
        p = self.dialect.p
        found = self._memories(
            f"m.root = {p} AND m.namespace = {p} AND m.key = {p} AND (m.expires_at IS NULL OR m.expires_at > {p})",
            (root_of(namespace), namespace, key, now),
            self.lock,
        )
        return found[0] if found else None

    def get_many(self, ids: Sequence[str], flt: MemoryFilter) -> dict[str, Memory]:
        if not ids:
            return {}
        params: builtins.list[Any] = []
        where = self.dialect.one_of("m.id", ids, params) + " AND " + compile_filter(flt, params, self.dialect)
        return {m.id: m for m in self._memories(where, params)}

    def rank_facts(self, ids: Sequence[str], flt: MemoryFilter) -> dict[str, RankFacts]:
        if not ids:
            return {}
        params: builtins.list[Any] = []
        where = self.dialect.one_of("m.id", ids, params) + " AND " + compile_filter(flt, params, self.dialect)
        rows = self._rows(
            "SELECT m.id, m.importance, COALESCE(m.occurred_at, m.created_at), "
            f"CASE WHEN m.kind = 'episode' THEN {self.dialect.success} END FROM memories m WHERE {where}",
            params,
        )
        return {r[0]: RankFacts(r[1], r[2], None if r[3] is None else bool(r[3])) for r in rows}

    def record_access(self, memory_id: str, importance: float, now: float) -> None:
        p = self.dialect.p
        rows = self._rows(
            f"UPDATE memories SET importance = {p}, access_count = access_count + 1, last_accessed_at = {p} "
            f"WHERE id = {p} RETURNING namespace, kind, version, key",
            (importance, now, memory_id),
        )
        for namespace, kind, version, key in rows:
            self.record_event(namespace, "memory.accessed", memory_id, {"kind": kind, "version": version, "key": key})

    def history(self, memory_id: str) -> builtins.list[Memory]:
        rows = self._rows(
            f"SELECT snapshot FROM memory_versions WHERE memory_id = {self.dialect.p} ORDER BY version", (memory_id,)
        )
        return [Memory.from_dict(json.loads(r[0])) for r in rows]

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        d = self.dialect
        for table in ("memory_versions", "conflicts", "group_members"):
            params: builtins.list[Any] = []
            self._execute(f"DELETE FROM {table} WHERE {d.one_of('memory_id', ids, params)}", params)
        params = []
        edges = f"{d.one_of('src_id', ids, params)} OR {d.one_of('dst_id', ids, params)}"
        self._execute(f"DELETE FROM relations WHERE {edges}", params)
        params = []
        deleted = self._rows(
            f"DELETE FROM memories WHERE {d.one_of('id', ids, params)} RETURNING id, namespace, kind, version, key",
            params,
        )
        for memory_id, namespace, kind, version, key in deleted:
            self.record_event(namespace, "memory.deleted", memory_id, {"kind": kind, "version": version, "key": key})
        return len(deleted)

    def child_ids(self, parent_ids: Sequence[str]) -> builtins.list[str]:
        params: builtins.list[Any] = []
        where = self.dialect.one_of("parent_id", parent_ids, params)
        return [r[0] for r in self._rows(f"SELECT id FROM memories WHERE {where}", params)]

    def ids_in_namespace(self, prefix: str) -> builtins.list[str]:
        params: builtins.list[Any] = []
        where = self.dialect.namespace_clause(prefix, params)
        return [r[0] for r in self._rows(f"SELECT m.id FROM memories m WHERE {where}", params)]

    def list(
        self, flt: MemoryFilter, order_by: str, descending: bool, after: tuple[Any, str] | None, limit: int
    ) -> builtins.list[Memory]:
        p = self.dialect.p
        expr = "COALESCE(m.occurred_at, m.created_at)" if order_by == "occurred_at" else f"m.{order_by}"
        params: builtins.list[Any] = []
        where = compile_filter(flt, params, self.dialect)
        if after is not None:
            where += f" AND ({expr}, m.id) {'<' if descending else '>'} ({p}, {p})"
            params += builtins.list(after)
        direction = "DESC" if descending else "ASC"
        params.append(limit)
        return self._memories(f"{where} ORDER BY {expr} {direction}, m.id {direction} LIMIT {p}", params)

    def relations(self, memory_id: str, type: str | None, direction: str) -> builtins.list[Relation]:
        p = self.dialect.p
        sides = {"out": ["src_id"], "in": ["dst_id"], "both": ["src_id", "dst_id"]}[direction]
        where = " OR ".join(f"{side} = {p}" for side in sides)
        params: builtins.list[Any] = [memory_id] * len(sides)
        sql = f"SELECT src_id, dst_id, type, strength, created_at FROM relations WHERE ({where})"
        if type is not None:
            sql += f" AND type = {p}"
            params.append(type)
        rows = self._rows(sql + " ORDER BY created_at, src_id, dst_id", params)
        return [Relation(r[0], r[1], r[2], r[3], utc(r[4])) for r in rows]

    def stats(self, flt: MemoryFilter) -> builtins.list[tuple[str, str, int, int]]:
        params: builtins.list[Any] = []
        where = compile_filter(flt, params, self.dialect)
        rows = self._rows(
            f"SELECT m.kind, m.tier, count(*), sum({self.dialect.stored_bytes}) "
            f"FROM memories m WHERE {where} GROUP BY m.kind, m.tier ORDER BY m.kind, m.tier",
            params,
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def put_conflict(self, conflict: Conflict) -> None:
        p = self.dialect.p
        sides = {side: getattr(conflict, side).to_dict() for side in ("base", "ours", "theirs")}
        self._execute(
            f"INSERT INTO conflicts (root, id, memory_id, created_at, principal, strategy, result_version, sides) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (
                root_of(conflict.namespace),
                conflict.id,
                conflict.memory_id,
                conflict.created_at.timestamp(),
                conflict.principal,
                conflict.strategy,
                conflict.result_version,
                json.dumps(sides, separators=(",", ":")),
            ),
        )

    def conflicts(self, flt: MemoryFilter, memory_id: str | None, limit: int) -> builtins.list[Conflict]:
        p = self.dialect.p
        params: builtins.list[Any] = []
        where = compile_filter(flt, params, self.dialect)
        if memory_id is not None:
            where += f" AND c.memory_id = {p}"
            params.append(memory_id)
        params.append(limit)
        rows = self._rows(
            "SELECT c.id, c.memory_id, m.namespace, c.created_at, c.principal, c.strategy, c.result_version, c.sides "
            f"FROM conflicts c JOIN {_MEMORY_OF_CONFLICT} WHERE {where} "
            f"ORDER BY c.created_at DESC, c.id DESC LIMIT {p}",
            params,
        )
        out = []
        for r in rows:
            sides = {side: Memory.from_dict(value) for side, value in json.loads(r[7]).items()}
            out.append(Conflict(r[0], r[1], r[2], utc(r[3]), r[4], r[5], result_version=r[6], **sides))
        return out

    def count_conflicts(self, flt: MemoryFilter) -> int:
        params: builtins.list[Any] = []
        where = compile_filter(flt, params, self.dialect)
        rows = self._rows(f"SELECT count(*) FROM conflicts c JOIN {_MEMORY_OF_CONFLICT} WHERE {where}", params)
        return int(rows[0][0])

    def put_setting(self, prefix: str, name: str, value: str | None, now: float) -> None:
        p = self.dialect.p
        key = (root_of(prefix), prefix, name)
        if value is None:
            self._execute(f"DELETE FROM settings WHERE root = {p} AND prefix = {p} AND name = {p}", key)
        else:
            self._execute(
                f"INSERT INTO settings VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (root, prefix, name) "
                "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (*key, value, now),
            )

    def settings(self, prefixes: Sequence[str], name: str) -> dict[str, str]:
        if not prefixes:
            return {}
        p = self.dialect.p
        params: builtins.list[Any] = [root_of(prefixes[0]), name]
        where = f"root = {p} AND name = {p} AND " + self.dialect.one_of("prefix", prefixes, params)
        return {r[0]: r[1] for r in self._rows(f"SELECT prefix, value FROM settings WHERE {where}", params)}

    def put_api_key(self, key: ApiKey) -> None:
        p = self.dialect.p
        grants = json.dumps([str(g) for g in key.principal.grants])
        self._execute(
            f"INSERT INTO api_keys VALUES ({p}, {p}, {p}, {p}, {p}, NULL)",
            (key.key_id, key.principal.name, grants, key.key_hash, key.created_at.timestamp()),
        )

    def api_keys(self, key_id: str | None = None) -> builtins.list[ApiKey]:
        sql = "SELECT key_id, principal, grants, key_hash, created_at, revoked_at FROM api_keys"
        params: tuple[Any, ...] = ()
        if key_id is not None:
            sql, params = sql + f" WHERE key_id = {self.dialect.p}", (key_id,)
        return [
            ApiKey(
                r[0],
                Principal(r[1], tuple(Grant.parse(g) for g in json.loads(r[2]))),
                r[3],
                utc(r[4]),
                None if r[5] is None else utc(r[5]),
            )
            for r in self._rows(sql + " ORDER BY created_at, key_id", params)
        ]

    def revoke_api_key(self, key_id: str, now: float) -> bool:
        p = self.dialect.p
        sql = f"UPDATE api_keys SET revoked_at = {p} WHERE key_id = {p} AND revoked_at IS NULL RETURNING 1"
        return bool(self._rows(sql, (now, key_id)))

    def put_once(self, principal: str, key: str, result: str, now: float, expired_before: float) -> bool:
        p = self.dialect.p
        where = f"principal = {p} AND idempotency_key = {p}"
        self._execute(f"DELETE FROM idempotency WHERE {where} AND created_at < {p}", (principal, key, expired_before))
        return self._inserted(
            f"INSERT INTO idempotency VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING", (principal, key, result, now)
        )

    def get_once(self, principal: str, key: str, since: float) -> str | None:
        p = self.dialect.p
        rows = self._rows(
            f"SELECT result FROM idempotency WHERE principal = {p} AND idempotency_key = {p} AND created_at >= {p}",
            (principal, key, since),
        )
        return str(rows[0][0]) if rows else None

    def prune_once(self, before: float) -> int:
        p = self.dialect.p
        return len(self._rows(f"DELETE FROM idempotency WHERE created_at < {p} RETURNING 1", (before,)))

    def get_group(self, name: str) -> Group | None:
        rows = self._rows(f"SELECT name, description, created_at FROM groups WHERE name = {self.dialect.p}", (name,))
        return Group(rows[0][0], rows[0][1], utc(rows[0][2])) if rows else None

    def db_now(self) -> float:
        return float(self._rows(f"SELECT {self.dialect.now}")[0][0])

    def claim_resource(self, root: str, resource: str) -> None:
        p = self.dialect.p
        self._execute(f"INSERT INTO fences VALUES ({p}, {p}, 0) ON CONFLICT DO NOTHING", (root, resource))
        self._rows(f"SELECT token FROM fences WHERE root = {p} AND resource = {p}{self.claim_lock}", (root, resource))

    def live_lease_modes(self, root: str, resource: str, now: float) -> builtins.list[str]:
        p = self.dialect.p
        where = f"root = {p} AND resource = {p}"
        lapsed = self._rows(
            f"DELETE FROM leases WHERE {where} AND expires_at <= {p} RETURNING resource, lease_id, mode, token, holder",
            (root, resource, now),
        )
        self._lease_events("lease.expired", lapsed)
        return [r[0] for r in self._rows(f"SELECT mode FROM leases WHERE {where}", (root, resource))]

    def waiting_writers(self, root: str, resource: str, now: float) -> builtins.list[str]:
        p = self.dialect.p
        where = f"root = {p} AND resource = {p}"
        self._execute(f"DELETE FROM lease_waiters WHERE {where} AND expires_at <= {p}", (root, resource, now))
        rows = self._rows(
            f"SELECT waiter_id FROM lease_waiters WHERE {where} ORDER BY since, waiter_id", (root, resource)
        )
        return [r[0] for r in rows]

    def lease_state(self, root: str, resource: str) -> tuple[builtins.list[str], builtins.list[str]]:
        p, now = self.dialect.p, self.dialect.now
        where = f"root = {p} AND resource = {p} AND expires_at > {now}"
        modes = self._rows(f"SELECT mode FROM leases WHERE {where}", (root, resource))
        waiters = self._rows(
            f"SELECT waiter_id FROM lease_waiters WHERE {where} ORDER BY since, waiter_id", (root, resource)
        )
        return [r[0] for r in modes], [r[0] for r in waiters]

    def put_waiter(self, root: str, resource: str, waiter_id: str, now: float, expires_at: float) -> None:
        p = self.dialect.p
        self._execute(
            f"INSERT INTO lease_waiters VALUES ({p}, {p}, {p}, {p}, {p}) "
            "ON CONFLICT (root, resource, waiter_id) DO UPDATE SET expires_at = excluded.expires_at",
            (root, resource, waiter_id, now, expires_at),
        )

    def drop_waiter(self, root: str, resource: str, waiter_id: str) -> None:
        p = self.dialect.p
        self._execute(
            f"DELETE FROM lease_waiters WHERE root = {p} AND resource = {p} AND waiter_id = {p}",
            (root, resource, waiter_id),
        )

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
        p = self.dialect.p
        token = int(
            self._rows(
                f"UPDATE fences SET token = token + 1 WHERE root = {p} AND resource = {p} RETURNING token",
                (root, resource),
            )[0][0]
        )
        self._execute(
            f"INSERT INTO leases VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (root, resource, lease_id, mode, token, principal, holder, now, expires_at),
        )
        self._lease_events("lease.granted", [(resource, lease_id, mode, token, holder)])
        return token

    def renew_lease(
        self, root: str, resource: str, lease_id: str, principal: str, now: float, expires_at: float
    ) -> float | None:
        p = self.dialect.p
        rows = self._rows(
            f"UPDATE leases SET expires_at = {p} WHERE root = {p} AND resource = {p} AND lease_id = {p} "
            f"AND principal = {p} AND expires_at > {p} RETURNING expires_at",
            (expires_at, root, resource, lease_id, principal, now),
        )
        return float(rows[0][0]) if rows else None

    def release_lease(self, root: str, resource: str, lease_id: str, principal: str, now: float) -> bool:
        p = self.dialect.p
        rows = self._rows(
            f"DELETE FROM leases WHERE root = {p} AND resource = {p} AND lease_id = {p} AND principal = {p} "
            "RETURNING resource, lease_id, mode, token, holder, expires_at",
            (root, resource, lease_id, principal),
        )
        live = bool(rows) and float(rows[0][5]) > now
        self._lease_events("lease.released" if live else "lease.expired", [r[:5] for r in rows])
        return live

    def fence_token(self, root: str, resource: str) -> int:
        p = self.dialect.p
        rows = self._rows(
            f"SELECT token FROM fences WHERE root = {p} AND resource = {p}{self.share_lock}", (root, resource)
        )
        return int(rows[0][0]) if rows else 0

    def leases(self, now: float) -> builtins.list[tuple[str, str, str, int, str, float, float]]:
        rows = self._rows(
            "SELECT resource, lease_id, mode, token, holder, acquired_at, expires_at FROM leases "
            f"WHERE expires_at > {self.dialect.p} ORDER BY resource, token",
            (now,),
        )
        return [(r[0], r[1], r[2], int(r[3]), r[4], float(r[5]), float(r[6])) for r in rows]

    def prune_leases(self, now: float) -> int:
        p = self.dialect.p
        self._execute(f"DELETE FROM lease_waiters WHERE expires_at <= {p}", (now,))
        lapsed = self._rows(
            f"DELETE FROM leases WHERE expires_at <= {p} RETURNING resource, lease_id, mode, token, holder", (now,)
        )
        self._lease_events("lease.expired", lapsed)
        return len(lapsed)

    def _lease_events(self, type: str, leases: Sequence[Sequence[Any]]) -> None:
        for resource, lease_id, mode, token, holder in leases:
            data = {"lease_id": lease_id, "mode": mode, "token": int(token), "holder": holder}
            self.record_event(resource, type, resource, data)

    # -- events (hivemem.events) -----------------------------------------------------------------

    def record_event(self, namespace: str, type: str, subject: str, data: Mapping[str, Any]) -> None:
        self._events.append((namespace, type, subject, json.dumps(data, separators=(",", ":"))))

    def memory_event(self, type: str, memory: Memory) -> None:
        """Record ``type`` for ``memory`` (its kind, version, key and agent as the data)."""
        data = {"kind": memory.kind, "version": memory.version, "key": memory.key, "agent_id": memory.agent_id}
        self.record_event(memory.namespace, type, memory.id, data)

    def relation_event(self, relation: Relation) -> None:
        """Record a new (or re-weighted) relation in its source memory's namespace."""
        p = self.dialect.p
        for (namespace,) in self._rows(f"SELECT namespace FROM memories WHERE id = {p}", (relation.src_id,)):
            data = {"dst_id": relation.dst_id, "type": relation.type, "strength": relation.strength}
            self.record_event(namespace, "relation.created", relation.src_id, data)

    def append_event(self, namespace: str, type: str, subject: str, data: Mapping[str, Any]) -> tuple[int, float]:
        self.record_event(namespace, type, subject, data)
        return self._number(root_of(namespace), [self._events.pop()])

    def flush_events(self) -> builtins.list[str]:
        if not self._events and not self._evented_roots:  # a checkpoint, a lease renewal...
            return []
        by_root: dict[str, builtins.list[tuple[str, str, str, str]]] = {}
        for event in self._events:
            by_root.setdefault(root_of(event[0]), []).append(event)
        self._events = []
        for root, events in sorted(by_root.items()):  # one order: two writers never wait on each other in a cycle
            self._store_events(root, events)
        return sorted(self._evented_roots)

    def _store_events(self, root: str, events: Sequence[tuple[str, str, str, str]]) -> None:
        """:meth:`_number` for events whose numbers the caller does not need (a backend may skip reading them)."""
        self._number(root, events)

    def _number(self, root: str, events: Sequence[tuple[str, str, str, str]]) -> tuple[int, float]:
        """Store ``events`` under the root's next numbers (its counter row stays locked until commit).

        Returns the last number and the database's time, which every one of them carries.
        """
        p = self.dialect.p
        self._execute(f"INSERT INTO event_seqs VALUES ({p}, 0) ON CONFLICT DO NOTHING", (root,))
        last, at = self._rows(
            f"UPDATE event_seqs SET seq = seq + {p} WHERE root = {p} RETURNING seq, {self.dialect.now}",
            (len(events), root),
        )[0]
        for seq, (namespace, type, subject, data) in enumerate(events, start=int(last) - len(events) + 1):
            self._execute(
                f"INSERT INTO events VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                (root, seq, namespace, type, subject, data, at),
            )
        self._evented_roots.add(root)
        return int(last), float(at)

    def prune_events(self, before: float, limit: int) -> int:
        p = self.dialect.p
        old = self._rows(f"SELECT root, max(seq) FROM events WHERE at < {p} GROUP BY root ORDER BY root", (before,))
        pruned = 0
        for root, last in old:
            if pruned >= limit:
                break
            # A root's kept numbers run without gaps from its oldest, so the count is their difference.
            # (Times follow numbers only roughly: an event numbered below ``last`` may be a little newer.)
            first = self.first_event_seq(root)
            upto = min(int(last), first + limit - pruned - 1)
            self._execute(f"DELETE FROM events WHERE root = {p} AND seq <= {p}", (root, upto))
            pruned += upto - first + 1
        return pruned

    def first_event_seq(self, root: str) -> int:
        p = self.dialect.p
        oldest = self._rows(f"SELECT min(seq) FROM events WHERE root = {p}", (root,))[0][0]
        if oldest is not None:
            return int(oldest)
        counter = self._rows(f"SELECT seq FROM event_seqs WHERE root = {p}", (root,))
        return int(counter[0][0]) + 1 if counter else 1

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
        d = self.dialect
        params: builtins.list[Any] = [root, after]
        where = f"m.root = {d.p} AND m.seq > {d.p} AND " + d.namespace_clause(prefix, params)
        if within is not None:
            where += " AND " + within_clause(within, params, d)
        if types is not None:
            where += " AND " + d.one_of("m.type", types, params)
        if subject is not None:
            where += f" AND m.subject = {d.p}"
            params.append(subject)
        params.append(limit)
        return self._rows(
            f"SELECT m.seq, m.namespace, m.type, m.subject, m.data, m.at FROM events m WHERE {where} "
            f"ORDER BY m.seq LIMIT {d.p}",
            params,
        )

    def inbox_cursor(self, namespace: str, agent: str) -> int:
        p = self.dialect.p
        rows = self._rows(
            f"SELECT seq FROM inbox_cursors WHERE root = {p} AND namespace = {p} AND agent = {p}",
            (root_of(namespace), namespace, agent),
        )
        return int(rows[0][0]) if rows else 0

    def put_inbox_cursor(self, namespace: str, agent: str, seq: int) -> None:
        p = self.dialect.p
        self._execute(
            f"INSERT INTO inbox_cursors VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (root, namespace, agent) "
            "DO UPDATE SET seq = CASE WHEN excluded.seq > inbox_cursors.seq "
            "THEN excluded.seq ELSE inbox_cursors.seq END",
            (root_of(namespace), namespace, agent, seq),
        )
