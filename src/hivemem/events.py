"""Events: every committed write, in order, for agents to follow; and agent inboxes built on them.

Each write transaction appends its events (a memory created, updated or
deleted, a relation, a lease granted, released or lapsed, a message) in the
same transaction, numbered per namespace root without gaps: the store hands out
a root's sequence numbers under a lock held to commit, so they also commit in
order, and a reader that has seen ``seq`` never finds a smaller one later.
The events table is the truth; wake-ups (a condition in-process, LISTEN/NOTIFY
on PostgreSQL, server-sent events over HTTP) only say "look again".

An inbox is the ``message`` events addressed to one agent in one namespace,
with a durable cursor: :meth:`Inbox.pending` returns what follows the cursor,
:meth:`Inbox.ack` moves it. Delivery is at least once and in order; nothing
acknowledged is delivered again and nothing unacknowledged is lost, whatever
restarts in between.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hivemem.clock import utc
from hivemem.errors import InvalidInput
from hivemem.validation import MAX_INT

if TYPE_CHECKING:
    from hivemem.hive import Hive

#: The largest sequence number a store holds (a signed 64-bit integer).
MAX_SEQ = MAX_INT

#: What happened, by event type.
TYPES = (
    "memory.created",
    "memory.updated",
    "memory.deleted",
    "memory.accessed",
    "relation.created",
    "group.member_added",
    "lease.granted",
    "lease.released",
    "lease.expired",
    "message",
    "plan.created",
    "task.state_changed",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change.

    Attributes:
        seq: Its number within the namespace root (1, 2, 3... without gaps).
        namespace: Where it happened (for a lease: the resource).
        type: One of :data:`TYPES`.
        subject: What it is about: a memory id, a relation's source id, a resource, or the
            agent a message is for.
        data: Details: a memory's kind, version, key and agent; a lease's token; a message's body.
        at: When it committed, by the database's clock.
    """

    seq: int
    namespace: str
    type: str
    subject: str
    data: Mapping[str, Any]
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data."""
        return {
            "seq": self.seq,
            "namespace": self.namespace,
            "type": self.type,
            "subject": self.subject,
            "data": dict(self.data),
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output."""
        return cls(
            payload["seq"],
            payload["namespace"],
            payload["type"],
            payload["subject"],
            payload["data"],
            datetime.fromisoformat(payload["at"]),
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Event:
        """An event from ``(seq, namespace, type, subject, data, at)`` as stored."""
        data = json.loads(row[4]) if isinstance(row[4], str | bytes) else row[4]
        return cls(int(row[0]), row[1], row[2], row[3], data, utc(float(row[5])))


def types_of(value: object) -> tuple[str, ...] | None:
    """A ``types`` filter: None (every type) or a list of :data:`TYPES`.

    Raises:
        InvalidInput: Not a list of known types.
    """
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidInput("types", "must be a list of event types")
    unknown = [t for t in value if t not in TYPES]
    if unknown:
        raise InvalidInput("types", f"unknown event type {unknown[0]!r}; known: {', '.join(TYPES)}")
    return tuple(value)


def sequence_number(value: object, field: str = "since") -> int:
    """A sequence number: a whole number, 0 or more.

    Raises:
        InvalidInput: Anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise InvalidInput(field, f"must be a whole number from 0 to {MAX_SEQ}", value=repr(value))
    return value


class Inbox:
    """One agent's messages in one namespace, with a durable cursor (see :meth:`Hive.inbox`)."""

    def __init__(self, hive: Hive, agent: str, namespace: str) -> None:
        self.hive = hive
        self.agent = agent
        self.namespace = namespace

    def pending(self, limit: int = 100) -> list[Event]:
        """Messages after the last acknowledged one, oldest first."""
        return self.hive.inbox_messages(self.agent, namespace=self.namespace, limit=limit)

    def ack(self, seq: int) -> None:
        """Mark every message up to ``seq`` handled; they are not delivered again."""
        self.hive.ack(self.agent, seq, namespace=self.namespace)

    def follow(self, *, poll: float = 0.05) -> Iterator[Event]:
        """Pending messages, then new ones as they arrive (checked every ``poll`` seconds), forever.

        Acknowledging stays the caller's job: what was yielded but not acknowledged
        is delivered again by the next inbox (after a restart, say).
        """
        last = 0
        while True:
            fresh = self.hive.inbox_messages(self.agent, namespace=self.namespace, after=last, limit=100)
            yield from fresh
            if fresh:
                last = fresh[-1].seq
            else:
                time.sleep(poll)
