"""The HTTP client: a Hive whose calls run on a ``hivemem serve`` server.

``hivemem.open("http://host:8765", api_key=...)`` returns a :class:`RemoteHive`.
It is a :class:`hivemem.Hive` in every way a caller can see: each routed
method (see :mod:`hivemem.wire`) is made from the Hive method itself, with its
signature and docstring, and sends the arguments given by name; the server
answers errors in one shape, raised here as the same HiveError class with the
same ``code`` and ``details``. Only the embedded internals (``store``,
``embedder``, ``config``) are absent: they live in the server. How a call
becomes a request, is retried and read back is :mod:`hivemem.protocol`,
shared with the async client; this module holds the blocking I/O.
"""

from __future__ import annotations

import builtins
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import httpx

from hivemem.access import ApiKey, Principal
from hivemem.checkpoints import Workflow
from hivemem.errors import ConfigError, InvalidInput
from hivemem.events import Event
from hivemem.hive import Hive
from hivemem.leases import Lease
from hivemem.models import Memory
from hivemem.protocol import (
    Call,
    CircuitBreaker,
    RemoteBase,
    binder,
    error_from,
    import_batches,
    result_of,
    retry_delay,
    sse_events,
    stream_params,
)
from hivemem.storage.base import T
from hivemem.wire import EVENT_STREAM, ROUTES, ROUTES_BY_NAME, Route

__all__ = ["CircuitBreaker", "RemoteHive"]

_KEYS_ON_DATABASE = ConfigError("API keys are managed on the database itself: hivemem --db URL keys create|list|revoke")


class RemoteHive(RemoteBase, Hive):
    """A Hive over HTTP.

    Writes carry an ``Idempotency-Key`` (one per call, the same on every retry),
    so a retried write is applied once. Transport failures and 502/503/504 are
    retried with exponential backoff and jitter, moving to the next server URL
    each time; :attr:`breaker` stops calls to servers that keep failing.

    Args:
        url: The server's root, e.g. ``http://127.0.0.1:8765``; several, comma-separated,
            for failover (``http://a:8765,http://b:8765``).
        api_key: The caller's key; the server derives who the caller is from it alone.
        timeout: Seconds per request.
        retries: Further tries of a call after a transient failure.
        backoff: First retry delay in seconds (doubling, with jitter, up to 2 s).
        breaker: Shared with other clients to stop them all calling a failing server.
    """

    _http: httpx.Client

    def _connect(self) -> httpx.Client:
        return httpx.Client(headers=self._headers, timeout=self._timeout)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def as_principal(self, principal: Principal) -> Hive:
        """Not available: over HTTP the API key alone decides who the caller is."""
        raise InvalidInput("principal", "a remote Hive acts as its API key's principal; open it with another key")

    def create_api_key(self, principal: str, grants: Sequence[str]) -> tuple[ApiKey, str]:
        """Not over HTTP: keys are managed on the database (``hivemem --db URL keys ...``)."""
        raise _KEYS_ON_DATABASE

    def api_keys(self) -> builtins.list[ApiKey]:
        """Not over HTTP: keys are managed on the database (``hivemem --db URL keys ...``)."""
        raise _KEYS_ON_DATABASE

    def revoke_api_key(self, key_id: str) -> None:
        """Not over HTTP: keys are managed on the database (``hivemem --db URL keys ...``)."""
        raise _KEYS_ON_DATABASE

    def authenticate(self, key: str) -> Principal:
        """Not over HTTP: the server authenticates each request by its key."""
        raise _KEYS_ON_DATABASE

    def run_once(self, key: str, call: Callable[[Hive], T], encode: Callable[[T], Any]) -> Any:
        """Not needed over HTTP: every write this client sends carries its own idempotency key."""
        raise ConfigError("a remote Hive gives every write an idempotency key itself")

    def _step_log(self, wf: Workflow, fence: Lease) -> None:
        """None: over HTTP a run records each step with a record_steps request."""
        return None

    def import_memories(self, memories: Iterable[Memory], *, batch_size: int = 500) -> int:
        """Store exported memories exactly as they were, ``batch_size`` per request (one transaction each)."""
        route = ROUTES_BY_NAME["import_memories"]
        return sum(self._send(route, arguments) for arguments in import_batches(memories, batch_size))

    def follow(
        self, namespace: str, *, since: int = 0, types: Sequence[str] | None = None, idle: float = 1.0
    ) -> Iterator[Event | None]:
        """:meth:`Hive.follow` over server-sent events; reconnects (to the next server) and resumes after a failure."""
        last = since
        params = stream_params(namespace, types, idle)
        failures = 0
        while True:
            self.breaker.check()
            server = self.url
            headers = {**self._headers, "Last-Event-ID": str(last)}
            timeout = httpx.Timeout(self._timeout, read=self._timeout + idle)
            try:
                with self._http.stream(
                    "GET", server + EVENT_STREAM, params=params, headers=headers, timeout=timeout
                ) as r:
                    if r.is_error:
                        r.read()
                        raise error_from(r)
                    self.breaker.succeeded()
                    failures = 0
                    for event in sse_events(r.iter_lines()):
                        if event is not None:
                            last = event.seq
                        yield event
            except httpx.TransportError:
                self.breaker.failed()
                self._move_on_from(server)
                failures += 1
                time.sleep(retry_delay(self.backoff, failures))

    def _send(self, route: Route, arguments: dict[str, Any]) -> Any:
        call = Call(self, self._http, route, arguments)
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.send(call.request())
            except httpx.TransportError as exc:
                outcome = exc
            settled = call.settle(outcome)
            if isinstance(settled, httpx.Response):
                result = result_of(route, settled)
                call.answered()
                return result.bound_to(self) if isinstance(result, Lease) else result
            time.sleep(settled)


def _remote(route: Route) -> Callable[..., Any]:
    """The Hive method ``route.name``, sending its arguments to the server instead."""
    bind = binder(route)

    @functools.wraps(getattr(Hive, route.name))
    def call(self: RemoteHive, /, *args: Any, **kwargs: Any) -> Any:
        return self._send(route, bind(args, kwargs))

    return call


for _route in ROUTES:
    if _route.name != "import_memories":
        setattr(RemoteHive, _route.name, _remote(_route))
