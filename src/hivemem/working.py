"""Working memory: token-budgeted session buffers that live in the store.

A buffer is a short list of conversation or task messages under one key (a
namespace path such as ``support/u1``, so grants apply as to memories). Its
settings (limits, strategy, flush threshold, token counter, redaction,
archive) are stored with it, so every caller, in any process or behind any
server, enforces the same limits. This module owns the rules: the settings and
their checks, which messages an eviction takes (:func:`plan_evictions`, pure),
which a flush summarises (:func:`plan_flush`, pure), and the
:class:`WorkingMemory` handle, which calls the Hive's ``working_*`` methods
(each one store transaction, each a route, so the handle works over HTTP too).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from hivemem import validation
from hivemem.errors import ConfigError, HiveError, InvalidInput, PayloadTooLarge
from hivemem.redaction import Redactor, compile_pattern
from hivemem.tokens import TokenCounter, check_counter_name, checked_counter

if TYPE_CHECKING:
    from hivemem.hive import Hive
    from hivemem.packing import Pack
    from hivemem.resources import MemoryResource, ResourceRegistry

#: Which entry a full buffer evicts first: oldest, least recently used, least used, lowest priority.
STRATEGIES: Final = ("fifo", "lru", "lfu", "priority")
#: Roles whose messages are never evicted or summarised.
PROTECTED_ROLES = frozenset({"system"})
#: The role of a flush's summary message (evictable, and summarised again by a later flush).
SUMMARY_ROLE = "summary"
#: Limits of one buffer when neither a resource nor the call gives any.
DEFAULT_MAX_TOKENS = 4000
_MAX_LIMIT = 10_000_000
_MAX_PATTERNS = 100
_MAX_ROLE_LEN = 64
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class BufferSettings:
    """How one buffer behaves; stored with the buffer.

    Attributes:
        max_tokens: Most tokens the buffer holds (None: no token limit).
        max_messages: Most messages the buffer holds (None: no count limit).
        strategy: What an eviction takes first: ``fifo`` (oldest), ``lru`` (least
            recently read by :meth:`WorkingMemory.messages`; never read counts as
            least recent), ``lfu`` (least often read), ``priority`` (lowest
            priority); ties go oldest first.
        flush_threshold: An append that leaves the buffer above this share of a
            limit (0 < x <= 1) flushes: the oldest part becomes one summary.
        archive: Evicted and summarised messages are kept as long-term memories
            (kind ``message``, in the buffer's namespace) instead of dropped.
        ttl: Seconds a buffer lives after its last write (an append or a flush;
            given as a number or a duration such as ``30m``, ``12h``, ``7d``);
            then its messages are dropped (None: kept).
        counter: The token counter's name (see :func:`hivemem.tokens.counter_for`).
        redact_patterns: Regular expressions whose matches never reach the store.
        builtin_redaction: Also redact HiveMem's built-in secret patterns.
        never_persist_roles: Roles whose messages are dropped, never stored.
    """

    max_tokens: int | None = DEFAULT_MAX_TOKENS
    max_messages: int | None = None
    strategy: str = "fifo"
    flush_threshold: float = 0.8
    archive: bool = False
    ttl: float | None = None
    counter: str | None = None
    redact_patterns: tuple[str, ...] = ()
    builtin_redaction: bool = True
    never_persist_roles: tuple[str, ...] = ()

    @classmethod
    def of(cls, value: Mapping[str, Any] | None, field_prefix: str = "settings") -> BufferSettings:
        """Checked settings from a mapping of field names (missing ones take defaults).

        Raises:
            InvalidInput: An unknown name or a bad value (``field`` reads ``settings.max_tokens``).
        """
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InvalidInput(field_prefix, "must be an object of buffer settings")
        known = {f.name for f in dataclasses.fields(cls)}
        for name in value:
            if name not in known:
                raise InvalidInput(f"{field_prefix}.{name}", f"unknown setting; known: {', '.join(sorted(known))}")
        settings = cls(**{name: SETTING_CHECKS[name](raw, f"{field_prefix}.{name}") for name, raw in value.items()})
        if settings.counter is not None:
            checked_counter(settings.counter, f"{field_prefix}.counter")  # a buffer's counter must load here
        if settings.max_tokens is None and settings.max_messages is None:
            raise InvalidInput(f"{field_prefix}.max_tokens", "a buffer needs max_tokens or max_messages")
        return settings

    @classmethod
    def of_resource(cls, resource: MemoryResource) -> BufferSettings:
        """The settings a :class:`hivemem.resources.MemoryResource` gives its buffers."""
        token_based = resource.type != "message_count"
        return cls.of(
            {
                "max_tokens": resource.max_tokens if token_based else None,
                "max_messages": resource.max_messages,
                "strategy": resource.strategy,
                "flush_threshold": resource.flush_threshold,
                "archive": resource.archive,
                "ttl": resource.ttl,
                "counter": resource.counter,
                "redact_patterns": tuple(resource.redact_patterns),
                "builtin_redaction": resource.builtin_redaction,
                "never_persist_roles": tuple(resource.never_persist_roles),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        out = dataclasses.asdict(self)
        for name in ("redact_patterns", "never_persist_roles"):
            out[name] = list(out[name])
        return out

    @property
    def redactor(self) -> Redactor:
        """The redactor of these settings."""
        return _redactor(self.redact_patterns, self.builtin_redaction)

    @property
    def token_counter(self) -> TokenCounter:
        """The token counter of these settings."""
        return checked_counter(self.counter, "settings.counter")


@functools.lru_cache(maxsize=256)
def _redactor(patterns: tuple[str, ...], builtins: bool) -> Redactor:
    try:
        return Redactor(patterns, builtins=builtins)
    except Exception as exc:  # a bad regular expression (re.error) or a Redactor's own refusal
        raise InvalidInput("settings.redact_patterns", f"not a valid pattern: {exc}") from None


def _optional_limit(raw: object, field: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= _MAX_LIMIT:
        raise InvalidInput(field, f"must be a whole number from 1 to {_MAX_LIMIT}, or null")
    return raw


def _flush_threshold(raw: object, field: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 1:
        raise InvalidInput(field, "must be a number above 0 and at most 1", value=repr(raw))
    return float(raw)


def _ttl(raw: object, field: str) -> float | None:
    """Seconds, as a positive number or a duration such as ``30m``, ``12h`` or ``7d``."""
    if raw is None:
        return None
    if isinstance(raw, str) and (match := _DURATION.match(raw.strip())):
        raw = float(match.group(1)) * _SECONDS[match.group(2)]
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
        raise InvalidInput(field, "must be a positive number of seconds or a duration such as 30m, 12h, 7d")
    if raw > validation.MAX_TTL_SECONDS:
        raise InvalidInput(field, f"must be at most {validation.MAX_TTL_SECONDS} seconds (100 years)")
    return float(raw)


def _counter(raw: object, field: str) -> str | None:
    """A name :func:`hivemem.tokens.counter_for` knows (whether its counter loads here is not checked)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidInput(field, "must be a token counter name such as minilm", value=repr(raw))
    try:
        return check_counter_name(raw)
    except ConfigError as exc:
        raise InvalidInput(field, exc.message, value=repr(raw)) from None


def _strings(raw: object, field: str) -> list[object]:
    if isinstance(raw, str | Mapping) or not isinstance(raw, Iterable):
        raise InvalidInput(field, "must be a list of strings")
    items = list(raw)
    if len(items) > _MAX_PATTERNS:
        raise InvalidInput(field, f"must hold at most {_MAX_PATTERNS} strings")
    return items


def _patterns(raw: object, field: str) -> tuple[str, ...]:
    items = _strings(raw, field)
    for index, pattern in enumerate(items):
        compile_pattern(pattern, f"{field}[{index}]")
    return tuple(str(p) for p in items)


def _roles(raw: object, field: str) -> tuple[str, ...]:
    items = _strings(raw, field)
    for role in items:
        if not isinstance(role, str) or not role.strip() or len(role) > _MAX_ROLE_LEN:
            raise InvalidInput(field, f"each role must be non-empty text of at most {_MAX_ROLE_LEN} characters")
    return tuple(str(r) for r in items)


#: One check per buffer setting: it returns the normalised value or raises InvalidInput naming the
#: field. Memory resources (:mod:`hivemem.resources`) check the same fields with the same checks.
SETTING_CHECKS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "max_tokens": _optional_limit,
    "max_messages": _optional_limit,
    "strategy": lambda raw, field: validation.one_of(raw, field, STRATEGIES),
    "flush_threshold": _flush_threshold,
    "archive": validation.boolean,
    "ttl": _ttl,
    "counter": _counter,
    "redact_patterns": _patterns,
    "builtin_redaction": validation.boolean,
    "never_persist_roles": _roles,
}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class WorkingMessage:
    """One message of a buffer.

    Attributes:
        seq: Its place in the buffer (grows with each append; a summary takes the
            place of the oldest message it replaced).
        role: ``user``, ``assistant``, ``system``, ``tool``, ``summary``...
        content: The text, as stored (after redaction).
        tokens: Its length by the buffer's token counter.
        priority: Higher is kept longer by the ``priority`` strategy.
        pinned: Never evicted or summarised.
        metadata: The caller's JSON object (a summary's ``summary_of`` lists what it replaced).
        created_at: When it was appended.
        uses: How often :meth:`Hive.working_messages` returned it.
    """

    seq: int
    role: str
    content: str
    tokens: int
    priority: int
    pinned: bool
    metadata: Mapping[str, Any]
    created_at: datetime
    uses: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "tokens": self.tokens,
            "priority": self.priority,
            "pinned": self.pinned,
            "metadata": dict(self.metadata),
            "created_at": self.created_at.isoformat(),
            "uses": self.uses,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> WorkingMessage:
        """The reverse of :meth:`to_dict`."""
        return cls(**{**payload, "created_at": datetime.fromisoformat(payload["created_at"])})

    def as_chat(self) -> dict[str, str]:
        """``{"role", "content"}``, as chat APIs take messages."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class WorkingStats:
    """A buffer's state and history.

    Attributes:
        key: The buffer.
        tokens: Tokens held now.
        messages: Messages held now.
        evictions: Messages evicted so far (by limits).
        flushes: Flushes so far.
        summarized: Messages replaced by summaries so far.
        archived: Messages kept as long-term memories so far.
        dropped: Messages refused by ``never_persist_roles`` (this call; 0 for a stats read).
        settings: The stored settings (empty for a buffer never written).
    """

    key: str
    tokens: int = 0
    messages: int = 0
    evictions: int = 0
    flushes: int = 0
    summarized: int = 0
    archived: int = 0
    dropped: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> WorkingStats:
        """The reverse of :meth:`to_dict`."""
        return cls(**payload)


# --------------------------------------------------------------------------- pure planning


@dataclass(frozen=True, slots=True)
class Entry:
    """What eviction needs to know of a message.

    Attributes:
        seq: Its place (older is smaller).
        tokens: Its length.
        priority: The ``priority`` strategy evicts the lowest first.
        protected: System or pinned: never evicted.
        last_used: The buffer tick of its last read, 0 if never read (``lru``).
        uses: How often it was read (``lfu``).
    """

    seq: int
    tokens: int
    priority: int = 0
    protected: bool = False
    last_used: int = 0
    uses: int = 0


_ORDER: dict[str, Callable[[Entry], tuple[int, ...]]] = {
    "fifo": lambda e: (e.seq,),
    "lru": lambda e: (e.last_used, e.seq),
    "lfu": lambda e: (e.uses, e.seq),
    "priority": lambda e: (e.priority, e.seq),
}


def over_limits(tokens: int, messages: int, max_tokens: int | None, max_messages: int | None) -> bool:
    """Whether ``tokens`` or ``messages`` exceed the limits that are set."""
    return (max_tokens is not None and tokens > max_tokens) or (max_messages is not None and messages > max_messages)


def plan_evictions(
    entries: Sequence[Entry],
    *,
    max_tokens: int | None,
    max_messages: int | None,
    strategy: str,
    keep: frozenset[int] = frozenset(),
) -> list[int]:
    """The seqs to evict so that ``entries`` fit the limits, in the order the strategy takes them.

    Protected entries and those in ``keep`` (the message just appended) are
    never taken. Only as many as needed go.

    Raises:
        PayloadTooLarge: The protected and kept entries alone exceed a limit;
            no eviction could make the buffer fit.
    """
    tokens = sum(e.tokens for e in entries)
    count = len(entries)
    if not over_limits(tokens, count, max_tokens, max_messages):
        return []
    fixed = [e for e in entries if e.protected or e.seq in keep]
    if over_limits(sum(e.tokens for e in fixed), len(fixed), max_tokens, max_messages):
        raise PayloadTooLarge(
            "content: the buffer's system and pinned messages with this one exceed its limits "
            f"(max_tokens={max_tokens}, max_messages={max_messages}); nothing was stored",
            field="content",
            max_tokens=max_tokens,
            max_messages=max_messages,
        )
    out: list[int] = []
    for e in sorted((e for e in entries if not (e.protected or e.seq in keep)), key=_ORDER[strategy]):
        if not over_limits(tokens, count, max_tokens, max_messages):
            break
        out.append(e.seq)
        tokens -= e.tokens
        count -= 1
    return out


def above_threshold(tokens: int, messages: int, settings: BufferSettings) -> bool:
    """Whether a buffer this full should flush."""
    share = settings.flush_threshold
    return (settings.max_tokens is not None and tokens > share * settings.max_tokens) or (
        settings.max_messages is not None and messages > share * settings.max_messages
    )


def plan_flush(entries: Sequence[Entry], settings: BufferSettings) -> list[int]:
    """The seqs a flush summarises: the oldest unprotected messages, until half the threshold is left.

    The newest message is never taken (it is the turn in progress), nor are
    protected ones. A buffer already that small (a flush asked for by hand)
    gives up the older half of its candidates instead, if it has two or more.
    A flush of one message is planned only under a token limit (in a buffer
    limited by count alone it would gain nothing).
    """
    share = settings.flush_threshold / 2
    token_goal = None if settings.max_tokens is None else share * settings.max_tokens
    count_goal = None if settings.max_messages is None else max(1.0, share * settings.max_messages)
    tokens = sum(e.tokens for e in entries)
    count = len(entries)

    def small(summary: int = 0) -> bool:  # summary: the one message a flush adds
        return (token_goal is None or tokens <= token_goal) and (count_goal is None or count + summary <= count_goal)

    newest = max((e.seq for e in entries), default=None)
    candidates = sorted((e for e in entries if not e.protected and e.seq != newest), key=lambda e: e.seq)
    if small():
        return [e.seq for e in candidates[: max(2, len(candidates) // 2)]] if len(candidates) >= 2 else []
    out: list[int] = []
    for e in candidates:
        if out and small(1):
            break
        out.append(e.seq)
        tokens -= e.tokens
        count -= 1
    return out if len(out) >= 2 or settings.max_tokens is not None else []


# --------------------------------------------------------------------------- the handle


@dataclass(frozen=True)
class WorkingMemory:
    """A handle on one buffer: the Hive, the buffer's key and the settings it writes with.

    Made by :meth:`hivemem.Hive.working`. Each method is one call of the Hive
    (one store transaction; one request over HTTP). Content is redacted here,
    before it leaves the process, and again by the Hive with the stored settings.

    Attributes:
        hive: The Hive (embedded or remote).
        key: The buffer's key, a namespace path.
        settings: Limits and rules, stored with the buffer by each append.
        sends_settings: Whether appends store :attr:`settings` with the buffer. A
            handle made with neither a resource nor settings does not: it uses
            the buffer's stored settings (the defaults for a new buffer), so a
            casual caller never resets limits another agent chose.
    """

    hive: Hive
    key: str
    settings: BufferSettings
    sends_settings: bool = True

    def append(
        self,
        role: str,
        content: str,
        *,
        priority: int = 0,
        metadata: Mapping[str, Any] | None = None,
        pinned: bool = False,
    ) -> WorkingStats:
        """Add a message; evicts (or, past the flush threshold, summarises) what no longer fits.

        A role in ``never_persist_roles`` is dropped, not stored (``stats.dropped`` is 1).

        Raises:
            PayloadTooLarge: The message with the system and pinned messages exceeds a limit.
            InvalidInput: A bad role, content, priority or metadata.
        """
        text = self.settings.redactor.redact(content) if isinstance(content, str) else content
        return self.hive.working_append(
            self.key,
            role,
            text,
            priority=priority,
            metadata=metadata,
            pinned=pinned,
            settings=self.settings.to_dict() if self.sends_settings else None,
        )

    def messages(self, token_budget: int | None = None) -> list[WorkingMessage]:
        """The messages in order; with a budget, system and pinned ones and then the newest that fit."""
        return self.hive.working_messages(self.key, token_budget=token_budget)

    def chat(self, token_budget: int | None = None) -> list[dict[str, str]]:
        """:meth:`messages` as ``{"role", "content"}`` dicts for a chat API."""
        return [m.as_chat() for m in self.messages(token_budget)]

    def clear(self) -> int:
        """Delete every message (the counters stay); returns how many."""
        return self.hive.working_clear(self.key)

    def flush(self) -> int:
        """Summarise the oldest part now; returns how many messages the summary replaced."""
        return self.hive.working_flush(self.key)

    def stats(self) -> WorkingStats:
        """Tokens, messages, evictions and flushes."""
        return self.hive.working_stats(self.key)

    def pack(self, query: str, *, token_budget: int, namespace: str | None = None, k: int = 10) -> Pack:
        """:meth:`hivemem.Hive.pack` of this buffer with memories recalled for ``query``."""
        return self.hive.pack(query, token_budget=token_budget, working=self.key, namespace=namespace, k=k)


def resource_handle(
    hive: Hive, registry: ResourceRegistry, resource_id: str, agent: str | None, options: Mapping[str, Any]
) -> WorkingMemory | None:
    """The handle :meth:`hivemem.Hive.working` gives for a resource id; None if ``resource_id`` names none.

    ``options`` naming a resource field override it; the others fill its key template.
    """
    from hivemem.resources import MemoryResource

    try:
        registry.get(resource_id)
    except (LookupError, HiveError):
        return None
    fields = {f.name for f in dataclasses.fields(MemoryResource)} - {"id", "key_template"}
    overrides = {name: value for name, value in options.items() if name in fields}
    variables = {name: value for name, value in options.items() if name not in fields}
    resource = registry.resolve(resource_id, agent=agent, **overrides)
    from hivemem.buffers import buffer_key

    return WorkingMemory(hive, buffer_key(resource.key(**variables)), BufferSettings.of_resource(resource))
