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
from collections.abc import Sequence
from typing import Any

from hivemem.access import ApiKey, Grant, Principal
from hivemem.clock import utc
from hivemem.models import Group, Memory, Relation
from hivemem.storage.base import MEMORY_COLUMNS, MemoryFilter, RankFacts, StoreTx, memory_from_row
from hivemem.validation import root_of

#: Comparison operators of ``where`` filters.
SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
COLUMNS = ", ".join(f"m.{c}" for c in MEMORY_COLUMNS)


class Dialect(ABC):
    """How one database spells what the shared SQL needs. Clauses are on alias ``m``."""

    #: The bind placeholder ("?" or "%s").
    p: str
    #: An episode's boolean ``data.success`` as something ``bool()`` reads, else NULL.
    success: str
    #: The bytes a memory's content, data and tags take, as stored.
    stored_bytes: str

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
        alternatives = [d.namespace_clause(prefix, params) for prefix in flt.within]
        clauses.append("(" + (" OR ".join(alternatives) or "1 = 0") + ")")
    for column, values in (("kind", flt.kinds), ("tier", flt.tiers)):
        if values is not None:
            clauses.append(d.one_of(f"m.{column}", values, params))
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


class SqlTx(StoreTx):
    """The primitives whose SQL is the same on every relational backend, up to its :class:`Dialect`.

    Args:
        conn: A DB-API-like connection: ``conn.execute(sql, params).fetchall()``.
    """

    dialect: Dialect
    #: Appended to single-memory reads; a write transaction may lock what it reads.
    lock = ""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _rows(self, sql: str, params: Any = ()) -> builtins.list[Any]:
        return builtins.list(self.conn.execute(sql, params).fetchall())

    def _execute(self, sql: str, params: Any = ()) -> None:
        """Run a statement whose result nobody reads (a backend may send it later, in order)."""
        self.conn.execute(sql, params)

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
        self._execute(
            f"UPDATE memories SET importance = {p}, access_count = access_count + 1, last_accessed_at = {p} "
            f"WHERE id = {p}",
            (importance, now, memory_id),
        )

    def history(self, memory_id: str) -> builtins.list[Memory]:
        rows = self._rows(
            f"SELECT snapshot FROM memory_versions WHERE memory_id = {self.dialect.p} ORDER BY version", (memory_id,)
        )
        return [Memory.from_dict(json.loads(r[0])) for r in rows]

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        d = self.dialect
        for table, column in (("memory_versions", "memory_id"), ("group_members", "memory_id")):
            params: builtins.list[Any] = []
            self._execute(f"DELETE FROM {table} WHERE {d.one_of(column, ids, params)}", params)
        params = []
        edges = f"{d.one_of('src_id', ids, params)} OR {d.one_of('dst_id', ids, params)}"
        self._execute(f"DELETE FROM relations WHERE {edges}", params)
        params = []
        return len(self._rows(f"DELETE FROM memories WHERE {d.one_of('id', ids, params)} RETURNING 1", params))

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
        inserted = self._rows(
            f"INSERT INTO idempotency VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING RETURNING 1",
            (principal, key, result, now),
        )
        return bool(inserted)

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
