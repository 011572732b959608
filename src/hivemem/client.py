"""The HTTP client: a Hive whose calls run on a ``hivemem serve`` server.

``hivemem.open("http://host:8765", api_key=...)`` returns a :class:`RemoteHive`.
It is a :class:`hivemem.Hive` in every way a caller can see: each routed
method (see :mod:`hivemem.wire`) is made from the Hive method itself, with its
signature and docstring, and sends the arguments given by name; the server
answers errors in one shape, raised here as the same HiveError class with the
same ``code`` and ``details``. Only the embedded internals (``store``,
``embedder``, ``config``) are absent: they live in the server.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from hivemem.access import ApiKey, Principal
from hivemem.errors import ConfigError, HiveError, InvalidInput, StorageUnavailable
from hivemem.hive import Hive
from hivemem.models import Memory
from hivemem.storage.base import T
from hivemem.validation import encodable, identifier
from hivemem.wire import ROUTES, ROUTES_BY_NAME, Route, arguments_to_wire

_JSON = {"Content-Type": "application/json"}
#: Statuses of a server or proxy that may answer differently a moment later.
_TRANSIENT = frozenset({502, 503, 504})
_KEYS_ON_DATABASE = ConfigError("API keys are managed on the database itself: hivemem --db URL keys create|list|revoke")


class CircuitBreaker:
    """Stops calling a server that keeps failing, then tries again after a cool-down.

    After ``threshold`` transport failures in a row the circuit opens: calls fail
    at once with StorageUnavailable (reason ``CircuitOpen``) for ``cooldown``
    seconds; then one call is let through (half-open) and its outcome closes or
    reopens the circuit.
    """

    def __init__(self, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self.reset()

    def status(self) -> dict[str, Any]:
        """``{"state": "closed" | "open" | "half_open", "consecutive_failures": n}``."""
        with self._lock:
            state = "closed"
            if self._opened_at is not None:
                state = "open" if time.monotonic() - self._opened_at < self.cooldown else "half_open"
            return {"state": state, "consecutive_failures": self._failures}

    def reset(self) -> None:
        """Close the circuit and forget past failures."""
        with self._lock:
            self._failures = 0
            self._opened_at: float | None = None

    def check(self) -> None:
        if self.status()["state"] == "open":
            raise StorageUnavailable("the HiveMem server keeps failing; not calling it for now", reason="CircuitOpen")

    def succeeded(self) -> None:
        self.reset()

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = time.monotonic()


class RemoteHive(Hive):
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
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.05,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
        if not self.urls:
            raise InvalidInput("url", "needs at least one http(s):// server URL")
        self.url = self.urls[0]
        self.retries = retries
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteHive({','.join(self.urls)!r})"

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

    def import_memories(self, memories: Iterable[Memory], *, batch_size: int = 500) -> int:
        """Store exported memories exactly as they were, ``batch_size`` per request."""
        total = 0
        batch: builtins.list[Memory] = []
        for memory in memories:
            if not isinstance(memory, Memory):
                raise InvalidInput("memory", "must be a Memory record")
            batch.append(memory)
            if len(batch) >= batch_size:
                total += self._import(batch, batch_size)
                batch = []
        if batch:
            total += self._import(batch, batch_size)
        return total

    def _import(self, batch: builtins.list[Memory], batch_size: int) -> int:
        memories = [m.to_dict() for m in batch]
        count: int = self._send(ROUTES_BY_NAME["import_memories"], {"memories": memories, "batch_size": batch_size})
        return count

    def _send(self, route: Route, arguments: dict[str, Any]) -> Any:
        path = route.path
        for name in route.path_params:
            # Checked as the Hive checks it: only then can it be written into a URL.
            value = identifier(arguments.pop(name), "id" if name == "memory_id" else name)
            path = path.replace(f"{{{name}}}", quote(value, safe=""))
        if self._http.is_closed:
            raise StorageUnavailable("this Hive is closed")
        wire = arguments_to_wire(arguments)
        request: dict[str, Any] = {"headers": {}}
        if route.in_query:
            request["params"] = {k: _query_value(k, v) for k, v in wire.items() if v is not None}
        else:
            # ASCII escapes carry any str (even a lone surrogate) for the server to judge.
            request["content"] = json.dumps(wire, separators=(",", ":")).encode()
            request["headers"] = {**_JSON, "Idempotency-Key": uuid.uuid4().hex} if route.once else _JSON
        response = self._request(route.method, path, request)
        if response.is_error:
            raise _error(response)
        return route.decode(response.json())

    def _request(self, method: str, path: str, request: dict[str, Any]) -> httpx.Response:
        """One call, retried on transient failures across the server URLs."""
        for attempt in range(self.retries + 1):
            self.breaker.check()
            try:
                response = self._http.request(method, self.url + path, **request)
            except httpx.TransportError as exc:
                failure: Exception = exc
            else:
                if response.status_code not in _TRANSIENT:
                    self.breaker.succeeded()
                    return response
                failure = _error(response)
            self.breaker.failed()
            self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
            if attempt < self.retries:
                time.sleep(min(2.0, self.backoff * 2**attempt) * random.uniform(0.5, 1.5))
        raise StorageUnavailable(f"the HiveMem server did not answer after {self.retries + 1} tries: {failure}")


def _query_value(name: str, value: Any) -> Any:
    """``value`` as query text; text a URL cannot carry (a lone surrogate) is refused as the Hive refuses it."""
    if isinstance(value, bool):
        return str(value).lower()
    return encodable(value, name) if isinstance(value, str) else value


def _error(response: httpx.Response) -> HiveError:
    try:
        payload = response.json()
        return HiveError.from_dict(
            {"code": payload["code"], "message": payload["detail"], "details": payload.get("details") or {}}
        )
    except (ValueError, KeyError, TypeError):
        return HiveError(f"HTTP {response.status_code} from the server: {response.text[:200]}")


def _remote(route: Route) -> Callable[..., Any]:
    """The Hive method ``route.name``, sending its arguments to the server instead."""
    local = getattr(Hive, route.name)
    signature = inspect.signature(local)

    @functools.wraps(local)
    def call(self: RemoteHive, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        arguments: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif name != "self":
                arguments[name] = value
        return self._send(route, arguments)

    return call


for _route in ROUTES:
    if _route.name != "import_memories":
        setattr(RemoteHive, _route.name, _remote(_route))
