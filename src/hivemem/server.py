"""The HiveMem HTTP server: every Hive method as a REST route (FastAPI), secure by default.

``create_app(config)`` builds the application; ``hivemem serve`` runs it under
uvicorn. Several servers may share one PostgreSQL: they keep no state of their
own besides a short cache of API keys.

Every request but ``/healthz`` and ``/readyz`` needs an API key (``Authorization:
Bearer <key>`` or ``X-API-Key``). The key decides who the caller is; nothing in
a body or query can. The call then runs on the Hive as that principal sees it
(:meth:`hivemem.Hive.as_principal`), so the grants apply inside the same code
an embedded caller uses. Every failure is ``application/problem+json``:
``{"type", "title", "status", "detail", "code", "details"}`` with the stable
``code`` of a :class:`hivemem.HiveError`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import hivemem
from hivemem import __version__, validation
from hivemem.config import HiveConfig
from hivemem.errors import (
    ConfigError,
    Forbidden,
    HiveError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
    Unauthenticated,
)
from hivemem.hive import Hive
from hivemem.models import Memory
from hivemem.openapi import PROBLEM, Operation, document, problem_responses
from hivemem.wire import EVENT_STREAM, ROUTES, from_wire, to_json
from hivemem.workflows import import_modules, is_step_key

log = logging.getLogger("hivemem.server")
#: Bodies larger than this are refused before they are read whole.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
_TITLES = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large"}


def problem(error: HiveError, status: int | None = None) -> Response:
    """The one error shape (``status`` overrides the error's own, for routing errors)."""
    status = status or error.status
    body = {
        "type": f"https://hivemem.dev/errors/{error.code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": error.message,
        "code": error.code,
        "details": error.details,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(_dumps(body).encode(), status_code=status, media_type=PROBLEM, headers=headers)


class AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped, as all of the server's answers are.

    A string in stored JSON (a step's result, metadata) or an error quoting the
    caller may hold a lone surrogate, which UTF-8 cannot carry; its escape can.
    """

    def render(self, content: Any) -> bytes:
        return _dumps(content).encode()


class _Keys:
    """API key -> the Hive as the key's principal sees it, cached for ``ttl`` seconds.

    Revocation reaches every server within ``ttl``. The views are cached, not
    only the principals: a view is immutable, and making one per request costs
    a copy of the Hive.
    """

    def __init__(self, hive: Hive, ttl: float) -> None:
        self._hive = hive
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Hive]] = {}
        self._lock = threading.Lock()

    def view(self, key: str) -> Hive:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        view = self._hive.as_principal(self._hive.authenticate(key))
        if self._ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now, view)
        return view


def _credential(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <API key>'")
        return token.strip()
    key = request.headers.get("x-api-key")
    if key is None:
        raise Unauthenticated("an API key is required (Authorization: Bearer <key>)")
    return key


def create_app(
    config: HiveConfig | None = None,
    *,
    hive: Hive | None = None,
    auth: bool = True,
    key_cache_seconds: float = 5.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    workflow_modules: Sequence[str] = (),
) -> FastAPI:
    """The HiveMem application.

    Args:
        config: What to open (``config.url``) when ``hive`` is not given.
        hive: An open Hive to serve (the caller closes it); else one is opened
            from ``config`` at startup and closed at shutdown.
        auth: False serves every request as ``admin:*`` without a key; only
            for a server that listens on loopback (``hivemem serve`` enforces it).
        key_cache_seconds: How long a checked API key is trusted before it is
            looked up again (a revoked key works at most this long).
        max_body_bytes: Larger request bodies get 413 before they are read.
        workflow_modules: Modules that register workflows (:mod:`hivemem.workflows`),
            imported now; their unfinished runs are resumed at startup, in a
            background thread, one executor per run however many servers start.
    """
    state: dict[str, Any] = {}
    recovered = import_modules(workflow_modules) if workflow_modules else []

    def caller(request: Request) -> Hive:
        if not auth:
            served: Hive = state["hive"]
            return served
        keys: _Keys = state["keys"]
        return keys.view(_credential(request))

    mcp = _McpEndpoint.create(caller, auth)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        opened = hive is None
        state["hive"] = hive if hive is not None else hivemem.open((config or HiveConfig()).url, config=config)
        state["keys"] = _Keys(state["hive"], key_cache_seconds)
        if recovered:
            threading.Thread(target=_recover, args=(state["hive"], recovered), daemon=True).start()
        try:
            async with mcp.running() if mcp is not None else nullcontext():
                yield
        finally:
            if opened:
                state["hive"].close()

    operations = [Operation.of(route) for route in ROUTES]
    app = _HiveApp(
        operations,
        auth,
        title="HiveMem",
        version=__version__,
        summary="Shared, durable memory for teams of AI agents",
        lifespan=lifespan,
    )

    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    app.add_middleware(_RawPath)
    metrics = _Metrics()
    app.add_middleware(_Measured, metrics=metrics)

    @app.exception_handler(HiveError)
    async def hive_error(_: Request, exc: HiveError) -> Response:
        return problem(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return problem(InvalidInput(field, str(first.get("msg", "invalid request"))))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        error = NotFound(str(exc.detail)) if exc.status_code == 404 else HiveError(str(exc.detail))
        return problem(error, exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error", exc_info=exc)
        return problem(HiveError("internal server error"))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        try:
            state["hive"].store.read(lambda tx: tx.api_keys("-"))
        except HiveError as exc:
            return problem(exc)
        return AsciiJSON({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        hive = caller(request)
        if hive.principal.prefixes("admin") is not None:
            raise Forbidden("metrics need admin on every namespace (admin:*)")
        return Response(metrics.render(hive.stats()), media_type=CONTENT_TYPE_LATEST)

    for operation in operations:
        _add_route(app, operation, caller)
    if mcp is not None:
        app.router.routes.append(
            StarletteRoute("/mcp", mcp, methods=["GET", "POST", "DELETE"], include_in_schema=False)
        )

    # Left out of the OpenAPI document: a stream that never ends is no request/response
    # operation (see the README); the events route pages the same events.
    @app.get(EVENT_STREAM, include_in_schema=False)
    def event_stream(
        request: Request, namespace: str, since: int = 0, types: str | None = None, idle: float = 5.0
    ) -> Response:
        hive = caller(request)
        resume = request.headers.get("last-event-id")
        if resume is not None:
            if not resume.isdigit():
                raise InvalidInput("Last-Event-ID", "must be an event's sequence number")
            since = int(resume)
        wanted = types.split(",") if types else None
        hive.events(namespace, since=since, limit=1, types=wanted)  # bad arguments fail here, not mid-stream
        return StreamingResponse(_sse(hive, namespace, since, wanted, idle), media_type="text/event-stream")

    @app.get(
        "/v1/export",
        summary="Every visible memory under a prefix, as JSON lines",
        response_class=StreamingResponse,
        responses=_EXPORT_RESPONSES,
    )
    def export(request: Request, namespace: str | None = None) -> Response:
        _single_values(request)
        memories = caller(request).export(namespace)  # reads the first page: a bad namespace is a 422, not a cut stream
        lines = (f"{_dumps(m.to_dict())}\n" for m in memories)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    return app


class _Metrics:
    """Prometheus metrics of one server process (each server of a fleet is scraped on its own)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hivemem_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hivemem_http_request_seconds",
            "Time to answer a request, by route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.memories = Gauge(
            "hivemem_memories", "Live memories by kind and tier", ["kind", "tier"], registry=self.registry
        )

    def render(self, stats: dict[str, Any]) -> bytes:
        """The exposition text, with memory counts read now."""
        self.memories.clear()
        for group, label in (("by_kind", "kind"), ("by_tier", "tier")):
            for name, slot in stats[group].items():
                labels = {"kind": "", "tier": ""} | {label: name}
                self.memories.labels(**labels).set(slot["memories"])
        return generate_latest(self.registry)


class _Measured:
    """Counts and times every request by its route template (never the raw path, whose ids are unbounded)."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


class _McpEndpoint:
    """The MCP tools over streamable HTTP at ``/mcp``, for the agent each request's API key names.

    Stateless (every POST stands alone, answered as JSON), so any server of a
    fleet can take any request. The key is checked here, before the MCP
    transport sees the request; the tools then find the agent in the request's
    state (:func:`hivemem.mcp_server.from_request`).
    """

    def __init__(
        self,
        transport: ASGIApp,
        running: Callable[[], AbstractAsyncContextManager[None]],
        caller: Callable[[Request], Hive],
    ) -> None:
        self.transport = transport
        self.running = running
        self.caller = caller

    @classmethod
    def create(cls, caller: Callable[[Request], Hive], auth: bool) -> _McpEndpoint | None:
        """The endpoint, or None when the ``mcp`` extra is not installed."""
        try:
            from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
            from mcp.server.transport_security import TransportSecuritySettings

            from hivemem.mcp_server import build_server, from_request
        except ImportError:
            return None
        server = build_server(from_request)
        # Without auth (loopback only) the SDK's DNS-rebinding guard keeps web pages out;
        # with auth a page has no key, and the guard would refuse every real host name.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False) if auth else None
        server.streamable_http_app(stateless_http=True, json_response=True, transport_security=security)
        return cls(StreamableHTTPASGIApp(server.session_manager), server.session_manager.run, caller)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from hivemem.mcp_server import AGENT_STATE, http_agent

        request = Request(scope)
        try:
            agent = http_agent(self.caller(request), request)
        except HiveError as exc:
            await problem(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})[AGENT_STATE] = agent
        await self.transport(scope, receive, send)


class _RawPath:
    """Routes by the path as sent, so an escaped ``/`` (``%2F``) in an id or a group name stays in its segment.

    ASGI servers decode the path before routing, which would make ``a%2Fb`` two
    segments; each route argument is unescaped once by its endpoint instead
    (:func:`_path_arguments`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            scope["path"] = raw.decode("latin-1")  # in place: _Measured reads the matched route from this scope
        await self.app(scope, receive, send)


class _BodyLimit:
    """413 for a body over ``limit`` bytes: by Content-Length before reading, else while reading.

    Plain ASGI, not a BaseHTTPMiddleware, which would cost every request a task switch.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"the body is over {self.limit} bytes", limit=self.limit)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await problem(too_large)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_large  # answered by the HiveError handler
            return message

        await self.app(scope, counted, send)


class _HiveApp(FastAPI):
    """FastAPI whose OpenAPI document also holds the record and problem schemas the routes refer to."""

    def __init__(self, operations: list[Operation], auth: bool, **options: Any) -> None:
        super().__init__(**options)
        self._operations = operations
        self._auth = auth

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, made on first use."""
        if self.openapi_schema is None:
            self.openapi_schema = document(super().openapi(), self._operations, auth=self._auth)
        return self.openapi_schema


_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One memory (Memory.to_dict()) per line, oldest first",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    },
    **problem_responses([InvalidInput, Forbidden, StorageUnavailable]),
}


def _add_route(app: FastAPI, operation: Operation, caller: Callable[[Request], Hive]) -> None:
    route = operation.route

    async def endpoint(request: Request) -> AsciiJSON:
        arguments = _path_arguments(request)
        if route.in_query:
            arguments |= _query_arguments(request, operation)
        else:
            body = await _json_object(request)
            for name in route.path_params:
                body.pop(name, None)  # the path names the target, not the body
            arguments |= body
        hive = caller(request)
        call = _bind(getattr(hive, route.name), operation, from_wire(arguments))
        key = request.headers.get("idempotency-key")
        if key is not None and route.once:
            # A retried write gets the first answer back and is not applied again. The key
            # counts only with the same request: reused for another one, it applies that one.
            checked = validation.optional_id(key, "Idempotency-Key") or ""
            # A workflow step's write key names one write of one run: a repeat replays it whatever its body.
            scoped = checked if is_step_key(checked) else _request_key(checked, request, await request.body())
            replayable = await run_in_threadpool(lambda: hive.run_once(scoped, lambda _: call(), to_json))
            return AsciiJSON(replayable, route.status)
        return AsciiJSON(to_json(await run_in_threadpool(call)), status_code=route.status)

    endpoint.__name__ = route.name
    app.add_api_route(
        route.path,
        endpoint,
        methods=[route.method],
        summary=operation.summary,
        description=operation.description,
        status_code=route.status,
        name=route.name,
        openapi_extra=operation.openapi(),
    )


def _path_arguments(request: Request) -> dict[str, Any]:
    """The route's path arguments, unescaped (see :class:`_RawPath`)."""
    out: dict[str, Any] = {}
    for name, value in request.path_params.items():
        try:
            out[name] = unquote_to_bytes(value.encode("latin-1")).decode("utf-8")
        except UnicodeError:
            raise InvalidInput(name, "must be UTF-8 text, percent-escaped") from None
    return out


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object of the method's arguments")
    return body


def _single_values(request: Request) -> None:
    """Refuse a query string naming an argument twice (it would silently take one of the values)."""
    names = [name for name, _ in request.query_params.multi_items()]
    for name in names:
        if names.count(name) > 1:
            raise InvalidInput(name, "is given more than once")


def _query_arguments(request: Request, operation: Operation) -> dict[str, Any]:
    _single_values(request)
    out: dict[str, Any] = {}
    for name, value in request.query_params.items():
        if name in operation.flags:
            if value.lower() not in ("true", "false"):
                raise InvalidInput(name, "must be true or false")
            out[name] = value.lower() == "true"
        else:
            out[name] = value
    return out


def _bind(method: Callable[..., Any], operation: Operation, arguments: dict[str, Any]) -> Any:
    """``method`` with ``arguments`` bound by name, or InvalidInput naming the bad one."""
    for name in operation.required:
        if name not in arguments:
            raise InvalidInput(name, "is required")
    if not operation.takes_options:
        unknown = sorted(arguments.keys() - operation.known)
        if unknown:
            raise InvalidInput(unknown[0], "unknown argument")
    if operation.route.name == "import_memories":
        arguments["memories"] = _memories(arguments.get("memories"))
    return lambda: method(**arguments)


def _memories(value: Any) -> list[Memory]:
    if not isinstance(value, list):
        raise InvalidInput("memories", "must be a list of memories (Memory.to_dict())")
    try:
        return [Memory.from_dict(item) for item in value]
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise InvalidInput("memories", f"not a memory record: {exc}") from None


def _sse(hive: Hive, namespace: str, since: int, types: list[str] | None, idle: float) -> Iterator[str]:
    """The event stream; a comment line after each ``idle`` seconds without events keeps proxies from closing it."""
    for event in hive.follow(namespace, since=since, types=types, idle=idle):
        if event is None:
            yield ": idle\n\n"
        else:
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {_dumps(event.to_dict())}\n\n"


def _request_key(key: str, request: Request, body: bytes) -> str:
    """The idempotency key of this request: the client's key bound to its method, path, query and body."""
    digest = hashlib.sha256()
    # From the scope as received: request.url would assemble (and parse) the whole URL on every write.
    scope = request.scope
    for part in (scope["method"].encode(), scope["path"].encode("utf-8", "surrogatepass"), scope["query_string"]):
        digest.update(part + b"\0")
    digest.update(key.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _dumps(value: Any) -> str:
    """Compact JSON in ASCII (lone surrogates become escapes, not an encoding error)."""
    return json.dumps(value, separators=(",", ":"))


def check_listen(host: str, auth: bool) -> None:
    """Refuse to serve without authentication anywhere but loopback.

    Raises:
        ConfigError: ``auth`` is off and ``host`` is not a loopback address.
    """
    if auth:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"refusing to listen on {host} with authentication off: use 127.0.0.1 or turn auth on")


def _recover(hive: Hive, names: Sequence[str]) -> None:
    """Resume the unfinished runs of the served workflows (a server's startup task)."""
    try:
        counts = hive.recover(names)
    except HiveError as exc:
        log.error("resuming workflows failed: %s", exc.message)
        return
    log.warning("workflows resumed at startup: %s", counts)


def serve(
    config: HiveConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    auth: bool = True,
    key_cache_seconds: float = 5.0,
    hive: Hive | None = None,
    workflow_modules: Sequence[str] = (),
) -> None:
    """Run the server in this process until interrupted (``hivemem serve``).

    Args:
        config: What to open; see :func:`create_app`.
        host: Address to listen on.
        port: Port to listen on.
        auth: False serves without API keys (only on loopback).
        key_cache_seconds: How long a checked API key is trusted.
        hive: An open Hive to serve instead of opening ``config.url`` (for an
            embedder or clock no config names); the caller closes it.
        workflow_modules: Modules to import first: the workflows they register
            are resumed at startup.

    Raises:
        ConfigError: ``auth`` is off and ``host`` is not a loopback address.
    """
    import uvicorn

    check_listen(host, auth)
    app = create_app(
        config, hive=hive, auth=auth, key_cache_seconds=key_cache_seconds, workflow_modules=workflow_modules
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
