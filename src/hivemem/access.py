"""Who may do what: principals, their grants on namespace prefixes, and API keys.

A :class:`Principal` holds grants such as ``read:team-a`` or ``write:team-a/agent-1``;
``admin:*`` covers every namespace. Levels nest: ``admin`` includes ``write``,
which includes ``read``. A Hive seen through :meth:`hivemem.Hive.as_principal`
applies them to every call:

* a memory outside the read grants behaves as if it did not exist (NotFound,
  absent from recall, listings, stats, relations and groups), so no answer
  reveals whether a foreign namespace holds anything;
* writing outside the write grants is refused with Forbidden (the same answer
  whatever the namespace holds);
* maintenance that spans every namespace (``sweep``) needs ``admin:*``.

API keys are ``hm_<key id>_<secret>``. The store keeps the key id, the
principal, its grants and a SHA-256 of the whole key (the secret has 256 bits
of entropy, so a fast hash is enough); the key itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from hivemem.errors import InvalidInput
from hivemem.validation import in_prefix, namespace_prefix

LEVELS = ("read", "write", "admin")
#: The prefix of a grant on every namespace.
EVERYWHERE = "*"
_KEY_PREFIX = "hm_"


@dataclass(frozen=True, slots=True)
class Grant:
    """``level`` (read, write or admin) on every namespace under ``prefix`` ("*" for all)."""

    level: str
    prefix: str

    @classmethod
    def parse(cls, text: str) -> Grant:
        """``"write:team-a"`` -> Grant("write", "team-a").

        Raises:
            InvalidInput: Not ``level:prefix`` with a known level and a valid prefix.
        """
        level, sep, prefix = text.partition(":") if isinstance(text, str) else ("", "", "")
        if not sep or level not in LEVELS:
            raise InvalidInput("grant", f"{text!r} is not level:prefix with level read, write or admin")
        if prefix != EVERYWHERE:
            checked = namespace_prefix(prefix, "grant")
            assert checked is not None
            prefix = checked
        return cls(level, prefix)

    def covers(self, level: str, namespace: str) -> bool:
        """Whether this grant allows ``level`` on ``namespace`` (a namespace or a prefix)."""
        return LEVELS.index(self.level) >= LEVELS.index(level) and (
            self.prefix == EVERYWHERE or in_prefix(namespace, self.prefix)
        )

    def __str__(self) -> str:
        return f"{self.level}:{self.prefix}"


@dataclass(frozen=True, slots=True)
class Principal:
    """An identity and what it may do; it comes from a credential, never from a request body."""

    name: str
    grants: tuple[Grant, ...]

    def allows(self, level: str, namespace: str) -> bool:
        """Whether some grant allows ``level`` on ``namespace``."""
        return any(g.covers(level, namespace) for g in self.grants)

    def prefixes(self, level: str) -> tuple[str, ...] | None:
        """The namespace prefixes this principal reaches at ``level``; None means every namespace."""
        reach = [g for g in self.grants if LEVELS.index(g.level) >= LEVELS.index(level)]
        if any(g.prefix == EVERYWHERE for g in reach):
            return None
        return tuple(dict.fromkeys(g.prefix for g in reach))

    @classmethod
    def everything(cls, name: str = "local") -> Principal:
        """A principal with ``admin:*`` (an embedded Hive, or a server with auth off)."""
        return cls(name, (Grant("admin", EVERYWHERE),))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key (never the key itself)."""

    key_id: str
    principal: Principal
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this API key (constant-time comparison)."""
        return hmac.compare_digest(self.key_hash, hash_key(key))


def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``; show the key to its owner once and store only its hash."""
    key_id = secrets.token_hex(8)
    return key_id, f"{_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The key id inside an API key, or None if it is not shaped like one."""
    if not key.startswith(_KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(_KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret:
        return None
    return key_id


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()
