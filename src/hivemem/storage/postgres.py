"""The shared backend: PostgreSQL through psycopg 3, tsvector + GIN and pgvector HNSW.

Many processes and many Hives on one database behave as one because every
rule lives in the database: a write transaction reads the rows it will
change with ``FOR UPDATE`` (so concurrent versioned updates queue instead of
losing one), a unique index owns each ``(namespace, key)`` (a racing second
insert fails and its transaction is retried, finding the first), and sweeps
take expired rows with ``FOR UPDATE SKIP LOCKED`` (each row is deleted once).

Every table is keyed by namespace root first so it can be hash partitioned
or distributed by root. Times are Unix seconds (``double precision``) and
text columns that HiveMem compares use the ``C`` collation, so ranges and
orderings are bytewise, exactly as on SQLite.

Failover and read scaling come from PostgreSQL and libpq: the URL may list
several hosts (``host=a,b`` with ``target_session_attrs=read-write``), and an
optional read URL sends recall, get and list to a replica. A write that fails
on a lost connection before its COMMIT was sent is retried on a new one; a
connection lost during COMMIT leaves the outcome unknown, which is reported,
never guessed.
"""

from __future__ import annotations

import builtins
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import numpy as np
import psycopg
import psycopg_pool
from numpy.typing import NDArray
from psycopg import errors as pg_errors
from psycopg import pq

from hivemem.errors import ConfigError, HiveError, StorageUnavailable
from hivemem.models import Group, Memory, Relation
from hivemem.storage.base import (
    MEMORY_COLUMNS,
    EventWaiter,
    MemoryFilter,
    ScoredId,
    Store,
    StoreTx,
    T,
    memory_to_row,
)
from hivemem.storage.sql import SQL_OPS, Dialect, SqlTx, compile_filter
from hivemem.validation import root_of

_C = 'COLLATE "C"'
#: The NOTIFY channel of commits that stored events.
EVENTS_CHANNEL = "hivemem_events"

#: Append-only: never edit a released step, add a new one. Vector columns are not
#: here: their dimension is the embedder's, so :meth:`PostgresStore.bind_embedder`
#: adds them (and a database used keyword-only never needs pgvector).
MIGRATIONS: builtins.list[builtins.list[str]] = [
    [
        "CREATE TABLE hivemem_meta (key text PRIMARY KEY, value text NOT NULL)",
        # English stemming that keeps stop words, like SQLite's porter tokenizer: recall drops
        # them from queries itself, except a query of nothing but stop words ("to be").
        "CREATE TEXT SEARCH DICTIONARY hivemem_stem (TEMPLATE = snowball, Language = english)",
        "CREATE TEXT SEARCH CONFIGURATION hivemem_english (COPY = english)",
        "ALTER TEXT SEARCH CONFIGURATION hivemem_english ALTER MAPPING "
        "FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part WITH hivemem_stem",
        f"""CREATE TABLE memories (
            root text {_C} NOT NULL,
            id text {_C} NOT NULL,
            namespace text {_C} NOT NULL,
            key text {_C},
            kind text {_C} NOT NULL,
            tier text {_C} NOT NULL,
            content text NOT NULL,
            data json NOT NULL,
            tags text[] {_C} NOT NULL,
            importance double precision NOT NULL,
            agent_id text {_C},
            session_id text {_C},
            parent_id text {_C},
            occurred_at double precision,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            expires_at double precision,
            access_count bigint NOT NULL,
            last_accessed_at double precision,
            version integer NOT NULL,
            content_hash text {_C} NOT NULL,
            sensitive boolean NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('hivemem_english'::regconfig, content)) STORED,
            PRIMARY KEY (root, id)
        )""",
        "CREATE INDEX memories_id ON memories (id)",
        "CREATE UNIQUE INDEX memories_key ON memories (root, namespace, key) WHERE key IS NOT NULL",
        "CREATE INDEX memories_namespace ON memories (root, namespace, created_at)",
        "CREATE INDEX memories_parent ON memories (parent_id) WHERE parent_id IS NOT NULL",
        "CREATE INDEX memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE INDEX memories_hash ON memories (content_hash)",
        "CREATE INDEX memories_tsv ON memories USING gin (tsv)",
        f"""CREATE TABLE memory_versions (
            root text {_C} NOT NULL, memory_id text {_C} NOT NULL, version integer NOT NULL,
            snapshot text NOT NULL, PRIMARY KEY (root, memory_id, version))""",
        "CREATE INDEX memory_versions_memory ON memory_versions (memory_id)",
        f"""CREATE TABLE relations (
            root text {_C} NOT NULL, src_id text {_C} NOT NULL, dst_id text {_C} NOT NULL, type text {_C} NOT NULL,
            strength double precision NOT NULL, created_at double precision NOT NULL,
            PRIMARY KEY (root, src_id, dst_id, type))""",
        "CREATE INDEX relations_src ON relations (src_id)",
        "CREATE INDEX relations_dst ON relations (dst_id)",
        f"""CREATE TABLE groups (
            name text {_C} PRIMARY KEY, description text, created_at double precision NOT NULL)""",
        f"""CREATE TABLE group_members (
            group_name text {_C} NOT NULL, memory_id text {_C} NOT NULL, added_at double precision NOT NULL,
            position bigint GENERATED ALWAYS AS IDENTITY,
            PRIMARY KEY (group_name, memory_id))""",
        "CREATE INDEX group_members_memory ON group_members (memory_id)",
    ],
    # API keys of the HTTP server (hivemem.access): a hash, never the key. Not keyed
    # by namespace root: a key spans namespaces (a small table to replicate, not shard).
    [
        f"""CREATE TABLE api_keys (key_id text {_C} PRIMARY KEY, principal text NOT NULL, grants text NOT NULL,
            key_hash text NOT NULL, created_at double precision NOT NULL, revoked_at double precision)""",
    ],
    # Idempotency keys of writes (Hive.run_once): the result is stored with the write.
    [
        f"""CREATE TABLE idempotency (principal text {_C} NOT NULL, idempotency_key text {_C} NOT NULL,
            result text NOT NULL, created_at double precision NOT NULL, PRIMARY KEY (principal, idempotency_key))""",
        "CREATE INDEX idempotency_created ON idempotency (created_at)",
    ],
    # Leases (hivemem.leases): the fencing counter per resource outlives every lease on it.
    [
        f"""CREATE TABLE fences (root text {_C} NOT NULL, resource text {_C} NOT NULL, token bigint NOT NULL,
            PRIMARY KEY (root, resource))""",
        f"""CREATE TABLE leases (root text {_C} NOT NULL, resource text {_C} NOT NULL, lease_id text {_C} NOT NULL,
            mode text NOT NULL, token bigint NOT NULL, principal text NOT NULL, holder text NOT NULL,
            acquired_at double precision NOT NULL, expires_at double precision NOT NULL,
            PRIMARY KEY (root, resource, lease_id))""",
        "CREATE INDEX leases_expires ON leases (expires_at)",
        f"""CREATE TABLE lease_waiters (root text {_C} NOT NULL, resource text {_C} NOT NULL,
            waiter_id text {_C} NOT NULL, since double precision NOT NULL, expires_at double precision NOT NULL,
            PRIMARY KEY (root, resource, waiter_id))""",
    ],
    # Events (hivemem.events): numbered per root by event_seqs; inbox cursors per agent.
    [
        f"CREATE TABLE event_seqs (root text {_C} PRIMARY KEY, seq bigint NOT NULL)",
        f"""CREATE TABLE events (root text {_C} NOT NULL, seq bigint NOT NULL, namespace text {_C} NOT NULL,
            type text NOT NULL, subject text NOT NULL, data jsonb NOT NULL, at double precision NOT NULL,
            PRIMARY KEY (root, seq))""",
        f"""CREATE TABLE inbox_cursors (root text {_C} NOT NULL, namespace text {_C} NOT NULL,
            agent text {_C} NOT NULL, seq bigint NOT NULL, PRIMARY KEY (root, namespace, agent))""",
    ],
    # Settings on namespace prefixes (a namespace's default conflict strategy) and the
    # record of every conflict a versioned update resolved (hivemem.conflicts).
    [
        f"""CREATE TABLE settings (root text {_C} NOT NULL, prefix text {_C} NOT NULL, name text {_C} NOT NULL,
            value text NOT NULL, updated_at double precision NOT NULL, PRIMARY KEY (root, prefix, name))""",
        f"""CREATE TABLE conflicts (
            root text {_C} NOT NULL, id text {_C} NOT NULL, memory_id text {_C} NOT NULL,
            created_at double precision NOT NULL, principal text NOT NULL, strategy text NOT NULL,
            result_version integer NOT NULL, sides text NOT NULL, PRIMARY KEY (root, id))""",
        "CREATE INDEX conflicts_memory ON conflicts (memory_id)",
        "CREATE INDEX conflicts_created ON conflicts (root, created_at)",
    ],
    # Working memory (hivemem.working): session buffers with their settings, and their messages.
    [
        f"""CREATE TABLE working_buffers (root text {_C} NOT NULL, key text {_C} NOT NULL, settings text NOT NULL,
            tick bigint NOT NULL, next_seq bigint NOT NULL, evictions bigint NOT NULL, flushes bigint NOT NULL,
            summarized bigint NOT NULL, archived bigint NOT NULL, created_at double precision NOT NULL,
            updated_at double precision NOT NULL, PRIMARY KEY (root, key))""",
        f"""CREATE TABLE working_messages (root text {_C} NOT NULL, key text {_C} NOT NULL, seq bigint NOT NULL,
            role text NOT NULL, content text NOT NULL, tokens integer NOT NULL, priority bigint NOT NULL,
            pinned integer NOT NULL, metadata text NOT NULL, created_at double precision NOT NULL,
            last_used bigint NOT NULL, uses bigint NOT NULL, PRIMARY KEY (root, key, seq))""",
    ],
    # Checkpointed workflows (hivemem.workflows): one row per run, one per finished step.
    [
        f"""CREATE TABLE workflows (root text {_C} NOT NULL, id text {_C} NOT NULL, namespace text {_C} NOT NULL,
            name text NOT NULL, inputs text NOT NULL, status text NOT NULL, principal text NOT NULL, owner text,
            deadline double precision, created_at double precision NOT NULL, updated_at double precision NOT NULL,
            result text, error text, PRIMARY KEY (root, id))""",
        "CREATE INDEX workflows_status ON workflows (status, created_at)",
        f"""CREATE TABLE workflow_steps (root text {_C} NOT NULL, workflow_id text {_C} NOT NULL,
            step integer NOT NULL, name text NOT NULL, status text NOT NULL, result text, error text,
            attempts integer NOT NULL, started_at double precision NOT NULL, finished_at double precision NOT NULL,
            PRIMARY KEY (root, workflow_id, step))""",
    ],
]

_MIGRATION_LOCK = 0x48495645  # pg_advisory_xact_lock key: one migrator at a time
_INSERT_COLUMNS = [*MEMORY_COLUMNS, "root"]
_INSERT = (
    f"INSERT INTO memories ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in _INSERT_COLUMNS)})"
)
_UPDATE = (
    "UPDATE memories SET "
    + ", ".join(f"{c} = %({c})s" for c in MEMORY_COLUMNS if c not in ("id", "namespace"))
    + " WHERE root = %(root)s AND id = %(id)s"
)
#: A memory's vector: the stored one of its content, shared by every memory with that content.
_EMBEDDING = "(SELECT e.embedding FROM embeddings e WHERE e.content_hash = %(content_hash)s)"
#: Insert and update with the vector in the same statement: no second write of the row.
_INSERT_WITH_VECTOR = _INSERT.replace(") VALUES (", ", embedding) VALUES (")[:-1] + f", {_EMBEDDING})"
_UPDATE_WITH_VECTOR = _UPDATE.replace(" WHERE root", f", embedding = {_EMBEDDING} WHERE root")
#: Retried with a fresh transaction: another writer won a race; trying again sees its result.
_RETRY = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.UniqueViolation)
#: pgvector's HNSW scan returns at most ef_search rows; this is its maximum.
_MAX_EF_SEARCH = 1000
#: psycopg prepares a statement on the server at its 6th run on a connection (psycopg's
#: default), which then parses and plans it no more: a remember's p50 in bench/writers.py
#: went from 0.84-0.94 ms to 0.49-0.76 ms. Not at the 1st run (0): a ROLLBACK psycopg has
#: not counted yet (with 0, every read's) makes it forget its prepared statements and send
#: DEALLOCATE ALL after the next statement, which 0 has just prepared, so the connection's
#: next run of that one fails ("prepared statement _pg3_7 does not exist"). Not at the 2nd
#: (1): a mixed load (remember, recall, get, list, update) ran no faster (710-860 ops/s
#: against 790-950) and HiveMem's ~24 busy statements get prepared either way, while 5
#: keeps statements run once or twice (filters of rare shapes) out of psycopg's cache of 100.
PREPARE_THRESHOLD = 5


class _PgDialect(Dialect):
    p = "%s"
    success = "CASE WHEN json_typeof(m.data -> 'success') = 'boolean' THEN (m.data ->> 'success')::boolean END"
    stored_bytes = "octet_length(m.content) + octet_length(m.data::text) + octet_length(array_to_json(m.tags)::text)"
    now = "extract(epoch from clock_timestamp())::float8"

    def namespace_clause(self, prefix: str, params: builtins.list[Any]) -> str:
        # Bytewise (C collation) range, segment-wise ('0' follows '/'); the root first, for pruning.
        params += [root_of(prefix), prefix, prefix + "/", prefix + "0"]
        return "(m.root = %s AND (m.namespace = %s OR (m.namespace >= %s AND m.namespace < %s)))"

    def one_of(self, column: str, values: Sequence[Any], params: builtins.list[Any]) -> str:
        params.append(builtins.list(values))
        return f"{column} = ANY(%s)"

    def has_tags(self, tags: Sequence[str], params: builtins.list[Any]) -> str:
        params.append(builtins.list(tags))
        return "m.tags @> %s"

    def data_compare(self, path: str, op: str, operand: Any, params: builtins.list[Any]) -> str:
        segments = path.split(".")
        params.append(segments)
        json_type = "json_typeof(m.data #> %s)"
        if operand is None:
            return f"coalesce({json_type} = 'null', true)"
        params.append(segments)
        if isinstance(operand, bool):
            params.append(operand)
            return f"(CASE WHEN {json_type} = 'boolean' THEN (m.data #>> %s)::boolean = %s ELSE false END)"
        if isinstance(operand, int | float):
            # Through text, so a float compares by its exact shortest decimal, not a 15-digit rounding.
            params.append(repr(operand))
            number = f"(m.data #>> %s)::numeric {SQL_OPS[op]} %s::numeric"
            return f"(CASE WHEN {json_type} = 'number' THEN {number} ELSE false END)"
        params.append(operand)
        return f"(CASE WHEN {json_type} = 'string' THEN (m.data #>> %s) {_C} {SQL_OPS[op]} %s ELSE false END)"


DIALECT = _PgDialect()


def _row_params(memory: Memory) -> dict[str, Any]:
    row = memory_to_row(memory)
    row["tags"] = list(memory.tags)
    row["sensitive"] = memory.sensitive
    row["root"] = root_of(memory.namespace)
    return row


def _vector_literal(vector: NDArray[np.float32]) -> str:
    """pgvector's text form; floats print exactly enough to read back the same float32."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


class _PgTx(SqlTx):
    """Primitive operations on one connection inside a transaction, begun only when it has to be.

    This one reads from one snapshot (see :class:`_PgWriteTx` for writes).
    Statements whose results nobody reads wait in order. The first read begins
    the transaction in pipeline mode: ``BEGIN`` and the waiting statements travel
    with the read in one round trip, and :meth:`finish` ends the transaction with
    the pipeline's last round trip. A read that runs no statement costs none.
    """

    dialect = DIALECT
    conn: psycopg.Connection[Any]
    #: How the transaction begins. Repeatable read: every statement sees the first one's snapshot.
    begin_sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, conn: psycopg.Connection[Any], *, vectors: bool, pipeline: ExitStack) -> None:
        super().__init__(conn)
        self.vectors = vectors
        self._pipeline = pipeline
        self._waiting: builtins.list[tuple[str, Any]] | None = []

    def _execute(self, sql: str, params: Any = ()) -> None:
        if self._waiting is None:
            self.conn.execute(sql, params)
        else:
            self._waiting.append((sql, params))

    def _rows(self, sql: str, params: Any = ()) -> builtins.list[Any]:
        self.begin()
        return super()._rows(sql, params)

    def begin(self) -> psycopg.Connection[Any]:
        """Begin the transaction (once), sending what waits; the connection, for statements of its own."""
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            self._pipeline.enter_context(self.conn.pipeline())
            self.conn.execute(self.begin_sql)
            for sql, params in waiting:
                self.conn.execute(sql, params)
        return self.conn

    def finish(self) -> None:
        """End a read: roll back what began (a read-only transaction has nothing to keep)."""
        if self._waiting is None:
            self.conn.execute("ROLLBACK")

    def insert(self, memory: Memory) -> None:
        self._execute(_INSERT_WITH_VECTOR if self.vectors else _INSERT, _row_params(memory))
        self.memory_event("memory.created", memory)

    def replace(self, memory: Memory, previous: Memory) -> None:
        self._execute(
            "INSERT INTO memory_versions VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (root_of(previous.namespace), previous.id, previous.version, json.dumps(previous.to_dict())),
        )
        new_vector = self.vectors and memory.content_hash != previous.content_hash
        self._execute(_UPDATE_WITH_VECTOR if new_vector else _UPDATE, _row_params(memory))
        self.memory_event("memory.updated", memory)

    def past_version(self, memory: Memory, version: int) -> Memory | None:
        # The root too: the primary key finds the one row, however long the history.
        rows = self._rows(
            "SELECT snapshot FROM memory_versions WHERE root = %s AND memory_id = %s AND version = %s",
            (root_of(memory.namespace), memory.id, version),
        )
        return Memory.from_dict(json.loads(rows[0][0])) if rows else None

    def expired_ids(self, now: float, limit: int) -> builtins.list[str]:
        # SKIP LOCKED: sweeps running in several processes take disjoint rows.
        rows = self._rows(
            "SELECT id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= %s "
            "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (now, limit),
        )
        return [r[0] for r in rows]

    def put_relation(self, relation: Relation) -> None:
        self._execute(
            "INSERT INTO relations SELECT m.root, %s, %s, %s, %s, %s FROM memories m WHERE m.id = %s "
            "ON CONFLICT (root, src_id, dst_id, type) DO UPDATE SET strength = excluded.strength",
            (
                relation.src_id,
                relation.dst_id,
                relation.type,
                relation.strength,
                relation.created_at.timestamp(),
                relation.src_id,
            ),
        )
        self.relation_event(relation)

    def put_group(self, group: Group) -> bool:
        created = self._rows(
            "INSERT INTO groups VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (group.name, group.description, group.created_at.timestamp()),
        )
        return len(created) == 1

    def add_member(self, group: str, memory_id: str, now: float) -> None:
        self._execute(
            "INSERT INTO group_members (group_name, memory_id, added_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (group, memory_id, now),
        )

    def member_ids(self, group: str) -> builtins.list[str]:
        rows = self._rows("SELECT memory_id FROM group_members WHERE group_name = %s ORDER BY position", (group,))
        return [r[0] for r in rows]

    def known_hashes(self, hashes: Sequence[str]) -> set[str]:
        if not self.vectors:
            return set()
        rows = self._rows("SELECT content_hash FROM embeddings WHERE content_hash = ANY(%s)", (list(hashes),))
        return {r[0] for r in rows}

    def put_embeddings(self, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        if not vectors:
            return
        self._execute(
            "INSERT INTO embeddings SELECT * FROM unnest(%s::text[], %s::vector[]) ON CONFLICT DO NOTHING",
            (list(vectors), [_vector_literal(v) for v in vectors.values()]),
        )
        # Memories stored earlier without a vector (embedder off) get theirs now.
        self._execute(
            "UPDATE memories SET embedding = e.embedding FROM embeddings e "
            "WHERE e.content_hash = memories.content_hash AND memories.embedding IS NULL "
            "AND memories.content_hash = ANY(%s)",
            (list(vectors),),
        )

    def prune_embeddings(self, limit: int) -> int:
        if not self.vectors:
            return 0
        pruned = self._rows(
            "DELETE FROM embeddings WHERE content_hash IN (SELECT e.content_hash FROM embeddings e "
            "WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.content_hash = e.content_hash) "
            "LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING 1",
            (limit,),
        )
        return len(pruned)


class _PgWriteTx(_PgTx):
    """A write transaction, begun only when it has to be (see :class:`_PgTx`).

    Reads of single memories lock them (``FOR UPDATE``): every read-modify-write
    in the Hive reads through :meth:`get` or :meth:`get_by_key`, so two writers of
    one memory take turns.

    :meth:`commit` runs a transaction that read nothing and holds one statement
    as that statement alone, which PostgreSQL commits by itself (a plain
    remember: one statement, no ``BEGIN``/``COMMIT``); anything else ends with
    ``COMMIT`` in the same pipeline.
    """

    lock = " FOR UPDATE OF m"
    claim_lock = " FOR UPDATE"
    share_lock = " FOR SHARE"
    begin_sql = "BEGIN"

    def _store_events(self, root: str, events: Sequence[tuple[str, str, str, str]]) -> None:
        # One statement that reads nothing back, so it waits in the pipeline for COMMIT: a
        # remember is then one round trip. The upsert locks the counter row until commit,
        # as _number's UPDATE does, so numbers stay gapless and in commit order.
        rows = ", ".join(["(%s::bigint, %s::text, %s::text, %s::text, %s::jsonb)"] * len(events))
        params: builtins.list[Any] = [root, len(events), len(events)]
        for n, event in enumerate(events, start=1):
            params.extend((n, *event))
        self._execute(
            "WITH counter AS (INSERT INTO event_seqs AS c VALUES (%s, %s) "
            "ON CONFLICT (root) DO UPDATE SET seq = c.seq + excluded.seq "
            f"RETURNING c.root, c.seq - %s AS base, {DIALECT.now} AS at) "
            "INSERT INTO events SELECT counter.root, counter.base + e.n, e.namespace, e.type, e.subject, e.data, "
            f"counter.at FROM counter, (VALUES {rows}) AS e (n, namespace, type, subject, data)",
            params,
        )
        self._evented_roots.add(root)

    def record_notify(self, roots: Sequence[str]) -> None:
        """Wake event subscribers when this transaction commits."""
        self._execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, ",".join(roots)))

    def commit(self) -> None:
        """Make the transaction's writes durable."""
        if self._waiting is not None and len(self._waiting) <= 1:
            for sql, params in self._waiting:
                self.conn.execute(sql, params)
            self._waiting = None
            return
        self.begin().execute("COMMIT")


class _ListeningWaiter(EventWaiter):
    """A connection of its own that LISTENs for commits with events (NOTIFY only wakes; the table is the truth)."""

    def __init__(self, url: str) -> None:
        try:
            self._conn = psycopg.connect(url, autocommit=True)
            self._conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def wait(self, timeout: float) -> None:
        try:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        self._conn.close()


def _translate(exc: BaseException) -> StorageUnavailable:
    reason = type(exc).__name__
    return StorageUnavailable(f"storage error: {exc}".strip(), reason=reason)


class PostgresStore(Store):
    """A Store on a PostgreSQL database (pgvector needed only for vectors).

    Args:
        url: libpq URL of the primary (several hosts allowed).
        read_url: Optional URL of a replica for reads; defaults to ``url``.
        pool_size: Most connections per pool.
        auto_migrate: Apply missing migrations at open (False: refuse to open a
            database whose schema is behind; run ``hivemem migrate`` instead).
        busy_timeout_ms: How long a write keeps retrying conflicts and lost connections.
        prepared_statements: Prepare each statement a connection runs often on the
            server (it then skips parsing and planning). False for PgBouncer in
            transaction mode, unless it is 1.22 or newer with ``max_prepared_statements`` set.
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        read_url: str | None = None,
        pool_size: int = 10,
        auto_migrate: bool = True,
        busy_timeout_ms: int = 30_000,
        prepared_statements: bool = True,
    ) -> None:
        self.url = url
        self.busy_timeout_ms = busy_timeout_ms
        self._closed = False
        self._dim: int | None = None
        prepare_threshold = PREPARE_THRESHOLD if prepared_statements else None
        self._pool = self._open_pool(url, pool_size, prepare_threshold)
        self._read_pool = self._pool
        try:
            if read_url:
                self._read_pool = self._open_pool(read_url, pool_size, prepare_threshold)
            with self._connection(self._pool) as conn:
                migrate(conn, apply=auto_migrate)
                row = conn.execute("SELECT value FROM hivemem_meta WHERE key = 'vector_dim'").fetchone()
            self._dim = int(row[0]) if row else None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_pool(url: str, size: int, prepare_threshold: int | None) -> psycopg_pool.ConnectionPool[Any]:
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": prepare_threshold},
            timeout=10.0,
        )
        try:
            pool.open(wait=True, timeout=10.0)
        except psycopg_pool.PoolTimeout as exc:
            pool.close()
            raise StorageUnavailable(f"cannot connect to PostgreSQL at {_safe(url)}: {exc}") from exc
        return pool

    @contextmanager
    def _connection(self, pool: psycopg_pool.ConnectionPool[Any]) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, with driver errors translated into HiveErrors."""
        if self._closed:
            raise StorageUnavailable("the store is closed")
        try:
            with pool.connection() as conn:
                yield conn
        except HiveError:
            raise
        except psycopg_pool.PoolTimeout as exc:
            raise StorageUnavailable(f"no PostgreSQL connection available: {exc}", reason="PoolTimeout") from exc
        except pg_errors.UndefinedFile as exc:
            raise ConfigError(f"PostgreSQL lacks an extension HiveMem needs: {exc}") from exc
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    # -- transactions ----------------------------------------------------------------------------

    def write(self, fn: Callable[[StoreTx], T], *, sync: bool = True) -> T:
        return self._retrying(lambda: self._write_once(fn))

    def _write_once(self, fn: Callable[[StoreTx], T]) -> T:
        with self._connection(self._pool) as conn:
            committing = False
            try:
                # A pipeline, if the transaction needs one, ends (and syncs) with this block.
                with ExitStack() as pipeline:
                    tx = _PgWriteTx(conn, vectors=self._dim is not None, pipeline=pipeline)
                    result = fn(tx)
                    roots = tx.flush_events()
                    if roots:
                        # Delivered at commit, to every listening subscriber: a hint to read the table.
                        tx.record_notify(roots)
                    committing = True
                    tx.commit()
            except psycopg.Error as exc:
                # Whatever state a failed pipeline left this connection in, it is not
                # trusted with the next write: closed, the pool replaces it.
                conn.close()
                if committing and isinstance(exc, psycopg.OperationalError):
                    raise StorageUnavailable(
                        f"the connection was lost while committing; the write may or may not be applied: {exc}",
                        reason="CommitOutcomeUnknown",
                    ) from exc
                raise
            except BaseException:
                _abandon(conn)
                raise
            return result

    def read(self, fn: Callable[[StoreTx], T], *, primary: bool = False) -> T:
        pool = self._pool if primary else self._read_pool

        def once() -> T:
            with self._connection(pool) as conn:
                try:
                    # The pipeline, if the read began one, ends (and syncs) with this block.
                    with ExitStack() as pipeline:
                        tx = _PgTx(conn, vectors=self._dim is not None, pipeline=pipeline)
                        result = fn(tx)
                        tx.finish()
                except BaseException:
                    _abandon(conn)
                    raise
                return result

        return self._retrying(once)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt``, again after a lost race or a lost connection, until the busy timeout."""
        delay = 0.005
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                return attempt()
            except StorageUnavailable as exc:
                cause = exc.__cause__
                retriable = isinstance(cause, (*_RETRY, psycopg.OperationalError, psycopg_pool.PoolTimeout))
                if not retriable or exc.details.get("reason") == "CommitOutcomeUnknown":
                    raise
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)

    # -- search ----------------------------------------------------------------------------------

    def keyword_search(self, terms: Sequence[str], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        if not terms:
            return []
        # keyword_terms yields letters and digits only; quoting each keeps tsquery syntax out of play.
        query = " | ".join("'" + t.replace("'", "''") + "'" for t in terms)
        params: builtins.list[Any] = [query]
        where = compile_filter(flt, params, DIALECT)
        params.append(limit)

        def search(tx: StoreTx) -> builtins.list[ScoredId]:
            assert isinstance(tx, _PgTx)
            rows = tx._rows(
                "SELECT m.id, ts_rank(m.tsv, q, 1) AS score FROM memories m, to_tsquery('hivemem_english', %s) q "
                f"WHERE m.tsv @@ q AND {where} ORDER BY score DESC, m.id LIMIT %s",
                params,
            )
            return [ScoredId(r[0], float(r[1])) for r in rows]

        return self.read(search)

    def vector_search(self, vector: NDArray[np.float32], flt: MemoryFilter, limit: int) -> builtins.list[ScoredId]:
        if self._dim is None:
            return []
        params: builtins.list[Any] = [_vector_literal(vector)]
        where = compile_filter(flt, params, DIALECT)
        params.append(limit)

        def search(tx: StoreTx) -> builtins.list[ScoredId]:
            assert isinstance(tx, _PgTx)
            # The HNSW scan yields at most ef_search rows before the filter; ask for enough.
            # It waits for the transaction to begin, then travels with the search.
            tx._execute(f"SET LOCAL hnsw.ef_search = {min(max(limit, 40), _MAX_EF_SEARCH)}")
            # Ordered by the selected distance itself, not by a second copy of the expression:
            # the vector is sent and parsed once, and each row's distance computed once.
            rows = tx._rows(
                "SELECT m.id, m.embedding <=> %s::vector AS distance FROM memories m "
                f"WHERE m.embedding IS NOT NULL AND {where} ORDER BY distance LIMIT %s",
                params,
            )
            return [ScoredId(r[0], 1.0 - float(r[1])) for r in rows]

        return self.read(search)

    def bind_embedder(self, name: str, dim: int | None) -> None:
        def bind(tx: StoreTx) -> int | None:
            assert isinstance(tx, _PgWriteTx)
            conn = tx.begin()
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            stored = dict(conn.execute("SELECT key, value FROM hivemem_meta").fetchall())
            if stored.get("embedder") not in (None, name):
                raise ConfigError(
                    f"this database holds vectors made by embedder {stored['embedder']!r}, not {name!r}; "
                    "open it with that embedder, or with embedder='none' for keyword-only recall",
                    stored=stored["embedder"],
                    requested=name,
                )
            if dim is not None and stored.get("vector_dim") not in (None, str(dim)):
                raise ConfigError(f"this database holds {stored['vector_dim']}-dimension vectors, not {dim}")
            conn.execute("INSERT INTO hivemem_meta VALUES ('embedder', %s) ON CONFLICT DO NOTHING", (name,))
            if dim is not None and "vector_dim" not in stored:
                _add_vector_columns(conn, dim)
                conn.execute("INSERT INTO hivemem_meta VALUES ('vector_dim', %s)", (str(dim),))
            return dim if dim is not None else (int(stored["vector_dim"]) if "vector_dim" in stored else None)

        self._dim = self.write(bind)

    def event_waiter(self) -> EventWaiter:
        return _ListeningWaiter(self.url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pool in {id(self._pool): self._pool, id(self._read_pool): self._read_pool}.values():
            pool.close()


def _add_vector_columns(conn: psycopg.Connection[Any], dim: int) -> None:
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if available is None:
        raise ConfigError(
            "this PostgreSQL server has no pgvector extension: install pgvector, "
            "or open HiveMem with embedder=None for keyword-only recall",
            missing_extension="vector",
        )
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(f"ALTER TABLE memories ADD COLUMN embedding vector({int(dim)})")
    conn.execute(f"CREATE TABLE embeddings (content_hash text {_C} PRIMARY KEY, embedding vector({int(dim)}) NOT NULL)")
    conn.execute("CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops)")


def _abandon(conn: psycopg.Connection[Any]) -> None:
    """End a transaction that raised: close the connection if the server failed a statement, else roll back.

    After a statement fails, the server skips the rest of its pipeline. psycopg
    records a statement as prepared when it sends it on reaching the prepare
    threshold, so one queued behind the failure is recorded though the server
    skipped it, and a ROLLBACK clears that record only the first time psycopg
    sees one on the connection. The connection's next run of that statement would
    fail ("prepared statement _pg3_7 does not exist"), so such a connection is
    closed and the pool replaces it, whatever was raised: a HiveMem error (a
    VersionConflict) raised before anything read the failure hides it. A
    transaction that HiveMem gave up on with every statement done has nothing
    stale: rolled back, its connection is reused.
    """
    if conn.info.transaction_status == pq.TransactionStatus.INERROR:
        conn.close()
        return
    # A broken connection has nothing to roll back; the pool discards it.
    with suppress(psycopg.Error):
        conn.execute("ROLLBACK")


def _safe(url: str) -> str:
    """A URL without its password, for error messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<unparseable URL>"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **{k: str(v) for k, v in info.items() if v is not None})


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The migration version a database is at (0 for an empty one)."""
    exists = conn.execute("SELECT to_regclass('hivemem_schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM hivemem_schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any], *, apply: bool = True) -> tuple[int, int]:
    """Bring the schema to the latest version (or, with ``apply=False``, only check it is there).

    One migrator at a time (an advisory lock), each version in the same
    transaction as its statements. Returns ``(version before, version after)``.

    Raises:
        ConfigError: The schema is newer than this HiveMem, or behind and ``apply`` is False.
    """
    conn.execute("BEGIN")
    try:
        if apply:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        current = schema_version(conn)
        latest = len(MIGRATIONS)
        if current > latest:
            raise ConfigError(f"the database has schema version {current}; this HiveMem knows only {latest}")
        if current < latest and not apply:
            raise ConfigError(
                f"the database schema is at version {current} of {latest}: run `hivemem migrate` "
                "with a role that may change the schema",
                schema_version=current,
                latest=latest,
            )
        if current < latest:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS hivemem_schema_migrations "
                "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
            )
            for version in range(current + 1, latest + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO hivemem_schema_migrations VALUES (%s, %s)", (version, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        _abandon(conn)
        raise
    return current, latest


def migrate_url(url: str, *, apply: bool = True) -> tuple[int, int]:
    """:func:`migrate` on a new connection to ``url``.

    Raises:
        StorageUnavailable: The database cannot be reached.
    """
    try:
        # Not prepared: each statement runs once or a few times, and it may go through PgBouncer.
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            return migrate(conn, apply=apply)
    except psycopg.Error as exc:
        raise StorageUnavailable(f"cannot migrate {_safe(url)}: {exc}", reason=type(exc).__name__) from exc
