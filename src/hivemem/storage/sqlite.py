"""The embedded backend: one SQLite file through apsw, FTS5 and sqlite-vec.

apsw bundles a current SQLite with FTS5 and can load extensions, which this
Python's ``sqlite3`` cannot. Writers serialise on ``BEGIN IMMEDIATE`` with a
generous busy timeout, so several threads and processes can share one file
without "database is locked" reaching the user. Each thread gets its own
connection (WAL lets readers run beside the one writer); ``:memory:`` has a
single connection guarded by a lock, because each connection would otherwise
see its own empty database.
"""

from __future__ import annotations

import builtins
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import sqlite_vec
from numpy.typing import NDArray

from hivemem.errors import ConfigError, HiveError, StorageUnavailable
from hivemem.models import Group, Memory, Relation
from hivemem.storage.base import (
    MEMORY_COLUMNS,
    CommitSignal,
    EventWaiter,
    MemoryFilter,
    ScoredId,
    Store,
    StoreTx,
    T,
    memory_to_row,
)
from hivemem.storage.matrix_index import MatrixIndex
from hivemem.storage.sql import SQL_OPS, Dialect, SqlTx, compile_filter
from hivemem.validation import root_of

#: Append-only: never edit a released step, add a new one.
MIGRATIONS: builtins.list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) STRICT",
        "INSERT INTO meta VALUES ('seq', 0), ('deletions_pruned_below', 0)",
        """CREATE TABLE memories (
            rowid INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            root TEXT NOT NULL,
            namespace TEXT NOT NULL,
            key TEXT,
            kind TEXT NOT NULL,
            tier TEXT NOT NULL,
            content TEXT NOT NULL,
            data TEXT NOT NULL,
            tags TEXT NOT NULL,
            importance REAL NOT NULL,
            agent_id TEXT,
            session_id TEXT,
            parent_id TEXT,
            occurred_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL,
            access_count INTEGER NOT NULL,
            last_accessed_at REAL,
            version INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            sensitive INTEGER NOT NULL,
            seq INTEGER NOT NULL
        )""",
        "CREATE UNIQUE INDEX memories_key ON memories (namespace, key) WHERE key IS NOT NULL",
        "CREATE INDEX memories_namespace ON memories (namespace, created_at)",
        "CREATE INDEX memories_parent ON memories (parent_id) WHERE parent_id IS NOT NULL",
        "CREATE INDEX memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE INDEX memories_seq ON memories (seq)",
        "CREATE INDEX memories_hash ON memories (content_hash)",
        """CREATE TABLE memory_versions (
            memory_id TEXT NOT NULL, version INTEGER NOT NULL, snapshot TEXT NOT NULL,
            PRIMARY KEY (memory_id, version)) WITHOUT ROWID""",
        """CREATE VIRTUAL TABLE memories_fts USING fts5 (
            content, content='memories', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2')""",
        # The matrix index learns about deletions made by other connections from this log.
        "CREATE TABLE deletions (seq INTEGER NOT NULL, memory_rowid INTEGER NOT NULL)",
        "CREATE INDEX deletions_seq ON deletions (seq)",
        """CREATE TRIGGER memories_deleted AFTER DELETE ON memories BEGIN
            INSERT INTO deletions VALUES ((SELECT value FROM meta WHERE key = 'seq'), old.rowid);
            INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
        END""",
        """CREATE TRIGGER memories_inserted AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
        END""",
        """CREATE TRIGGER memories_content_updated AFTER UPDATE OF content ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
            INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content);
        END""",
        """CREATE TABLE relations (
            src_id TEXT NOT NULL, dst_id TEXT NOT NULL, type TEXT NOT NULL,
            strength REAL NOT NULL, created_at REAL NOT NULL,
            PRIMARY KEY (src_id, dst_id, type)) WITHOUT ROWID""",
        "CREATE INDEX relations_dst ON relations (dst_id)",
        "CREATE TABLE groups (name TEXT PRIMARY KEY, description TEXT, created_at REAL NOT NULL)",
        # A rowid table: members list in the order they were added, even within one clock tick.
        """CREATE TABLE group_members (
            group_name TEXT NOT NULL, memory_id TEXT NOT NULL, added_at REAL NOT NULL,
            UNIQUE (group_name, memory_id))""",
        "CREATE INDEX group_members_memory ON group_members (memory_id)",
        # One vector per distinct content: the embedding cache. Vectors live in a
        # sqlite-vec table created once the embedder's dimension is known.
        "CREATE TABLE embeddings (id INTEGER PRIMARY KEY AUTOINCREMENT, content_hash TEXT NOT NULL UNIQUE)",
    ],
    # New rows reach the full-text index in one statement per transaction
    # (_SqliteTx.index_new_rows): a trigger per row made batch ingest twice as slow.
    ["DROP TRIGGER memories_inserted"],
    # API keys of the HTTP server (hivemem.access): a hash, never the key.
    [
        "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, principal TEXT NOT NULL, grants TEXT NOT NULL, "
        "key_hash TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL)"
    ],
    # Idempotency keys of writes (Hive.run_once): the result is stored with the write.
    [
        "CREATE TABLE idempotency (principal TEXT NOT NULL, idempotency_key TEXT NOT NULL, result TEXT NOT NULL, "
        "created_at REAL NOT NULL, PRIMARY KEY (principal, idempotency_key))",
        "CREATE INDEX idempotency_created ON idempotency (created_at)",
    ],
    # Leases (hivemem.leases): the fencing counter per resource outlives every lease on it.
    [
        "CREATE TABLE fences (root TEXT NOT NULL, resource TEXT NOT NULL, token INTEGER NOT NULL, "
        "PRIMARY KEY (root, resource)) WITHOUT ROWID",
        "CREATE TABLE leases (root TEXT NOT NULL, resource TEXT NOT NULL, lease_id TEXT NOT NULL, "
        "mode TEXT NOT NULL, token INTEGER NOT NULL, principal TEXT NOT NULL, holder TEXT NOT NULL, "
        "acquired_at REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (root, resource, lease_id)) WITHOUT ROWID",
        "CREATE INDEX leases_expires ON leases (expires_at)",
        "CREATE TABLE lease_waiters (root TEXT NOT NULL, resource TEXT NOT NULL, waiter_id TEXT NOT NULL, "
        "since REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (root, resource, waiter_id)) WITHOUT ROWID",
    ],
    # Events (hivemem.events): numbered per root by event_seqs; inbox cursors per agent.
    [
        "CREATE TABLE event_seqs (root TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE events (root TEXT NOT NULL, seq INTEGER NOT NULL, namespace TEXT NOT NULL, type TEXT NOT NULL, "
        "subject TEXT NOT NULL, data TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (root, seq)) WITHOUT ROWID",
        "CREATE TABLE inbox_cursors (root TEXT NOT NULL, namespace TEXT NOT NULL, agent TEXT NOT NULL, "
        "seq INTEGER NOT NULL, PRIMARY KEY (root, namespace, agent)) WITHOUT ROWID",
    ],
    # Settings on namespace prefixes (a namespace's default conflict strategy) and the
    # record of every conflict a versioned update resolved (hivemem.conflicts).
    [
        "CREATE TABLE settings (root TEXT NOT NULL, prefix TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, "
        "updated_at REAL NOT NULL, PRIMARY KEY (root, prefix, name)) WITHOUT ROWID",
        """CREATE TABLE conflicts (
            root TEXT NOT NULL, id TEXT NOT NULL, memory_id TEXT NOT NULL, created_at REAL NOT NULL,
            principal TEXT NOT NULL, strategy TEXT NOT NULL, result_version INTEGER NOT NULL, sides TEXT NOT NULL,
            PRIMARY KEY (root, id)) WITHOUT ROWID""",
        "CREATE INDEX conflicts_memory ON conflicts (memory_id)",
        "CREATE INDEX conflicts_created ON conflicts (root, created_at)",
    ],
    # Working memory (hivemem.working): session buffers with their settings, and their messages.
    [
        "CREATE TABLE working_buffers (root TEXT NOT NULL, key TEXT NOT NULL, settings TEXT NOT NULL, "
        "tick INTEGER NOT NULL, next_seq INTEGER NOT NULL, evictions INTEGER NOT NULL, flushes INTEGER NOT NULL, "
        "summarized INTEGER NOT NULL, archived INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
        "PRIMARY KEY (root, key)) WITHOUT ROWID",
        "CREATE TABLE working_messages (root TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, "
        "role TEXT NOT NULL, content TEXT NOT NULL, tokens INTEGER NOT NULL, priority INTEGER NOT NULL, "
        "pinned INTEGER NOT NULL, metadata TEXT NOT NULL, created_at REAL NOT NULL, last_used INTEGER NOT NULL, "
        "uses INTEGER NOT NULL, PRIMARY KEY (root, key, seq)) WITHOUT ROWID",
    ],
    # Checkpointed workflows (hivemem.workflows): one row per run, one per finished step.
    [
        "CREATE TABLE workflows (root TEXT NOT NULL, id TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, "
        "inputs TEXT NOT NULL, status TEXT NOT NULL, principal TEXT NOT NULL, owner TEXT, deadline REAL, "
        "created_at REAL NOT NULL, updated_at REAL NOT NULL, result TEXT, error TEXT, "
        "PRIMARY KEY (root, id)) WITHOUT ROWID",
        "CREATE INDEX workflows_status ON workflows (status, created_at)",
        "CREATE TABLE workflow_steps (root TEXT NOT NULL, workflow_id TEXT NOT NULL, step INTEGER NOT NULL, "
        "name TEXT NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT, attempts INTEGER NOT NULL, "
        "started_at REAL NOT NULL, finished_at REAL NOT NULL, PRIMARY KEY (root, workflow_id, step)) WITHOUT ROWID",
    ],
]

_INSERT = (
    f"INSERT INTO memories ({', '.join(MEMORY_COLUMNS)}, root, seq) "
    f"VALUES ({', '.join(':' + c for c in MEMORY_COLUMNS)}, :root, :seq)"
)
# The namespace of a memory never changes: an update is always in place.
_UPDATE = (
    "UPDATE memories SET "
    + ", ".join(f"{c} = :{c}" for c in MEMORY_COLUMNS if c not in ("id", "namespace"))
    + ", seq = :seq WHERE id = :id"
)
_TRANSIENT = (apsw.BusyError, apsw.LockedError)
_FATAL = (apsw.IOError, apsw.CorruptError, apsw.FullError, apsw.CantOpenError, apsw.NotADBError)
#: Deletion log rows kept for other processes' matrix indexes; an index further behind reloads fully.
_DELETIONS_KEPT = 100_000


def sqlite_path(url: str) -> str:
    """The file path (or ``:memory:``) named by a target: a path or ``sqlite:///path``."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        # sqlite:///rel/path -> rel/path, sqlite:////abs/path -> /abs/path
        path = path[1:] if path.startswith("/") else path
        return path or ":memory:"
    return url


def _json_path_literal(path: str) -> str:
    # Paths are validated as dotted identifiers, so quoting them is safe; a
    # literal (not a bind value) lets one expression be reused in a clause.
    return "'$." + path.replace("'", "''") + "'"


class _SqliteDialect(Dialect):
    p = "?"
    success = "CASE json_type(m.data, '$.success') WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"
    stored_bytes = "length(CAST(m.content AS BLOB)) + length(m.data) + length(m.tags)"
    # The host's clock, which every process on the file shares (millisecond precision).
    now = "unixepoch('subsec')"

    def namespace_clause(self, prefix: str, params: builtins.list[Any]) -> str:
        # A range on the binary collation: index-friendly, case-sensitive and
        # segment-wise ('a' matches 'a' and 'a/...' but not 'ab'); '0' follows '/'.
        params += [prefix, prefix + "/", prefix + "0"]
        return "(m.namespace = ? OR (m.namespace >= ? AND m.namespace < ?))"

    def one_of(self, column: str, values: Sequence[Any], params: builtins.list[Any]) -> str:
        params.append(json.dumps(builtins.list(values)))
        return f"{column} IN (SELECT value FROM json_each(?))"

    def has_tags(self, tags: Sequence[str], params: builtins.list[Any]) -> str:
        params += tags
        return " AND ".join("EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = ?)" for _ in tags)

    def data_compare(self, path: str, op: str, operand: Any, params: builtins.list[Any]) -> str:
        # SQLite's json_extract turns true into 1 and compares numbers with text
        # by type order, so the JSON type is checked first.
        literal = _json_path_literal(path)
        json_type = f"json_type(m.data, {literal})"
        if operand is None:
            return f"coalesce({json_type} = 'null', 1)"
        if isinstance(operand, bool):
            return f"coalesce({json_type} = '{'true' if operand else 'false'}', 0)"
        params.append(operand)
        kinds = "('integer', 'real')" if isinstance(operand, int | float) else "('text')"
        return f"coalesce({json_type} IN {kinds} AND json_extract(m.data, {literal}) {SQL_OPS[op]} ?, 0)"


DIALECT = _SqliteDialect()


#: Bytes of the WAL file's header and of each frame's header (https://sqlite.org/fileformat.html#walformat).
_WAL_HEADER = 32
_FRAME_HEADER = 24
#: Frames the WAL is sized for past the autocheckpoint threshold (the commit that crosses it).
_WAL_SLACK_FRAMES = 64


class _SqliteTx(SqlTx):
    """Primitive operations on one apsw connection inside a transaction."""

    dialect = DIALECT

    def __init__(self, conn: apsw.Connection, seq: int | None = 0) -> None:
        super().__init__(conn)
        self._seq = seq
        # The first row id this transaction inserted that is not in the full-text index yet.
        self._unindexed_from: int | None = None

    @property
    def seq(self) -> int:
        """This write's change number, which memories it writes (and deletes) carry for the matrix index.

        Taken on first use: a write that changes no memory (a lease, an event, a
        workflow checkpoint) leaves the counter alone, so its commit writes one
        page less.
        """
        if self._seq is None:
            bumped = self.conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value")
            self._seq = int(_one(bumped)[0])
        return self._seq

    def _inserted(self, sql: str, params: Any = ()) -> bool:
        # Counting the change spares SQLite buffering a RETURNING row (a few microseconds a checkpoint).
        self.conn.execute(sql, params)
        return int(self.conn.changes()) > 0

    def index_new_rows(self) -> None:
        """Add the rows this transaction inserted to the full-text index.

        Called before anything that could delete or rewrite those rows (the
        delete and update triggers expect indexed rows) and before commit. Row
        ids only grow (AUTOINCREMENT) and this is the only writer, so every row
        from the first unindexed one on is new.
        """
        if self._unindexed_from is not None:
            self.conn.execute(
                "INSERT INTO memories_fts (rowid, content) SELECT rowid, content FROM memories WHERE rowid >= ?",
                (self._unindexed_from,),
            )
            self._unindexed_from = None

    def insert(self, memory: Memory) -> None:
        self.conn.execute(_INSERT, {**memory_to_row(memory), "root": root_of(memory.namespace), "seq": self.seq})
        if self._unindexed_from is None:
            self._unindexed_from = self.conn.last_insert_rowid()
        self.memory_event("memory.created", memory)

    def replace(self, memory: Memory, previous: Memory) -> None:
        self.index_new_rows()
        self.conn.execute(
            "INSERT OR REPLACE INTO memory_versions VALUES (?, ?, ?)",
            (previous.id, previous.version, json.dumps(previous.to_dict())),
        )
        self.conn.execute(_UPDATE, {**memory_to_row(memory), "seq": self.seq})
        self.memory_event("memory.updated", memory)

    def past_version(self, memory: Memory, version: int) -> Memory | None:
        row = _one(
            self.conn.execute(
                "SELECT snapshot FROM memory_versions WHERE memory_id = ? AND version = ?", (memory.id, version)
            )
        )
        return Memory.from_dict(json.loads(row[0])) if row else None

    def delete(self, ids: Sequence[str]) -> int:
        self.index_new_rows()
        _ = self.seq  # the deletion log's trigger reads this write's number from meta
        return super().delete(ids)

    def expired_ids(self, now: float, limit: int) -> builtins.list[str]:
        rows = self.conn.execute(
            "SELECT id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?", (now, limit)
        )
        return [r[0] for r in rows]

    def put_relation(self, relation: Relation) -> None:
        self.conn.execute(
            "INSERT INTO relations VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (src_id, dst_id, type) DO UPDATE SET strength = excluded.strength",
            (relation.src_id, relation.dst_id, relation.type, relation.strength, relation.created_at.timestamp()),
        )
        self.relation_event(relation)

    def put_group(self, group: Group) -> bool:
        self.conn.execute(
            "INSERT OR IGNORE INTO groups VALUES (?, ?, ?)",
            (group.name, group.description, group.created_at.timestamp()),
        )
        return int(self.conn.changes()) == 1

    def add_member(self, group: str, memory_id: str, now: float) -> None:
        self.conn.execute("INSERT OR IGNORE INTO group_members VALUES (?, ?, ?)", (group, memory_id, now))

    def member_ids(self, group: str) -> builtins.list[str]:
        rows = self.conn.execute("SELECT memory_id FROM group_members WHERE group_name = ? ORDER BY rowid", (group,))
        return [r[0] for r in rows]

    def known_hashes(self, hashes: Sequence[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT content_hash FROM embeddings WHERE content_hash IN (SELECT value FROM json_each(?))",
            (json.dumps(list(hashes)),),
        )
        return {r[0] for r in rows}

    def put_embeddings(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        added: builtins.list[str] = []
        for content_hash, vector in vectors.items():
            self.conn.execute("INSERT OR IGNORE INTO embeddings (content_hash) VALUES (?)", (content_hash,))
            if self.conn.changes():
                self.conn.execute(
                    "INSERT INTO vec_embeddings (rowid, embedding) VALUES (?, ?)",
                    (self.conn.last_insert_rowid(), np.asarray(vector, dtype=np.float32).tobytes()),
                )
                added.append(content_hash)
        if added:
            # Memories stored earlier without a vector (embedder off) now have one:
            # mark them changed so every matrix index picks them up. One statement per call.
            self.conn.execute(
                "UPDATE memories SET seq = ? WHERE content_hash IN (SELECT value FROM json_each(?))",
                (self.seq, json.dumps(added)),
            )

    def prune_embeddings(self, limit: int) -> int:
        rows = _all(
            self.conn.execute(
                "SELECT e.id FROM embeddings e WHERE NOT EXISTS "
                "(SELECT 1 FROM memories m WHERE m.content_hash = e.content_hash) LIMIT ?",
                (limit,),
            )
        )
        for (embedding_id,) in rows:
            self.conn.execute("DELETE FROM embeddings WHERE id = ?", (embedding_id,))
            self.conn.execute("DELETE FROM vec_embeddings WHERE rowid = ?", (embedding_id,))
        return len(rows)


def _one(cursor: Any) -> Any:
    """The first row of a cursor, typed loosely: SQLite values are dynamically typed."""
    return cursor.fetchone()


def _all(cursor: Any) -> builtins.list[Any]:
    """Every row of a cursor, typed loosely."""
    return builtins.list(cursor.fetchall())


def migrate(path: str, *, apply: bool = True) -> tuple[int, int]:
    """Bring a SQLite file to the latest schema (opening a store does this too), or only check it.

    Returns ``(version before, version after)``.

    Raises:
        ConfigError: The schema is behind and ``apply`` is False, or is newer than this HiveMem.
    """
    before = 0
    if path != ":memory:" and Path(path).exists():
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            if _one(conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'"))[0]:
                before = _one(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0]
        finally:
            conn.close()
    latest = len(MIGRATIONS)
    if before > latest:
        raise ConfigError(f"{path} has schema version {before}; this HiveMem knows only {latest}")
    if before < latest and not apply:
        raise ConfigError(
            f"{path} has schema version {before} of {latest}: run `hivemem migrate`",
            schema_version=before,
            latest=latest,
        )
    if before < latest:
        SqliteStore(path).close()
    return before, latest


class _Guard:
    """``with store._guard:`` holds the ``:memory:`` lock and turns driver errors into HiveErrors.

    A class rather than a ``@contextmanager`` generator: every store call goes
    through it, and this costs a third as much (a microsecond a call).
    """

    __slots__ = ("_store",)

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        lock = self._store._memory_lock
        if lock is not None:
            lock.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        lock = self._store._memory_lock
        if lock is not None:
            lock.release()
        if exc is None or isinstance(exc, HiveError):
            return
        if isinstance(exc, _FATAL):
            self._store._failed = f"{type(exc).__name__}: {exc}"
            raise StorageUnavailable(f"storage failed: {exc}", reason=type(exc).__name__) from exc
        if isinstance(exc, apsw.Error):
            raise StorageUnavailable(f"storage error: {exc}", reason=type(exc).__name__) from exc


class SqliteStore(Store):
    """A Store on one SQLite file (or ``:memory:``).

    Args:
        path: File path or ``:memory:``.
        synchronous: ``full`` (default), ``normal`` or ``extra``.
        busy_timeout_ms: How long a writer waits for the lock before retrying.
        vector_search: ``matrix`` (in-process index) or ``sqlite-vec`` (KNN in SQL).
    """

    def __init__(
        self, path: str, *, synchronous: str = "full", busy_timeout_ms: int = 30_000, vector_search: str = "matrix"
    ) -> None:
        self.path = path
        self.durable = path != ":memory:"
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.vector_search_mode = vector_search
        self._local = threading.local()
        self._connections: builtins.list[apsw.Connection] = []
        self._connections_lock = threading.Lock()
        self._commits = CommitSignal()
        # ':memory:' is one database per connection, so it has exactly one, used under this lock.
        self._memory_lock = threading.RLock() if not self.durable else None
        self._failed: str | None = None
        self._guard = _Guard(self)
        self._closed = False
        self._index: MatrixIndex | None = None
        self._dim: int | None = None
        with self._guard:
            self._migrate(self._connection())
            row = self._connection().execute("SELECT value FROM meta WHERE key = 'vector_dim'").fetchone()
            self._dim = int(row[0]) if row else None
            if self.durable:
                self._presize_wal(self._connection())

    # -- connections ---------------------------------------------------------------------------

    def _connection(self) -> apsw.Connection:
        if self._closed:
            raise StorageUnavailable("the store is closed")
        if self._failed is not None:
            raise StorageUnavailable(f"an earlier storage error stopped this store: {self._failed}")
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None and not self.durable and self._connections:
            conn = self._connections[0]
        if conn is None:
            conn = self._open_connection()
            self._local.conn = conn
        return conn

    def _open_connection(self) -> apsw.Connection:
        conn = apsw.Connection(self.path)
        # Writers queue for the lock instead of failing at once; write() still retries past it.
        conn.setbusytimeout(self.busy_timeout_ms)
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.enable_load_extension(False)
        if self.durable:
            # WAL: readers never block the writer and the writer never blocks readers.
            conn.execute("PRAGMA journal_mode = WAL")
        # FULL: fsync the WAL on every commit, so an acknowledged write survives power loss.
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        # A 64 MiB page cache per connection keeps the hot indexes in memory.
        conn.execute("PRAGMA cache_size = -65536")
        # Sorts and temporary b-trees for big recalls stay off the disk.
        conn.execute("PRAGMA temp_store = MEMORY")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _presize_wal(self, conn: apsw.Connection) -> None:
        """Give the WAL file the size it settles at in use, now rather than over its first ~1,000 commits.

        A commit that extends the WAL costs about twice one that overwrites it
        (measured on ext4: 250-315 µs against 115-125 µs), because fdatasync must
        then also journal the file's new size and blocks. SQLite starts the WAL
        over after each checkpoint and keeps the file, so a database long in use
        overwrites it; but closing the last connection deletes it, and every
        open would otherwise begin with a thousand slow commits. PostgreSQL
        zero-fills its WAL segments ahead of use for the same reason.

        Zeros past the last frame are no frame to SQLite (a frame must carry the
        header's salts and a valid checksum), and while this connection holds
        the write lock no other writes the file, recovers it or truncates it.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            wal = Path(conn.filename_wal)
            page = _one(conn.execute("PRAGMA page_size"))[0]
            frames = _one(conn.execute("PRAGMA wal_autocheckpoint"))[0] + _WAL_SLACK_FRAMES
            wanted = _WAL_HEADER + frames * (_FRAME_HEADER + page)
            size = wal.stat().st_size
            if size < wanted:
                with wal.open("r+b") as file:
                    file.seek(size)
                    file.write(bytes(wanted - size))
                    file.flush()
                    os.fsync(file.fileno())
        finally:
            conn.execute("ROLLBACK")

    def _migrate(self, conn: apsw.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
            current = _one(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0]
            if current > len(MIGRATIONS):
                raise ConfigError(
                    f"{self.path} has schema version {current}; this HiveMem knows only {len(MIGRATIONS)}",
                    schema_version=current,
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- transactions ----------------------------------------------------------------------------

    def write(self, fn: Callable[[StoreTx], T], *, sync: bool = True) -> T:
        # WAL frames are appended in order, so the next synced commit's fsync makes this one durable too.
        lazy = not sync and self.synchronous != "normal"
        return self._retrying(lambda conn: self._transaction(conn, fn, lazy))

    def put_step(self, root: str, namespace: str, row: Mapping[str, Any], fence: tuple[str, int] | None) -> bool:
        # One statement, outside BEGIN: SQLite makes it a transaction of its own and commits it as durably
        # as any (synchronous applies). Sparing the BEGIN and COMMIT statements is ~3 us of a checkpoint.
        return self._retrying(lambda conn: _SqliteTx(conn, None).put_step(root, namespace, row, fence))

    def _retrying(self, attempt: Callable[[apsw.Connection], T]) -> T:
        """``attempt(connection)``, tried again after a transient failure (a lock held) until the busy timeout."""
        delay = 0.005
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                with self._guard:
                    return attempt(self._connection())
            except StorageUnavailable as exc:
                transient = isinstance(exc.__cause__, _TRANSIENT)
                if not transient or time.monotonic() > deadline:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)

    def _transaction(self, conn: apsw.Connection, fn: Callable[[StoreTx], T], lazy: bool) -> T:
        if lazy:
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            tx = _SqliteTx(conn, None)
            result = fn(tx)
            tx.index_new_rows()
            evented = tx.flush_events()
            conn.execute("COMMIT")
        except BaseException:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            raise
        finally:
            if lazy:
                conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        if evented:
            self._commits.notify()
        return result

    def event_waiter(self) -> EventWaiter:
        # Other processes' commits are seen by polling the table this often.
        return self._commits.waiter(poll=0.02)

    def read(self, fn: Callable[[StoreTx], T], *, primary: bool = False) -> T:
        with self._guard:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return fn(_SqliteTx(conn))
            finally:
                conn.execute("COMMIT")

    # -- search ----------------------------------------------------------------------------------

    def keyword_search(self, terms: Sequence[str], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        params: builtins.list[Any] = []
        where = compile_filter(flt, params, DIALECT)
        with self._guard:
            conn = self._connection()
            # First the best `limit` matches by BM25 from the full-text index alone,
            # then the filter: twice as fast as joining every match (common words
            # match thousands). If the filter dropped any, a full join finds the rest.
            rows = _all(
                conn.execute(
                    "SELECT m.id, -f.rank FROM (SELECT rowid, rank FROM memories_fts "
                    "WHERE memories_fts MATCH ? ORDER BY rank LIMIT ?) f "
                    f"JOIN memories m ON m.rowid = f.rowid WHERE {where} ORDER BY f.rank",
                    [match, limit, *params],
                )
            )
            if len(rows) < limit:
                rows = _all(
                    conn.execute(
                        "SELECT m.id, -bm25(memories_fts) AS score FROM memories_fts "
                        "JOIN memories m ON m.rowid = memories_fts.rowid "
                        f"WHERE memories_fts MATCH ? AND {where} ORDER BY score DESC LIMIT ?",
                        [match, *params, limit],
                    )
                )
            return [ScoredId(r[0], float(r[1])) for r in rows]

    def vector_search(self, vector: NDArray[np.float32], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        if self._dim is None:
            return []
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        with self._guard:
            if self.vector_search_mode == "sqlite-vec":
                return self._sqlite_vec_search(vector, flt, limit)
            index = self._refreshed_index()
            with index.lock:
                return index.search(vector, flt, limit)

    def _sqlite_vec_search(self, vector: NDArray[np.float32], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        params: builtins.list[Any] = [vector.tobytes(), limit]
        where = compile_filter(flt, params, DIALECT)
        rows = self._connection().execute(
            "WITH knn AS (SELECT rowid, distance FROM vec_embeddings WHERE embedding MATCH ? AND k = ?) "
            "SELECT m.id, 1.0 - knn.distance FROM knn JOIN embeddings e ON e.id = knn.rowid "
            f"JOIN memories m ON m.content_hash = e.content_hash WHERE {where} ORDER BY knn.distance, m.id",
            params,
        )
        return [ScoredId(r[0], float(r[1])) for r in rows]

    def _refreshed_index(self) -> MatrixIndex:
        """The matrix index, caught up with every commit made so far by anyone."""
        assert self._dim is not None
        if self._index is None:
            self._index = MatrixIndex(self._dim)
        index = self._index
        conn = self._connection()
        with index.lock:
            seq = _one(conn.execute("SELECT value FROM meta WHERE key = 'seq'"))[0]
            if seq == index.seq:
                return index
            conn.execute("BEGIN")
            try:
                seq, pruned = _one(
                    conn.execute(
                        "SELECT (SELECT value FROM meta WHERE key = 'seq'), "
                        "(SELECT value FROM meta WHERE key = 'deletions_pruned_below')"
                    )
                )
                if index.seq < pruned:
                    index.clear()
                deleted = conn.execute("SELECT memory_rowid FROM deletions WHERE seq > ?", (index.seq,))
                index.remove(r[0] for r in deleted)
                for row in conn.execute(
                    "SELECT m.rowid, m.id, m.namespace, m.kind, m.tier, v.embedding FROM memories m "
                    "JOIN embeddings e ON e.content_hash = m.content_hash "
                    "JOIN vec_embeddings v ON v.rowid = e.id WHERE m.seq > ?",
                    (index.seq,),
                ):
                    index.upsert(*row)
                index.seq = seq
            finally:
                conn.execute("COMMIT")
        return index

    def bind_embedder(self, name: str, dim: int | None) -> None:
        with self._guard:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('embedder', 'vector_dim')"))
                if stored.get("embedder") not in (None, name):
                    raise ConfigError(
                        f"{self.path} holds vectors made by embedder {stored['embedder']!r}, not {name!r}; "
                        "open it with that embedder, or with embedder='none' for keyword-only recall",
                        stored=stored["embedder"],
                        requested=name,
                    )
                if dim is not None and stored.get("vector_dim") not in (None, dim):
                    raise ConfigError(f"{self.path} holds {stored['vector_dim']}-dimension vectors, not {dim}")
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('embedder', ?)", (name,))
                if dim is not None and "vector_dim" not in stored:
                    conn.execute("INSERT INTO meta VALUES ('vector_dim', ?)", (dim,))
                    conn.execute(
                        "CREATE VIRTUAL TABLE vec_embeddings USING "
                        f"vec0(embedding float[{int(dim)}] distance_metric=cosine)"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if dim is not None:
                self._dim = dim

    def prune_deletion_log(self) -> int:
        """Trim the deletion log to its newest rows; returns how many were dropped."""

        def prune(tx: StoreTx) -> int:
            assert isinstance(tx, _SqliteTx)
            row = _one(
                tx.conn.execute("SELECT seq FROM deletions ORDER BY seq DESC LIMIT 1 OFFSET ?", (_DELETIONS_KEPT,))
            )
            if row is None:
                return 0
            tx.conn.execute("DELETE FROM deletions WHERE seq <= ?", (row[0],))
            dropped = int(tx.conn.changes())
            tx.conn.execute("UPDATE meta SET value = ? WHERE key = 'deletions_pruned_below'", (row[0] + 1,))
            return dropped

        return self.write(prune)

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._closed = True
