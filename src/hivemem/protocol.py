"""What the sync and async HTTP clients share: every decision about a call, none of its I/O.

:class:`hivemem.client.RemoteHive` and :class:`hivemem.aclient.AsyncRemoteHive`
differ only in how they wait (``httpx.Client`` and ``time.sleep`` against
``httpx.AsyncClient`` and ``asyncio.sleep``). Everything else lives here once:
parsing server URLs, binding a call's arguments by the Hive method's own
signature, turning them into an HTTP request (with the idempotency key every
retry of a write repeats), reading the answer back into results or the same
HiveError class, and the retry, failover and circuit-breaker policy.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from hivemem.errors import ConfigError, HiveError, InvalidInput, StorageUnavailable
from hivemem.events import Event
from hivemem.hive import Hive
from hivemem.leases import MAX_WAIT
from hivemem.models import Memory
from hivemem.validation import encodable, identifier, positive_int
from hivemem.wire import Route, arguments_to_wire
from hivemem.workflows import current_step

_SCHEMES = ("http://", "https://")
_JSON = {"Content-Type": "application/json"}
#: Statuses of a server or proxy that may answer differently a moment later.
_TRANSIENT = frozenset({502, 503, 504})
#: The longest wait between two tries, whatever the backoff has doubled to.
_MAX_DELAY = 2.0


def is_server_url(target: object) -> bool:
    """Whether ``target`` names HiveMem servers (``http(s)://``) rather than a database."""
    return isinstance(target, str) and target.startswith(_SCHEMES)


def server_urls(url: object) -> builtins.list[str]:
    """The server roots in ``url``: one, or several comma-separated for failover.

    Raises:
        InvalidInput: ``url`` is not text, holds no URL, or one of its parts is
            not ``http(s)://`` (a database path or URL has no HTTP client).
    """
    if not isinstance(url, str):
        raise InvalidInput("url", "must be text: http(s):// server URLs, comma-separated")
    urls = [part.strip().rstrip("/") for part in url.split(",") if part.strip()]
    if not urls:
        raise InvalidInput("url", "needs at least one http(s):// server URL")
    for part in urls:
        if not is_server_url(part):
            raise InvalidInput("url", f"{part!r} is not an http(s):// server URL (a database opens with hivemem.open)")
    return urls


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
        """Refuse a call while the circuit is open.

        Raises:
            StorageUnavailable: With ``details["reason"] == "CircuitOpen"``.
        """
        if self.status()["state"] == "open":
            raise StorageUnavailable("the HiveMem server keeps failing; not calling it for now", reason="CircuitOpen")

    def succeeded(self) -> None:
        """Record an answer: the circuit closes."""
        self.reset()

    def failed(self) -> None:
        """Record a failure: the ``threshold``-th in a row opens the circuit."""
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = time.monotonic()


def binder(route: Route) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """How the Hive method ``route.name`` binds a call: positional and keyword arguments by name.

    The returned function raises TypeError for a call the Hive method itself
    would not accept, and merges ``**options`` into the names, as they travel.
    """
    parameters = inspect.signature(getattr(Hive, route.name))
    first, *_ = parameters.parameters  # self: the caller is the client, never sent

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = parameters.bind(None, *args, **kwargs)
        arguments: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if parameters.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif name != first:
                arguments[name] = value
        return arguments

    return bind


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One call as HTTP, sent unchanged on every try so that a write keeps its idempotency key."""

    method: str
    path: str
    params: dict[str, Any] | None
    content: bytes | None
    headers: dict[str, str]
    #: Seconds the server may hold the call before answering (a lock's ``wait``), on top of the timeout.
    held: float = 0.0


def request_for(route: Route, arguments: dict[str, Any], key: str | None = None) -> WireRequest:
    """The request that calls ``route`` with ``arguments`` (as :func:`binder` names them).

    A write carries ``key`` as its ``Idempotency-Key`` (a workflow step's write
    key, see :mod:`hivemem.workflows`), else a new random one.

    Raises:
        InvalidInput: A path argument is not non-empty text, or an argument
            cannot travel as JSON; nothing is sent.
    """
    path = route.path
    rest = dict(arguments)
    for name in route.path_params:
        # Checked as the Hive checks it: only then can it be written into a URL.
        value = identifier(rest.pop(name), "id" if name == "memory_id" else name)
        # Dots escaped too: a "." or ".." segment would be resolved away by URL normalization.
        path = path.replace(f"{{{name}}}", quote(value, safe="").replace(".", "%2E"))
    wire = arguments_to_wire(rest)
    wait = wire.get("wait")
    held = 0.0
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= MAX_WAIT:
        held = float(wait)  # only a wait the server accepts extends the timeout (it refuses the others)
    if route.in_query:
        defaults = _defaults(route.name)
        # None leaves out an argument whose default is None; for any other it is a bad value.
        params = {
            k: _query_value(k, v, defaults.get(k))
            for k, v in wire.items()
            if v is not None or defaults.get(k) is not None
        }
        # A DELETE (forget) is a write too: its retry, or a workflow step run again, deletes once.
        keyed = {"Idempotency-Key": key or uuid.uuid4().hex} if route.once else {}
        return WireRequest(route.method, path, params, None, keyed, held)
    # ASCII escapes carry any str (even a lone surrogate) for the server to judge.
    content = json.dumps(wire, separators=(",", ":")).encode()
    headers = {**_JSON, "Idempotency-Key": key or uuid.uuid4().hex} if route.once else _JSON
    return WireRequest(route.method, path, None, content, headers, held)


@functools.cache
def _defaults(method: str) -> dict[str, Any]:
    """The defaults of the Hive method's arguments (``inspect.Parameter.empty`` for a required one)."""
    return {p.name: p.default for p in inspect.signature(getattr(Hive, method)).parameters.values()}


def _query_value(name: str, value: Any, default: Any) -> str:
    """``value`` as query text, or InvalidInput for what the Hive would refuse but a query string would hide.

    Every query argument of the routes is text, or a flag (a bool default) sent
    as ``true``/``false``: anything else would arrive as text (``3`` as ``"3"``,
    a valid namespace), and text a URL cannot carry (a lone surrogate) is
    refused as the Hive refuses it.
    """
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidInput(name, "must be true or false", value=repr(value))
        return str(value).lower()
    if not isinstance(value, str):
        raise InvalidInput(name, "must be text", value=repr(value))
    return encodable(value, name)


def import_batches(memories: Iterable[Memory], batch_size: int) -> Iterator[dict[str, Any]]:
    """The arguments of each ``import_memories`` request: ``batch_size`` exported memories at a time.

    Raises:
        InvalidInput: ``batch_size`` is not a positive whole number, or an item
            is not a Memory record (the batches before it are already sent).
    """
    batch_size = positive_int(batch_size, "batch_size")
    batch: builtins.list[dict[str, Any]] = []
    for memory in memories:
        if not isinstance(memory, Memory):
            raise InvalidInput("memory", "must be a Memory record")
        batch.append(memory.to_dict())
        if len(batch) >= batch_size:
            yield {"memories": batch, "batch_size": batch_size}
            batch = []
    if batch:
        yield {"memories": batch, "batch_size": batch_size}


def error_from(response: httpx.Response) -> HiveError:
    """The HiveError a problem+json answer stands for: the server's class, code and details."""
    try:
        payload = response.json()
        return HiveError.from_dict(
            {"code": payload["code"], "message": payload["detail"], "details": payload.get("details") or {}}
        )
    except (ValueError, KeyError, TypeError):
        return HiveError(f"HTTP {response.status_code} from the server: {response.text[:200]}")


def result_of(route: Route, response: httpx.Response) -> Any:
    """What the Hive method returns, read from the server's final answer.

    Raises:
        HiveError: The subclass the server answered with.
    """
    if response.is_error:
        raise error_from(response)
    try:
        payload = response.json()
    except ValueError:
        raise HiveError(f"HTTP {response.status_code} from the server is not JSON: {response.text[:200]}") from None
    return route.decode(payload)


def sse_events(lines: Iterable[str]) -> Iterator[Event | None]:
    """Events from a server-sent event stream's lines; None for each heartbeat comment."""
    data: str | None = None
    for line in lines:
        if line.startswith(":"):
            yield None
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif not line and data is not None:
            yield Event.from_dict(json.loads(data))
            data = None


def stream_params(namespace: str, types: Sequence[str] | None, idle: float) -> dict[str, Any]:
    """The query of an event stream request (``since`` travels as ``Last-Event-ID``)."""
    params: dict[str, Any] = {"namespace": namespace, "idle": idle}
    if types is not None:
        params["types"] = ",".join(types)
    return params


class RemoteBase:
    """The servers an HTTP client calls and how it retries them; the base of both clients.

    Args:
        url: The server's root, e.g. ``http://127.0.0.1:8765``; several, comma-separated,
            for failover (``http://a:8765,http://b:8765``).
        api_key: The caller's key; the server derives who the caller is from it alone.
        timeout: Seconds per request.
        retries: Further tries of a call after a transient failure.
        backoff: First retry delay in seconds (doubling, with jitter, up to 2 s).
        breaker: Shared with other clients to stop them all calling a failing server.

    Attributes:
        urls: Every server root, in failover order.
        url: The server calls go to now; a failure moves it to the next one.
        breaker: The circuit breaker (``breaker.status()``, ``breaker.reset()``).
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
        self.urls = server_urls(url)
        self.url = self.urls[0]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput("retries", "must be a whole number, 0 or more", value=repr(retries))
        for name, value in (("timeout", timeout), ("backoff", backoff)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput(name, "must be a number of seconds, 0 or more", value=repr(value))
        self.retries = retries
        self.backoff = backoff
        self._timeout = timeout
        self.breaker = breaker or CircuitBreaker()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = self._connect()

    def _connect(self) -> Any:
        """The HTTP client the calls go through (blocking or async: the one thing the two clients differ in)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({','.join(self.urls)!r})"

    def _move_on_from(self, failed: str) -> None:
        """Send further calls to the server after ``failed``."""
        # Concurrent calls that failed on the same server move on once between
        # them, rather than each stepping the shared URL on (and maybe back).
        if self.url == failed:
            self.url = self.urls[(self.urls.index(failed) + 1) % len(self.urls)]


#: The options a server URL takes in hivemem.open and hivemem.open_async.
CLIENT_OPTIONS = frozenset(inspect.signature(RemoteBase).parameters) - {"url"}


def client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for a client, refused by name if a server URL does not take one.

    Raises:
        ConfigError: An option the clients do not have.
    """
    unknown = sorted(options.keys() - CLIENT_OPTIONS)
    if unknown:
        known = ", ".join(sorted(CLIENT_OPTIONS))
        raise ConfigError(f"unknown option {unknown[0]!r} for a HiveMem server URL (it takes {known})")
    return dict(options)


def retry_delay(backoff: float, failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: doubling from ``backoff``, capped, with jitter."""
    return min(_MAX_DELAY, backoff * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.5)


class Call:
    """One call to the servers: its request, where each try goes, and what each outcome means.

    The client sends :meth:`request` and hands the outcome to :meth:`settle`
    until it gets the final answer; only that sending and the waiting between
    tries differ between the blocking and the async client.

    Raises:
        InvalidInput: An argument cannot travel (see :func:`request_for`); nothing is sent.
        StorageUnavailable: The client is closed.
    """

    def __init__(
        self, remote: RemoteBase, http: httpx.Client | httpx.AsyncClient, route: Route, arguments: dict[str, Any]
    ) -> None:
        self.route = route
        # A workflow step's write takes the step's next key, so running the step again applies it once.
        self._step = current_step() if route.once else None
        self._wire = request_for(route, arguments, None if self._step is None else self._step.write_key())
        if http.is_closed:
            raise StorageUnavailable("this Hive is closed")
        self._remote = remote
        self._http = http
        self._server = remote.url
        self._failures = 0

    def answered(self) -> None:
        """The call succeeded: a workflow step's next write takes the next key."""
        if self._step is not None:
            self._step.wrote()

    def request(self) -> httpx.Request:
        """The next try, to the server calls go to now.

        Raises:
            StorageUnavailable: The circuit is open (reason ``CircuitOpen``).
        """
        self._remote.breaker.check()
        self._server = self._remote.url
        wire = self._wire
        timeout = self._remote._timeout + max(0.0, wire.held)
        return self._http.build_request(
            wire.method,
            self._server + wire.path,
            params=wire.params,
            content=wire.content,
            headers=wire.headers,
            timeout=timeout,
        )

    def settle(self, outcome: httpx.Response | httpx.TransportError) -> httpx.Response | float:
        """The final answer (pass it to :func:`result_of`), or the seconds to wait before the next try.

        A transport error or a 502/503/504 counts against the breaker and moves
        calls on to the next server; any other answer (errors included) is final.

        Raises:
            StorageUnavailable: That was the last try.
        """
        if isinstance(outcome, httpx.Response) and outcome.status_code not in _TRANSIENT:
            self._remote.breaker.succeeded()
            return outcome
        failure = outcome if isinstance(outcome, httpx.TransportError) else error_from(outcome)
        self._remote.breaker.failed()
        self._remote._move_on_from(self._server)
        self._failures += 1
        if self._failures > self._remote.retries:
            raise StorageUnavailable(f"the HiveMem server did not answer after {self._failures} tries: {failure}")
        return retry_delay(self._remote.backoff, self._failures)
