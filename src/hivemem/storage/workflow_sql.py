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
import functools
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hivemem.storage.base import STEP_COLUMNS, WORKFLOW_COLUMNS

if TYPE_CHECKING:
    from hivemem.storage.sql import Dialect

_WORKFLOW = ", ".join(f"m.{c}" for c in WORKFLOW_COLUMNS)
_STEP = ", ".join(STEP_COLUMNS)
_step_values = operator.itemgetter(*STEP_COLUMNS)


@functools.cache
def _put_step_sql(p: str, claim_lock: str, fence_lock: str | None) -> str:
    """:meth:`WorkflowSql.put_step`'s statement: without the fence condition when ``fence_lock`` is None."""
    fenced = ""
    if fence_lock is not None:
        token = f"SELECT f.token FROM fences f WHERE f.root = {p} AND f.resource = {p}{fence_lock}"
        fenced = f" AND coalesce(({token}), 0) <= {p}"
    return (
        f"INSERT INTO workflow_steps (root, {_STEP}) SELECT {', '.join([p] * (len(STEP_COLUMNS) + 1))} "
        f"FROM workflows m WHERE m.root = {p} AND m.id = {p} AND m.namespace = {p} "
        f"AND m.status IN ('pending', 'running'){fenced}{claim_lock} ON CONFLICT DO NOTHING"
    )


class WorkflowSql:
    """Workflow primitives of :class:`hivemem.storage.base.StoreTx` in SQL both backends share."""

    dialect: Dialect
    claim_lock: str
    share_lock: str

    def _rows(self, sql: str, params: Any = ()) -> builtins.list[Any]:
        raise NotImplementedError

    def _execute(self, sql: str, params: Any = ()) -> None:
        raise NotImplementedError

    def _inserted(self, sql: str, params: Any = ()) -> bool:
        raise NotImplementedError

    def put_workflow(self, row: Mapping[str, Any]) -> bool:
        p = self.dialect.p
        return self._inserted(
            f"INSERT INTO workflows ({', '.join(WORKFLOW_COLUMNS)}) VALUES ({', '.join([p] * len(WORKFLOW_COLUMNS))}) "
            "ON CONFLICT DO NOTHING",
            [row[c] for c in WORKFLOW_COLUMNS],
        )

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

    def put_step(self, root: str, namespace: str, row: Mapping[str, Any], fence: tuple[str, int] | None) -> bool:
        # One statement, so a checkpoint's transaction is BEGIN, this and COMMIT. The run's row is
        # locked as workflow() locks it and the fence's counter is read as check_fence reads it
        # (a run's lease resource lies under its namespace, so in its root).
        params = [root, *_step_values(row), root, row["workflow_id"], namespace]
        if fence is not None:
            params += [root, *fence]
        sql = _put_step_sql(self.dialect.p, self.claim_lock, self.share_lock if fence is not None else None)
        return self._inserted(sql, params)

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
