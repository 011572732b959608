"""Leases with fencing tokens: who may act on a shared resource, and for how long.

A lease is a time-limited grant on a named resource (``"team-a/deploy"``; named
like a namespace, so grants apply: a ``write`` lease needs write access there, a
``read`` lease read access). Readers share a resource; a writer excludes
everyone. Every grant of a resource takes the next value of its fencing token,
a counter that lives in the store and never goes back, so a write carrying an
older token (``update(..., fence=lease)``) can be refused: a holder that paused
past its lease cannot overwrite what its successor wrote.

Time is the database's: expiry and renewal compare against the store's clock
(:meth:`StoreTx.db_now`), never the caller's, so processes with skewed clocks
agree on who holds what.

Waiting is polling with backoff (reads only while the resource is taken), with one rule for fairness: a waiting writer
registers itself, and while a live writer waits no new reader is granted and
writers are served oldest first. A stream of readers cannot starve a writer.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hivemem import validation as v
from hivemem.clock import utc
from hivemem.errors import InvalidInput, LeaseExpired, LockHeld, StaleFencingToken
from hivemem.storage.base import Store, StoreTx

if TYPE_CHECKING:
    from hivemem.hive import Hive

MODES = ("read", "write")
#: Longest lease and longest wait one call may ask for, in seconds.
MAX_TTL = 24 * 3600.0
MAX_WAIT = 3600.0
#: A waiting writer's registration outlives its last poll by this much, so a crashed waiter stops blocking readers.
WAITER_TTL = 2.0
_FIRST_POLL, _LAST_POLL = 0.001, 0.01


def lease_ttl(value: object, field: str = "ttl") -> float:
    """A lease's time to live: seconds above 0, at most :data:`MAX_TTL`.

    Raises:
        InvalidInput: Anything else.
    """
    ttl = v.positive_float(value, field)
    if ttl > MAX_TTL:
        raise InvalidInput(field, f"must be at most {MAX_TTL:.0f} seconds", value=ttl)
    return ttl


@dataclass(frozen=True, slots=True)
class Fence:
    """A resource and the fencing token a protected write presents for it."""

    resource: str
    token: int

    @classmethod
    def of(cls, value: object, field: str = "fence") -> Fence:
        """A Fence from a :class:`Lease`, a Fence, or ``{"resource": ..., "token": ...}``.

        Raises:
            InvalidInput: ``value`` is none of those.
        """
        if isinstance(value, Lease):
            return value.fence
        if isinstance(value, Fence):
            return value
        if isinstance(value, Mapping) and set(value) == {"resource", "token"}:
            return cls(
                v.namespace(value["resource"], f"{field}.resource"), v.positive_int(value["token"], field, v.MAX_INT)
            )
        raise InvalidInput(field, "must be a Lease (from hive.lock) or {'resource': ..., 'token': ...}")

    def to_dict(self) -> dict[str, Any]:
        """The fence as JSON-ready data."""
        return {"resource": self.resource, "token": self.token}


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease; a context manager that releases it on exit.

    Attributes:
        resource: What it is on.
        lease_id: This grant's id.
        mode: ``read`` or ``write``.
        token: The fencing token of this grant (higher than every earlier grant of the resource).
        holder: Who holds it (the principal, and the owner given to :meth:`Hive.lock`).
        ttl: Seconds it lasts from a grant or renewal.
        acquired_at: When it was granted (the database's clock).
        expires_at: When it lapses unless renewed (the database's clock).
    """

    resource: str
    lease_id: str
    mode: str
    token: int
    holder: str
    ttl: float
    acquired_at: datetime
    expires_at: datetime
    hive: Hive | None = field(default=None, compare=False, repr=False, metadata={"local": True})

    @property
    def fence(self) -> Fence:
        """What a protected write presents: ``update(..., fence=lease)`` uses it."""
        return Fence(self.resource, self.token)

    def renew(self, ttl: float | None = None) -> Lease:
        """Extend the lease to ``ttl`` seconds (default: its own ttl) from now; returns the renewed lease.

        Raises:
            LeaseExpired: It lapsed or was released; the resource may have a new holder.
        """
        return self._owner().renew_lease(self, ttl=ttl)

    def release(self) -> bool:
        """Give the lease up; False if it had already lapsed or been released."""
        return self._owner().release_lease(self)

    def bound_to(self, hive: Hive) -> Lease:
        """This lease, renewed and released through ``hive``."""
        return dataclasses.replace(self, hive=hive)

    def to_dict(self) -> dict[str, Any]:
        """The lease as JSON-ready data (times in ISO 8601)."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["acquired_at"] = self.acquired_at.isoformat()
        out["expires_at"] = self.expires_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, payload: object, field: str = "lease") -> Lease:
        """Rebuild a lease from :meth:`to_dict` output (not bound to a Hive).

        Raises:
            InvalidInput: ``payload`` is not a lease's fields, each of its type.
        """
        if not isinstance(payload, Mapping) or not set(_FIELDS) <= payload.keys():
            raise InvalidInput(field, "must be a lease as hive.lock returned it")
        lease_id, holder, mode = payload["lease_id"], payload["holder"], payload["mode"]
        for name, text in (("lease_id", lease_id), ("holder", holder)):
            if not isinstance(text, str) or not text or len(text) > 300:
                raise InvalidInput(f"{field}.{name}", "must be a non-empty string")
        if mode not in MODES:
            raise InvalidInput(f"{field}.mode", "must be 'read' or 'write'")
        ttl = lease_ttl(payload["ttl"], f"{field}.ttl")
        times = []
        for name in ("acquired_at", "expires_at"):
            try:
                times.append(datetime.fromisoformat(payload[name]))
            except (TypeError, ValueError):
                raise InvalidInput(f"{field}.{name}", "must be an ISO 8601 time") from None
        return cls(
            v.namespace(payload["resource"], f"{field}.resource"),
            lease_id,
            mode,
            v.positive_int(payload["token"], f"{field}.token", v.MAX_INT),
            holder,
            ttl,
            times[0],
            times[1],
        )

    @classmethod
    def of(cls, value: object, field: str = "lease") -> Lease:
        """A Lease argument: a Lease, or its :meth:`to_dict` form.

        Raises:
            InvalidInput: ``value`` is neither.
        """
        return value if isinstance(value, Lease) else cls.from_dict(value, field)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _owner(self) -> Hive:
        if self.hive is None:
            raise InvalidInput("lease", "this lease is not bound to a Hive: use hive.renew_lease / release_lease")
        return self.hive


_FIELDS = ("resource", "lease_id", "mode", "token", "holder", "ttl", "acquired_at", "expires_at")


class LeaseSet:
    """Several leases taken in one fixed order (:meth:`Hive.acquire_all`); releases them all on exit."""

    def __init__(self, leases: list[Lease]) -> None:
        self.leases = leases

    def __iter__(self) -> Iterator[Lease]:
        return iter(self.leases)

    def __len__(self) -> int:
        return len(self.leases)

    def __getitem__(self, resource: str) -> Lease:
        for lease in self.leases:
            if lease.resource == resource:
                return lease
        raise KeyError(resource)

    def release(self) -> None:
        """Release every lease, last taken first."""
        for lease in reversed(self.leases):
            lease.release()

    def __enter__(self) -> LeaseSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """A validated :meth:`Hive.lock` call."""

    resource: str
    mode: str
    ttl: float
    wait: float
    principal: str
    holder: str

    @classmethod
    def of(
        cls, resource: object, mode: object, ttl: object, wait: object, principal: str, owner: object
    ) -> LeaseRequest:
        """Check a lock call's arguments; the holder reads ``principal`` or ``principal:owner``.

        Raises:
            InvalidInput: A bad resource name, mode, ttl, wait or owner.
        """
        if owner is not None and (not isinstance(owner, str) or not owner or len(owner) > 200):
            raise InvalidInput("owner", "must be a non-empty string of at most 200 characters", value=repr(owner))
        if mode not in MODES:
            raise InvalidInput("mode", "must be 'read' or 'write'", value=mode)
        ttl = lease_ttl(ttl)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
            raise InvalidInput("wait", f"must be a number of seconds from 0 to {MAX_WAIT:.0f}", value=repr(wait))
        holder = principal if owner is None else f"{principal}:{owner}"
        return cls(v.namespace(resource, "resource"), str(mode), ttl, float(wait), principal, holder)


def acquire(store: Store, request: LeaseRequest) -> Lease:
    """Grant ``request`` as soon as the resource allows, polling until its wait runs out.

    The first attempt is the grant itself. While the resource is taken, polls
    only read; a write transaction runs when the resource looks free (the
    grant, which checks again under the resource's lock) and, for a waiting
    writer, to keep its registration alive, unsynced since it is only a hint
    that lapses by itself.

    Raises:
        LockHeld: The resource was not free within ``request.wait`` seconds.
    """
    root, resource = v.root_of(request.resource), request.resource
    waiter_id = uuid.uuid4().hex
    deadline = time.monotonic() + request.wait
    registered_until = time.monotonic() + WAITER_TTL / 4  # a refused grant registers a waiting writer
    delay = _FIRST_POLL
    lease = store.write(lambda tx: _try_grant(tx, request, waiter_id))
    while lease is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if request.mode == "write":
                store.write(lambda tx: tx.drop_waiter(root, resource, waiter_id), sync=False)
            raise LockHeld(
                f"{request.resource} is held; no {request.mode} lease within {request.wait:g} s",
                resource=request.resource,
                mode=request.mode,
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _LAST_POLL)
        holders, waiting = store.read(lambda tx: tx.lease_state(root, resource), primary=True)
        if _free(request, waiter_id, holders, waiting):
            lease = store.write(lambda tx: _try_grant(tx, request, waiter_id))
        elif request.mode == "write" and time.monotonic() > registered_until:
            store.write(lambda tx: _register(tx, root, resource, waiter_id), sync=False)
            registered_until = time.monotonic() + WAITER_TTL / 4
    return lease


def _free(request: LeaseRequest, waiter_id: str, holders: list[str], waiting: list[str]) -> bool:
    """Whether ``request`` may be granted now: a writer needs no holder and to be the oldest waiter."""
    if request.mode == "write":
        return not holders and (not waiting or waiting[0] == waiter_id)
    return "write" not in holders and not waiting


def _register(tx: StoreTx, root: str, resource: str, waiter_id: str) -> None:
    now = tx.db_now()
    tx.put_waiter(root, resource, waiter_id, now, now + WAITER_TTL)


def _try_grant(tx: StoreTx, request: LeaseRequest, waiter_id: str) -> Lease | None:
    """One attempt, in one write transaction: grant the lease, or register a waiting writer and return None."""
    root, resource = v.root_of(request.resource), request.resource
    tx.claim_resource(root, resource)  # serializes every grant of this resource
    now = tx.db_now()
    holders = tx.live_lease_modes(root, resource, now)
    waiting = tx.waiting_writers(root, resource, now)
    if not _free(request, waiter_id, holders, waiting):
        if request.mode == "write":
            tx.put_waiter(root, resource, waiter_id, now, now + WAITER_TTL)
        return None
    if request.mode == "write":
        tx.drop_waiter(root, resource, waiter_id)
    lease_id = uuid.uuid4().hex
    expires = now + request.ttl
    token = tx.grant_lease(root, resource, lease_id, request.mode, request.principal, request.holder, now, expires)
    return Lease(resource, lease_id, request.mode, token, request.holder, request.ttl, utc(now), utc(expires))


def renew(store: Store, lease: Lease, ttl: float, principal: str) -> Lease:
    """``principal``'s ``lease`` extended to ``ttl`` seconds from the database's now.

    Raises:
        LeaseExpired: It lapsed or was released (or is not ``principal``'s).
    """

    def write(tx: StoreTx) -> float | None:
        now = tx.db_now()
        return tx.renew_lease(v.root_of(lease.resource), lease.resource, lease.lease_id, principal, now, now + ttl)

    expires = store.write(write)
    if expires is None:
        raise LeaseExpired(
            f"the lease on {lease.resource} lapsed or was released", resource=lease.resource, token=lease.token
        )
    return dataclasses.replace(lease, ttl=ttl, expires_at=utc(expires))


def release(store: Store, lease: Lease, principal: str) -> bool:
    """Delete ``principal``'s ``lease``; whether it was still live."""

    def write(tx: StoreTx) -> bool:
        return tx.release_lease(v.root_of(lease.resource), lease.resource, lease.lease_id, principal, tx.db_now())

    # Unsynced: if a power failure undoes a release, the lease lapses at its ttl, as when a holder dies.
    return store.write(write, sync=False)


def check_fence(tx: StoreTx, fence: Fence) -> None:
    """Refuse a protected write whose token a newer grant of its resource has passed.

    Raises:
        StaleFencingToken: A newer token for the resource exists.
    """
    current = tx.fence_token(v.root_of(fence.resource), fence.resource)
    if current > fence.token:
        raise StaleFencingToken(
            f"the lease on {fence.resource} with token {fence.token} was superseded (token {current})",
            resource=fence.resource,
            token=fence.token,
            current_token=current,
        )


def ordered(resources: Iterable[object]) -> list[str]:
    """Resource names, checked, without repeats, in the one order every caller takes them in.

    Raises:
        InvalidInput: A name is bad, or a bare string was given instead of a list.
    """
    if isinstance(resources, str | bytes):
        raise InvalidInput("resources", "must be a list of resource names, not one string")
    return sorted({v.namespace(r, "resources") for r in resources})


def acquire_each(hive: Hive, resources: list[str], **options: Any) -> LeaseSet:
    """Take each of ``resources`` (in the given order) through ``hive.lock``; on failure release those taken."""
    with ExitStack() as taken:
        leases = [taken.enter_context(hive.lock(r, **options)) for r in resources]
        taken.pop_all()
    return LeaseSet(leases)
