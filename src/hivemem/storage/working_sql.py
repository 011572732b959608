"""Working-memory SQL both relational backends share: buffers and their messages.

A buffer row holds the buffer's settings (JSON), its tick (a counter moved
by every append and read, which orders ``lru`` without trusting clocks), the
next message number and its counters. A write transaction reads the row with
the dialect's claim lock (``FOR UPDATE`` on PostgreSQL; SQLite's write
transaction already excludes other writers), so appends to one buffer take
turns and each sees the last one's messages. Both tables are keyed by
namespace root first, like every other table.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hivemem.validation import root_of

#: The counters of a buffer row, in column order after ``settings``.
BUFFER_FIELDS = ("tick", "next_seq", "evictions", "flushes", "summarized", "archived")
#: A message row, in column order after ``root, key``.
MESSAGE_FIELDS = (
    "seq",
    "role",
    "content",
    "tokens",
    "priority",
    "pinned",
    "metadata",
    "created_at",
    "last_used",
    "uses",
)


class WorkingSql:
    """The working-memory primitives of :class:`hivemem.storage.base.StoreTx`, in shared SQL.

    Mixed into :class:`hivemem.storage.sql.SqlTx`, whose ``dialect``, ``claim_lock``,
    ``_rows`` and ``_execute`` it uses.
    """

    dialect: Any
    claim_lock: str

    if TYPE_CHECKING:

        def _rows(self, sql: str, params: Any = ()) -> builtins.list[Any]: ...

        def _execute(self, sql: str, params: Any = ()) -> None: ...

    def working_buffer(self, key: str, *, create_at: float | None = None) -> dict[str, Any] | None:
        """The buffer's row as a dict (``settings`` parsed), held until commit in a write transaction.

        With ``create_at``, an absent buffer is created empty first (so there is a row to hold).
        """
        p = self.dialect.p
        root = root_of(key)
        if create_at is not None:
            self._execute(
                f"INSERT INTO working_buffers VALUES ({p}, {p}, '{{}}', 0, 1, 0, 0, 0, 0, {p}, {p}) "
                "ON CONFLICT DO NOTHING",
                (root, key, create_at, create_at),
            )
        rows = self._rows(
            f"SELECT settings, {', '.join(BUFFER_FIELDS)} FROM working_buffers "
            f"WHERE root = {p} AND key = {p}{self.claim_lock}",
            (root, key),
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "settings": json.loads(row[0]),
            **{name: int(v) for name, v in zip(BUFFER_FIELDS, row[1:], strict=True)},
        }

    def put_working_buffer(self, key: str, row: Mapping[str, Any], now: float) -> None:
        """Store the buffer's settings and counters (the row exists: see :meth:`working_buffer`)."""
        p = self.dialect.p
        sets = ", ".join(f"{name} = {p}" for name in BUFFER_FIELDS)
        self._execute(
            f"UPDATE working_buffers SET settings = {p}, {sets}, updated_at = {p} WHERE root = {p} AND key = {p}",
            (
                json.dumps(row["settings"], separators=(",", ":")),
                *(int(row[name]) for name in BUFFER_FIELDS),
                now,
                root_of(key),
                key,
            ),
        )

    def working_entries(self, key: str) -> builtins.list[dict[str, Any]]:
        """Every message of the buffer, oldest first, as dicts of :data:`MESSAGE_FIELDS`."""
        p = self.dialect.p
        rows = self._rows(
            f"SELECT {', '.join(MESSAGE_FIELDS)} FROM working_messages WHERE root = {p} AND key = {p} ORDER BY seq",
            (root_of(key), key),
        )
        out = []
        for row in rows:
            entry = dict(zip(MESSAGE_FIELDS, row, strict=True))
            entry["metadata"] = json.loads(entry["metadata"])
            entry["pinned"] = bool(entry["pinned"])
            out.append(entry)
        return out

    def add_working_message(self, key: str, message: Mapping[str, Any]) -> None:
        """Store one message (a dict of :data:`MESSAGE_FIELDS`)."""
        p = self.dialect.p
        values = [message[name] for name in MESSAGE_FIELDS]
        values[MESSAGE_FIELDS.index("metadata")] = json.dumps(dict(message["metadata"]), separators=(",", ":"))
        values[MESSAGE_FIELDS.index("pinned")] = int(bool(message["pinned"]))
        marks = ", ".join([p] * (len(MESSAGE_FIELDS) + 2))
        self._execute(f"INSERT INTO working_messages VALUES ({marks})", (root_of(key), key, *values))

    def drop_working_messages(self, key: str, seqs: Sequence[int]) -> None:
        """Delete the buffer's messages with these seqs."""
        if not seqs:
            return
        params: builtins.list[Any] = [root_of(key), key]
        where = self.dialect.one_of("seq", builtins.list(seqs), params)
        p = self.dialect.p
        self._execute(f"DELETE FROM working_messages WHERE root = {p} AND key = {p} AND {where}", params)

    def clear_working_messages(self, key: str) -> None:
        """Delete every message of the buffer."""
        p = self.dialect.p
        self._execute(f"DELETE FROM working_messages WHERE root = {p} AND key = {p}", (root_of(key), key))

    def touch_working_messages(self, key: str, seqs: Sequence[int], tick: int) -> None:
        """Mark messages read at ``tick``: ``last_used`` moves, ``uses`` grows by one."""
        if not seqs:
            return
        p = self.dialect.p
        params: builtins.list[Any] = [tick, root_of(key), key]
        where = self.dialect.one_of("seq", builtins.list(seqs), params)
        self._execute(
            f"UPDATE working_messages SET last_used = {p}, uses = uses + 1 WHERE root = {p} AND key = {p} AND {where}",
            params,
        )
