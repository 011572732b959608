"""Building memory records from user input.

A :class:`Draft` is a validated ``remember`` call: every argument checked and
normalised before anything touches the store, so a bad input is refused with
the field named and nothing written. The typed helpers (episodes, entities,
rules) are drafts with a searchable text made from their fields.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypedDict

from hivemem import validation as v
from hivemem.clock import to_datetime
from hivemem.config import HiveConfig
from hivemem.errors import InvalidInput
from hivemem.leases import Fence, Lease
from hivemem.models import Memory


class MemoryOptions(TypedDict, total=False):
    """The :class:`RememberOptions` every write that makes a memory takes (all but ``key``, ``kind`` and ``data``).

    :meth:`hivemem.Hive.upsert_entity` takes these: it sets the other three itself.
    """

    tier: str
    tags: Sequence[str]
    importance: float
    agent_id: str | None
    session_id: str | None
    parent_id: str | None
    occurred_at: datetime | None
    ttl: float | timedelta | None
    expires_at: datetime | None
    sensitive: bool


class KeyedOptions(MemoryOptions, total=False):
    """The :class:`RememberOptions` of the episode and rule helpers (all but ``kind`` and ``data``, which they set)."""

    key: str | None


class RememberOptions(KeyedOptions, total=False):
    """Everything :meth:`hivemem.Hive.remember` takes besides ``namespace`` and ``content``.

    Attributes:
        kind: ``note`` (the default), ``episode``, ``fact``... or a lowercase name of one's own.
        tier: ``short`` (the default), ``mid`` or ``long``.
        key: Unique in its namespace: a write under a taken key makes the next version of that memory.
        data: A JSON object kept with the memory (``where`` filters search it).
        tags: Labels (at most 32 of at most 64 characters), order kept.
        importance: 0..1 (default 0.5).
        agent_id: The agent that wrote it.
        session_id: The session it belongs to.
        parent_id: The memory it derives from (``children`` lists it under that one).
        occurred_at: When the event happened (an aware datetime; ISO 8601 text over HTTP).
        ttl: Time to live in seconds (or a timedelta); give this or ``expires_at``.
        expires_at: When it expires (an aware datetime; ISO 8601 text over HTTP).
        sensitive: Whether it holds sensitive data.
        fence: A lease (from ``lock``): the write happens only if no newer lease on its resource exists.
    """

    kind: str
    data: Mapping[str, Any] | None
    fence: Lease | Fence | None


#: Arguments ``remember`` takes besides ``namespace`` and ``content``.
REMEMBER_OPTIONS = RememberOptions.__optional_keys__


def content_hash(text: str) -> str:
    """sha256 of the text: the identity of its embedding."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated ``remember`` request, not yet stored."""

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
    occurred_at: float | None = None
    expires_at: float | None = None
    ttl: float | None = None
    sensitive: bool = False

    @property
    def content_hash(self) -> str:
        """sha256 of the content."""
        return content_hash(self.content)

    def new_memory(self, memory_id: str, now: float) -> Memory:
        """The first version of a memory made from this draft."""
        created = to_datetime(now)
        return Memory(
            id=memory_id,
            namespace=self.namespace,
            content=self.content,
            kind=self.kind,
            tier=self.tier,
            key=self.key,
            data=dict(self.data),
            tags=self.tags,
            importance=self.importance,
            agent_id=self.agent_id,
            session_id=self.session_id,
            parent_id=self.parent_id,
            occurred_at=to_datetime(self.occurred_at),
            created_at=created,
            updated_at=created,
            expires_at=to_datetime(self._expiry(now)),
            version=1,
            content_hash=self.content_hash,
            sensitive=self.sensitive,
        )

    def next_version_of(self, current: Memory, now: float) -> Memory:
        """The memory ``current`` rewritten by this draft (a keyed upsert): same id, version + 1."""
        fresh = self.new_memory(current.id, now)
        return replace(
            fresh,
            created_at=current.created_at,
            version=current.version + 1,
            access_count=current.access_count,
            last_accessed_at=current.last_accessed_at,
        )

    def _expiry(self, now: float) -> float | None:
        return now + self.ttl if self.ttl is not None else self.expires_at


def draft(namespace: object, content: object, config: HiveConfig, **options: Any) -> Draft:
    """Validate one ``remember`` call.

    Raises:
        InvalidInput: An argument is bad; ``field`` names it.
        PayloadTooLarge: Content or data is over its limit.
    """
    unknown = sorted(set(options) - REMEMBER_OPTIONS)
    if unknown:
        raise InvalidInput(unknown[0], "unknown argument")
    ttl = v.ttl_seconds(options.get("ttl"))
    expires_at = v.timestamp(options.get("expires_at"), "expires_at")
    if ttl is not None and expires_at is not None:
        raise InvalidInput("ttl", "give ttl or expires_at, not both")
    key = v.optional_id(options.get("key"), "key")
    sensitive = v.boolean(options.get("sensitive", False), "sensitive")
    return Draft(
        namespace=v.namespace(namespace),
        content=v.content(content, config.max_content_bytes),
        kind=v.kind(options.get("kind", "note")),
        tier=v.tier(options.get("tier", "short")),
        key=key,
        data=v.data(options.get("data"), config.max_data_bytes),
        tags=v.tags(options.get("tags", ())),
        importance=v.unit_float(options.get("importance", 0.5), "importance"),
        agent_id=v.optional_id(options.get("agent_id"), "agent_id"),
        session_id=v.optional_id(options.get("session_id"), "session_id"),
        parent_id=v.optional_id(options.get("parent_id"), "parent_id"),
        occurred_at=v.timestamp(options.get("occurred_at"), "occurred_at"),
        expires_at=expires_at,
        ttl=ttl,
        sensitive=sensitive,
    )


#: The fields of a memory that ``Hive.update`` changes, in the order they are checked.
UPDATE_FIELDS = ("content", "data", "tags", "importance", "tier")


def update_changes(given: Mapping[str, Any], config: HiveConfig, where: str = "") -> dict[str, Any]:
    """Validate new values of a memory's :data:`UPDATE_FIELDS`; a new content brings its hash.

    Args:
        given: Field name to new value, for the fields that change.
        config: Size limits.
        where: Put before field names in errors (``"on_conflict."`` for a resolver's result).

    Returns:
        The checked values, normalised as they are stored.

    Raises:
        InvalidInput: A value is bad, or a name is not an updatable field.
        PayloadTooLarge: Content or data is over its limit.
    """
    unknown = sorted(set(given) - set(UPDATE_FIELDS))
    if unknown:
        raise InvalidInput(f"{where}{unknown[0]}", f"not a field update changes ({', '.join(UPDATE_FIELDS)})")
    checks: dict[str, Callable[[Any, str], Any]] = {
        "content": lambda value, field: v.content(value, config.max_content_bytes, field),
        "data": lambda value, field: v.data(value, config.max_data_bytes, field),
        "tags": v.tags,
        "importance": v.unit_float,
        "tier": v.tier,
    }
    changes = {name: checks[name](given[name], f"{where}{name}") for name in UPDATE_FIELDS if name in given}
    if "content" in changes:
        changes["content_hash"] = content_hash(changes["content"])
    return changes


def text_field(value: object, name: str, *, optional: bool = False) -> str | None:
    """A required (or optional) non-blank text argument of a typed helper."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, "must be non-empty text")
    return v.encodable(value.strip(), name)


def episode_fields(
    context: object,
    action: object,
    outcome: object,
    success: object,
    lesson: object,
    tools: object,
    metrics: object,
) -> tuple[str, dict[str, Any]]:
    """Searchable content and the data of an experience record."""
    v.boolean(success, "success")
    ctx = text_field(context, "context")
    act = text_field(action, "action")
    out = text_field(outcome, "outcome")
    les = text_field(lesson, "lesson", optional=True)
    tool_list = list(v.tags(tools, "tools"))
    if metrics is not None and not isinstance(metrics, Mapping):
        raise InvalidInput("metrics", "must be a dict of name -> value")
    lines = [f"{ctx}", f"Action: {act}", f"Outcome: {out}"]
    if tool_list:
        lines.append(f"Tools: {', '.join(tool_list)}")
    if les:
        lines.append(f"Lesson: {les}")
    data = {
        "context": ctx,
        "action": act,
        "outcome": out,
        "success": success,
        "lesson": les,
        "tools": tool_list,
        "metrics": dict(metrics or {}),
    }
    return "\n".join(lines), data


_SPACES = re.compile(r"\s+")


def entity_key(entity_type: str, name: str) -> str:
    """The key of an entity: one record per type and (case- and space-insensitive) name."""
    return f"entity:{entity_type}:{_SPACES.sub(' ', name.strip()).casefold()}"


def entity_content(entity_type: str, name: str, properties: Mapping[str, Any]) -> str:
    """Searchable text of an entity: its type, name and properties."""
    lines = [f"{entity_type}: {name}"]
    lines += [f"{k}: {properties[k]}" for k in sorted(properties)]
    return "\n".join(lines)


def merged_entity_data(
    current: Mapping[str, Any] | None, entity_type: str, name: str, properties: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Entity data after one more interaction: properties merged, interactions counted, first_seen kept."""
    stamp = now.isoformat()
    if current is None:
        return {
            "type": entity_type,
            "name": name,
            "properties": dict(properties),
            "interactions": 1,
            "first_seen": stamp,
            "last_updated": stamp,
        }
    return {
        **current,
        "properties": {**dict(current.get("properties") or {}), **dict(properties)},
        "interactions": int(current.get("interactions", 0)) + 1,
        "last_updated": stamp,
    }


def names(values: Sequence[str] | str | None, field_name: str, check: Any) -> tuple[str, ...] | None:
    """A filter list (kinds, tiers): one value or several, each checked; None means no filter."""
    if values is None:
        return None
    if isinstance(values, Mapping) or not isinstance(values, str | Iterable):
        raise InvalidInput(field_name, "must be a name or a list of names")
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        raise InvalidInput(field_name, "must not be empty (leave it out to allow all)")
    return tuple(check(item, field_name) for item in items)
