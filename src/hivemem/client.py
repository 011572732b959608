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
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from hivemem.access import ApiKey, Principal
from hivemem.errors import ConfigError, HiveError, InvalidInput, StorageUnavailable
from hivemem.hive import Hive
from hivemem.models import Memory
from hivemem.wire import ROUTES, Route, arguments_to_wire

_JSON = {"Content-Type": "application/json"}
_KEYS_ON_DATABASE = ConfigError("API keys are managed on the database itself: hivemem --db URL keys create|list|revoke")


class RemoteHive(Hive):
    """A Hive over HTTP.

    Args:
        url: The server's root, e.g. ``http://127.0.0.1:8765``.
        api_key: The caller's key; the server derives who the caller is from it alone.
        timeout: Seconds per request.
    """

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteHive({self.url!r})"

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

    def import_memories(self, memories: Iterable[Memory], *, batch_size: int = 500) -> int:
        """Store exported memories exactly as they were, ``batch_size`` per request."""
        total = 0
        batch: builtins.list[Memory] = []
        for memory in memories:
            if not isinstance(memory, Memory):
                raise InvalidInput("memory", "must be a Memory record")
            batch.append(memory)
            if len(batch) >= batch_size:
                total += self._send(_IMPORT, {"memories": batch, "batch_size": batch_size})
                batch = []
        if batch:
            total += self._send(_IMPORT, {"memories": batch, "batch_size": batch_size})
        return total

    def _send(self, route: Route, arguments: dict[str, Any]) -> Any:
        path = route.path
        for name in route.path_params:
            value = arguments.pop(name)
            if not isinstance(value, str) or not value:
                raise InvalidInput("id" if name == "memory_id" else name, "must be a non-empty string")
            path = path.replace(f"{{{name}}}", quote(value, safe=""))
        if self._http.is_closed:
            raise StorageUnavailable("this Hive is closed")
        wire = arguments_to_wire(arguments)
        try:
            if route.in_query:
                params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in wire.items() if v is not None}
                response = self._http.request(route.method, path, params=params)
            else:
                # ASCII escapes carry any str (even a lone surrogate) for the server to judge.
                body = json.dumps(wire, separators=(",", ":")).encode()
                response = self._http.request(route.method, path, content=body, headers=_JSON)
        except httpx.TransportError as exc:
            raise StorageUnavailable(f"cannot reach the HiveMem server at {self.url}: {exc}") from exc
        if response.is_error:
            raise _error(response)
        return route.decode(response.json())


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
_IMPORT = next(r for r in ROUTES if r.name == "import_memories")
