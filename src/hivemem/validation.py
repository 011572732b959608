"""Input checks shared by every deployment.

Each check either returns the normalised value or raises
:class:`~hivemem.errors.InvalidInput` naming the field, before anything is
written. Namespaces are ``/``-separated paths; reads may address a prefix
(``swarm-1`` sees ``swarm-1/agent-a/...`` but not ``swarm-10``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hivemem.errors import InvalidInput, PayloadTooLarge
from hivemem.models import TIERS

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,63}$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}$")
MAX_NAMESPACE_LEN = 255
MAX_NAMESPACE_DEPTH = 8
MAX_TAGS = 32
MAX_TAG_LEN = 64
MAX_KEY_LEN = 255
MAX_AGENT_LEN = 200
MAX_DATA_DEPTH = 16
WHERE_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in")


MAX_TTL_SECONDS = 100 * 366 * 86_400
#: The largest integer a store's column (SQLite INTEGER, PostgreSQL bigint) holds.
MAX_INT = 2**63 - 1


def _utf8(value: str, field: str) -> bytes:
    """The UTF-8 bytes of ``value``; text that is not valid Unicode (a lone surrogate) is refused."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode text (it holds a lone surrogate)") from None


def encodable(value: str, field: str) -> str:
    """``value`` itself, once it is known to be storable as UTF-8."""
    _utf8(value, field)
    return value


def namespace(value: object, field: str = "namespace") -> str:
    """A namespace that a write may target: ``seg[/seg...]``.

    Segments start with a letter, digit or ``_`` and use letters, digits and
    ``_ . : @ -``; at most 8 segments and 255 characters.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be a non-empty string such as 'swarm-1/agent-a'")
    if len(value) > MAX_NAMESPACE_LEN:
        raise InvalidInput(field, f"longer than {MAX_NAMESPACE_LEN} characters")
    segments = value.split("/")
    if len(segments) > MAX_NAMESPACE_DEPTH:
        raise InvalidInput(field, f"deeper than {MAX_NAMESPACE_DEPTH} segments")
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise InvalidInput(field, f"bad segment {segment!r}: use letters, digits and _ . : @ -", value=value)
    return value


def namespace_prefix(value: object, field: str = "namespace") -> str | None:
    """A namespace prefix for reads; a trailing ``/`` is allowed; None means every namespace."""
    if value is None:
        return None
    if isinstance(value, str) and value.endswith("/"):
        value = value[:-1]
    return namespace(value, field)


def in_prefix(ns: str, prefix: str | None) -> bool:
    """Whether namespace ``ns`` lies in ``prefix`` (segment-wise)."""
    return prefix is None or ns == prefix or ns.startswith(prefix + "/")


def root_of(ns: str) -> str:
    """The first segment of a namespace: the unit of tenancy and partitioning."""
    return ns.split("/", 1)[0]


def kind(value: object, field: str = "kind") -> str:
    """A kind: a built-in one or a user's own lowercase name (``[a-z][a-z0-9_-]*``)."""
    if not isinstance(value, str) or not _KIND.match(value):
        raise InvalidInput(field, "must be a lowercase name such as 'episode', 'fact' or 'my-kind'", value=value)
    return value


def tier(value: object, field: str = "tier") -> str:
    """One of ``short``, ``mid``, ``long``."""
    return one_of(value, field, TIERS)


def one_of(value: object, field: str, options: tuple[str, ...]) -> str:
    """One of ``options``."""
    if value not in options:
        raise InvalidInput(field, f"must be one of {', '.join(options)}", value=repr(value))
    return str(value)


def unit_float(value: object, field: str) -> float:
    """A finite number in 0..1 (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(field, "must be a number between 0 and 1", value=repr(value))
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(field, "must be between 0 and 1", value=value)
    return float(value)


def boolean(value: object, field: str) -> bool:
    """True or false, nothing else (not 0, 1, "yes" or an empty list)."""
    if not isinstance(value, bool):
        raise InvalidInput(field, "must be true or false", value=repr(value))
    return value


def positive_float(value: object, field: str) -> float:
    """A finite number above 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(field, "must be a positive number", value=repr(value))
    return float(value)


def positive_int(value: object, field: str, maximum: int | None = None) -> int:
    """A whole number from 1 to ``maximum``."""
    return count(value, field, maximum, minimum=1)


def count(value: object, field: str, maximum: int | None = MAX_INT, *, minimum: int = 0) -> int:
    """A whole number from ``minimum`` (0) to ``maximum`` (what a store's integer column holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        noun = "positive whole number" if minimum == 1 else f"whole number of at least {minimum}"
        raise InvalidInput(field, f"must be a {noun}", value=repr(value))
    if maximum is not None and value > maximum:
        raise InvalidInput(field, f"must be at most {maximum}", value=value)
    return value


def content(value: object, max_bytes: int, field: str = "content") -> str:
    """Non-blank text of at most ``max_bytes`` UTF-8 bytes."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be non-empty text")
    size = len(_utf8(value, field))
    if size > max_bytes:
        raise PayloadTooLarge(f"{field}: {size} bytes is over the limit of {max_bytes}", field=field, limit=max_bytes)
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    return value


def optional_id(value: object, field: str) -> str | None:
    """An optional identifier string (agent, session, parent...)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LEN or "\x00" in value:
        raise InvalidInput(field, f"must be a non-empty string of at most {MAX_KEY_LEN} characters", value=repr(value))
    return encodable(value, field)


def agent_id(value: object, field: str) -> str:
    """An agent id (a message's recipient, an inbox's agent, a lease's owner): non-empty text, 200 characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_AGENT_LEN or "\x00" in value:
        raise InvalidInput(field, f"must be an agent id: a non-empty string of at most {MAX_AGENT_LEN} characters")
    return encodable(value, field)


def identifier(value: object, field: str) -> str:
    """A required identifier (a memory id, key or group name): what :func:`optional_id` accepts, but not None.

    Everything stored under one passed this check, so a lookup by anything
    else is refused as malformed rather than sent to the store.
    """
    checked = optional_id(value, field)
    if checked is None:
        raise InvalidInput(field, "is required")
    return checked


def tags(value: object, field: str = "tags") -> tuple[str, ...]:
    """Up to 32 distinct non-empty labels of at most 64 characters, order kept."""
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise InvalidInput(field, "must be a list of strings")
    out: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_LEN or "\x00" in tag:
            raise InvalidInput(field, f"each tag must be non-empty text of at most {MAX_TAG_LEN} characters")
        encodable(tag, field)
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise InvalidInput(field, f"at most {MAX_TAGS} tags")
    return tuple(out)


def data(value: object, max_bytes: int, field: str = "data") -> dict[str, Any]:
    """A JSON object of at most ``max_bytes`` and nesting depth 16."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be a JSON object (a dict)")
    _check_depth(value, 0, field)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"must be JSON-serialisable: {exc}") from None
    if len(encoded) > max_bytes:
        raise PayloadTooLarge(f"{field}: over the limit of {max_bytes} bytes", field=field, limit=max_bytes)
    result: dict[str, Any] = json.loads(encoded)
    return result


def _check_depth(value: object, depth: int, field: str) -> None:
    if depth > MAX_DATA_DEPTH:
        raise InvalidInput(field, f"nested deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(field, "object keys must be strings")
            _check_depth(item, depth + 1, field)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_depth(item, depth + 1, field)


def timestamp(value: object, field: str) -> float | None:
    """An aware datetime (or None) as Unix seconds; naive datetimes are refused as ambiguous."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(field, "must be a datetime with a timezone")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, "must carry a timezone (e.g. datetime.now(UTC))")
    try:
        # Stored times are UTC: 0001-01-01 at +14:00 is a time UTC cannot write.
        return value.astimezone(UTC).timestamp()
    except (OverflowError, ValueError):
        raise InvalidInput(field, "must lie within years 1 to 9999 in UTC") from None


def ttl_seconds(value: object, field: str = "ttl") -> float | None:
    """A time-to-live as seconds (number or timedelta), or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = positive_float(value, field)
    if seconds > MAX_TTL_SECONDS:
        raise InvalidInput(field, "must be at most 100 years (leave it out for no expiry)")
    return seconds


def where(value: object, field: str = "where") -> dict[str, dict[str, Any]]:
    """A filter on ``data`` fields, normalised to ``{path: {op: operand}}``.

    ``{"success": True}`` means equality; ``{"metrics.tokens": {"$lt": 500}}``
    a range; ``{"tool": {"$in": ["grep", "sed"]}}`` membership. Paths are
    dotted field names; operands are JSON scalars (lists for ``$in``).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be a dict of data field -> value or {operator: value}")
    out: dict[str, dict[str, Any]] = {}
    for path, condition in value.items():
        if not isinstance(path, str) or not _FIELD_PATH.match(path):
            raise InvalidInput(field, f"bad field path {path!r}: use dotted names such as 'metrics.tokens'")
        ops = dict(condition) if isinstance(condition, Mapping) else {"$eq": condition}
        if not ops:
            raise InvalidInput(field, f"empty condition for {path!r}")
        for op, operand in ops.items():
            if op not in WHERE_OPERATORS:
                raise InvalidInput(field, f"unknown operator {op!r} for {path!r}: use {', '.join(WHERE_OPERATORS)}")
            operands = operand if op == "$in" else [operand]
            if op == "$in" and (not isinstance(operand, list | tuple) or not operand):
                raise InvalidInput(field, f"$in for {path!r} needs a non-empty list")
            for item in operands:
                if not storable_scalar(item, field):
                    raise InvalidInput(field, f"operand for {path!r} must be a JSON scalar")
                if op in ("$gt", "$gte", "$lt", "$lte") and (item is None or isinstance(item, bool)):
                    raise InvalidInput(field, f"{op} for {path!r} needs a number or a string")
            ops[op] = list(operand) if op == "$in" else operand
        out[path] = ops
    return out


def storable_scalar(value: object, field: str) -> bool:
    """Whether ``value`` is a JSON scalar a store can compare with.

    Raises:
        InvalidInput: Text that is not valid Unicode, or an integer beyond 64 bits.
    """
    if isinstance(value, str):
        encodable(value, field)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise InvalidInput(field, f"integers must lie within ±{MAX_INT}")
    return value is None or isinstance(value, str | int | float | bool)
