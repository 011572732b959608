"""The SQL of checkpointed workflows (:mod:`hivemem.workflows`), the same on SQLite and PostgreSQL.

A mixin of :class:`hivemem.storage.sql.SqlTx`, kept apart so that module stays
about memories. Two tables, both keyed by namespace root first: ``workflows``
(one row per run: inputs, status, executor, result or error) and
``workflow_steps`` (one row per finished step: its name, result or error and
attempts). A step row is only ever inserted, never changed: ``put_step`` keeps
the first row of a step number, which is what makes recording a step twice
(a retried request, a resumed executor) harmless.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hivemem.storage.base import STEP_COLUMNS, WORKFLOW_COLUMNS

if TYPE_CHECKING:
    from hivemem.storage.sql import Dialect

_WORKFLOW = ", ".join(f"m.{c}" for c in WORKFLOW_COLUMNS)
_STEP = ", ".join(STEP_COLUMNS)


class WorkflowSql:
    """Workflow primitives of :class:`hivemem.storage.base.StoreTx` in SQL both backends share."""

    dialect: Dialect
    claim_lock: str

    def _rows(self, sql: str, params: Any = ()) -> builtins.list[Any]:
        raise NotImplementedError

    def _execute(self, sql: str, params: Any = ()) -> None:
        raise NotImplementedError

    def put_workflow(self, row: Mapping[str, Any]) -> bool:
        p = self.dialect.p
        inserted = self._rows(
            f"INSERT INTO workflows ({', '.join(WORKFLOW_COLUMNS)}) VALUES ({', '.join([p] * len(WORKFLOW_COLUMNS))}) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            [row[c] for c in WORKFLOW_COLUMNS],
        )
        return bool(inserted)

    def workflow(self, root: str, workflow_id: str) -> tuple[Any, ...] | None:
        p = self.dialect.p
        rows = self._rows(
            f"SELECT {_WORKFLOW} FROM workflows m WHERE m.root = {p} AND m.id = {p}{self.claim_lock}",
            (root, workflow_id),
        )
        return tuple(rows[0]) if rows else None

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
        p = self.dialect.p
        self._execute(
            f"UPDATE workflows SET status = {p}, owner = {p}, result = {p}, error = {p}, updated_at = {p} "
            f"WHERE root = {p} AND id = {p}",
            (status, owner, result, error, now, root, workflow_id),
        )

    def workflow_steps(self, root: str, workflow_id: str) -> builtins.list[tuple[Any, ...]]:
        p = self.dialect.p
        rows = self._rows(
            f"SELECT {_STEP} FROM workflow_steps WHERE root = {p} AND workflow_id = {p} ORDER BY step",
            (root, workflow_id),
        )
        return [tuple(r) for r in rows]

    def put_step(self, root: str, row: Mapping[str, Any]) -> bool:
        p = self.dialect.p
        inserted = self._rows(
            f"INSERT INTO workflow_steps (root, {_STEP}) VALUES ({', '.join([p] * (len(STEP_COLUMNS) + 1))}) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            [root, *(row[c] for c in STEP_COLUMNS)],
        )
        return bool(inserted)

    def workflow_rows(
        self, statuses: Sequence[str] | None, prefix: str | None, within: Sequence[str] | None, limit: int
    ) -> builtins.list[tuple[Any, ...]]:
        from hivemem.storage.sql import within_clause

        d = self.dialect
        params: builtins.list[Any] = []
        clauses = ["1 = 1"]
        if statuses is not None:
            clauses.append(d.one_of("m.status", statuses, params))
        if prefix is not None:
            clauses.append(d.namespace_clause(prefix, params))
        if within is not None:
            clauses.append(within_clause(within, params, d))
        params.append(limit)
        rows = self._rows(
            f"SELECT {_WORKFLOW} FROM workflows m WHERE {' AND '.join(clauses)} "
            f"ORDER BY m.created_at, m.root, m.id LIMIT {d.p}",
            params,
        )
        return [tuple(r) for r in rows]
