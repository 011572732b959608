"""Record types returned by the public API.

One :class:`Memory` record serves every kind (episode, fact, entity, rule,
message, summary, document, or a user's own), so one retrieval path serves them
all. Records are frozen: a change is a new version made through ``Hive.update``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

BUILTIN_KINDS = ("note", "episode", "fact", "entity", "rule", "message", "summary", "document")
TIERS = ("short", "mid", "long")

_TIME_FIELDS = ("occurred_at", "created_at", "updated_at", "expires_at", "last_accessed_at")


@dataclass(frozen=True, slots=True)
class Memory:
    """One stored memory.

    Attributes:
        id: Time-ordered unique id.
        namespace: Path such as ``swarm-1/agent-a/session-7``.
        content: The searchable text.
        kind: ``episode``, ``fact``, ``entity``, ``rule``, ``note``... or a user's own.
        tier: ``short``, ``mid`` or ``long``.
        key: Optional key, unique in its namespace (key-value semantics).
        data: Structured JSON payload (for an episode: context, action, outcome...).
        tags: Labels, in the order given.
        importance: 0..1.
        version: Starts at 1; every update adds one and keeps the previous in history.
        content_hash: sha256 of ``content``; also the embedding cache key.
    """

    id: str
    namespace: str
    content: str
    kind: str = "note"
    tier: str = "short"
    key: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    importance: float = 0.5
    agent_id: str | None = None
    session_id: str | None = None
    parent_id: str | None = None
    occurred_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None
    version: int = 1
    content_hash: str = ""
    sensitive: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ISO-8601 times; :meth:`from_dict` reverses it exactly."""
        out = asdict(self)
        out["data"] = dict(self.data)
        out["tags"] = list(self.tags)
        for name in _TIME_FIELDS:
            value = out[name]
            out[name] = value.isoformat() if value is not None else None
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Memory:
        """Rebuild a record from :meth:`to_dict` output (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known}
        for name in _TIME_FIELDS:
            raw = values.get(name)
            if isinstance(raw, str):
                values[name] = datetime.fromisoformat(raw)
        values["tags"] = tuple(values.get("tags") or ())
        values["data"] = dict(values.get("data") or {})
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Hit:
    """One recall result.

    Attributes:
        memory: The memory found.
        score: Final score; hits are ordered by it, highest first.
        scores: The parts of the score: ``keyword`` and ``vector`` (rank-fused
            into ``relevance``), ``recency``, ``importance`` and ``outcome``,
            so a user can see why a memory ranked where it did.
    """

    memory: Memory
    score: float
    scores: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"memory": self.memory.to_dict(), "score": self.score, "scores": dict(self.scores)}


@dataclass(frozen=True, slots=True)
class Relation:
    """A typed, weighted, directed edge between two memories."""

    src_id: str
    dst_id: str
    type: str
    strength: float
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class Related:
    """A memory reached through a relation, with the edge that leads to it."""

    memory: Memory
    relation: Relation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"memory": self.memory.to_dict(), "relation": self.relation.to_dict()}


@dataclass(frozen=True, slots=True)
class Group:
    """A named set of memories."""

    name: str
    description: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class Conflict:
    """A versioned update that met a newer version and was resolved by a strategy.

    ``Hive.update`` with a stale ``expected_version`` and any strategy but
    ``reject`` writes the resolution as the memory's next version and, in the
    same transaction, this record of what met. A rejected update writes nothing,
    so it has no record (the caller holds the VersionConflict).

    Attributes:
        id: Time-ordered unique id.
        memory_id: The memory written.
        namespace: Its namespace.
        created_at: When the conflict was resolved.
        principal: Who wrote.
        strategy: ``last_writer_wins``, ``merge`` or ``custom`` (a function).
        base: The version the writer read (its ``expected_version``).
        ours: ``base`` with the writer's changes: what it meant to write.
        theirs: The version stored when the write arrived.
        result_version: The version the resolution was written as
            (``theirs.version + 1``); ``Hive.history`` holds it.
    """

    id: str
    memory_id: str
    namespace: str
    created_at: datetime
    principal: str
    strategy: str
    base: Memory
    ours: Memory
    theirs: Memory
    result_version: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it exactly."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["created_at"] = self.created_at.isoformat()
        for side in _SIDES:
            out[side] = out[side].to_dict()
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Conflict:
        """Rebuild a record from :meth:`to_dict` output."""
        values = dict(payload)
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        for side in _SIDES:
            values[side] = Memory.from_dict(values[side])
        return cls(**values)


_SIDES = ("base", "ours", "theirs")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing.

    Attributes:
        items: The memories on this page.
        next_cursor: Pass to the same listing call for the next page; None on the last page.
    """

    items: tuple[Memory, ...]
    next_cursor: str | None

    def __iter__(self) -> Iterator[Memory]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def encode_cursor(values: list[Any]) -> str:
    """An opaque, URL-safe cursor from the keyset values of the last row."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """Reverse :func:`encode_cursor`; raises ValueError on anything else."""
    padded = cursor + "=" * (-len(cursor) % 4)
    values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(values, list):
        raise ValueError("cursor is not a list")
    return values
