"""The async HTTP client: the Hive's served methods as coroutines, for asyncio programs.

``hivemem.open_async("http://host:8765", api_key=...)`` returns an
:class:`AsyncRemoteHive`. Each of its routed methods is the Hive method of the
same name (same signature, same docstring, same result, same HiveError
classes) as an ``async def``. Requests, retries, failover, idempotency keys and
the circuit breaker are :mod:`hivemem.protocol`'s, shared with the blocking
:class:`hivemem.client.RemoteHive`; this module holds only the asyncio I/O.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from hivemem.hive import Hive
from hivemem.models import Memory
from hivemem.protocol import Call, RemoteBase, binder, import_batches, result_of
from hivemem.wire import ROUTES_BY_NAME, Route

P = ParamSpec("P")
R = TypeVar("R")


def _routed(
    method: Callable[Concatenate[Hive, P], R],
) -> Callable[Concatenate[AsyncRemoteHive, P], Coroutine[Any, Any, R]]:
    """The Hive method ``method`` as a coroutine that sends its arguments to the server.

    Typed from the Hive method itself, so a type checker sees each async
    method's parameters and awaited result exactly as the Hive declares them.
    """
    route = ROUTES_BY_NAME[method.__name__]
    bind = binder(route)

    async def call(self: AsyncRemoteHive, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._send(route, bind(args, kwargs))
        return result

    functools.update_wrapper(call, method)
    return call


class AsyncRemoteHive(RemoteBase):
    """The Hive's served methods over HTTP, as coroutines.

    Use it as an async context manager (or ``await hive.close()``); one
    instance serves any number of concurrent calls. Writes carry an
    ``Idempotency-Key`` (one per call, the same on every retry), so a retried
    write is applied once. Transport failures and 502/503/504 are retried with
    exponential backoff and jitter, moving to the next server URL each time;
    :attr:`breaker` stops calls to servers that keep failing.

    Args:
        url: The server's root, e.g. ``http://127.0.0.1:8765``; several, comma-separated,
            for failover (``http://a:8765,http://b:8765``).
        api_key: The caller's key; the server derives who the caller is from it alone.
        timeout: Seconds per request.
        retries: Further tries of a call after a transient failure.
        backoff: First retry delay in seconds (doubling, with jitter, up to 2 s).
        breaker: Shared with other clients to stop them all calling a failing server.
    """

    _http: httpx.AsyncClient

    def _connect(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self._headers, timeout=self._timeout)

    async def __aenter__(self) -> AsyncRemoteHive:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections; later calls raise StorageUnavailable."""
        await self._http.aclose()

    async def import_memories(self, memories: Iterable[Memory], *, batch_size: int = 500) -> int:
        """Store exported memories exactly as they were, ``batch_size`` per request (one transaction each).

        Returns:
            How many memories were stored.

        Raises:
            InvalidInput: A record is malformed; the batch holding it is not written.
        """
        route = ROUTES_BY_NAME["import_memories"]
        total = 0
        for arguments in import_batches(memories, batch_size):
            stored: int = await self._send(route, arguments)
            total += stored
        return total

    async def _send(self, route: Route, arguments: dict[str, Any]) -> Any:
        call = Call(self, self._http, route, arguments)
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.send(call.request())
            except httpx.TransportError as exc:
                outcome = exc
            settled = call.settle(outcome)
            if isinstance(settled, httpx.Response):
                result = result_of(route, settled)
                call.answered()
                return result
            await asyncio.sleep(settled)

    # Every route of hivemem.wire.ROUTES but import_memories (above); a test keeps the list complete.
    remember = _routed(Hive.remember)
    remember_many = _routed(Hive.remember_many)
    list = _routed(Hive.list)
    get = _routed(Hive.get)
    update = _routed(Hive.update)
    forget = _routed(Hive.forget)
    history = _routed(Hive.history)
    reinforce = _routed(Hive.reinforce)
    related = _routed(Hive.related)
    children = _routed(Hive.children)
    get_by_key = _routed(Hive.get_by_key)
    recall = _routed(Hive.recall)
    stats = _routed(Hive.stats)
    forget_namespace = _routed(Hive.forget_namespace)
    sweep = _routed(Hive.sweep)
    remember_episode = _routed(Hive.remember_episode)
    upsert_entity = _routed(Hive.upsert_entity)
    add_rule = _routed(Hive.add_rule)
    relate = _routed(Hive.relate)
    create_group = _routed(Hive.create_group)
    add_to_group = _routed(Hive.add_to_group)
    group_members = _routed(Hive.group_members)
    lock = _routed(Hive.lock)
    renew_lease = _routed(Hive.renew_lease)
    release_lease = _routed(Hive.release_lease)
    locks = _routed(Hive.locks)
    events = _routed(Hive.events)
    send = _routed(Hive.send)
    inbox_messages = _routed(Hive.inbox_messages)
    ack = _routed(Hive.ack)
    set_conflict_strategy = _routed(Hive.set_conflict_strategy)
    get_conflict_strategy = _routed(Hive.get_conflict_strategy)
    conflicts = _routed(Hive.conflicts)
    create_plan = _routed(Hive.create_plan)
    plans = _routed(Hive.plans)
    plan = _routed(Hive.plan)
    transition_task = _routed(Hive.transition_task)
    assign_task = _routed(Hive.assign_task)
    register_agent = _routed(Hive.register_agent)
    agents = _routed(Hive.agents)
    record_outcome = _routed(Hive.record_outcome)
    select_agent = _routed(Hive.select_agent)
    context_for = _routed(Hive.context_for)
    working_append = _routed(Hive.working_append)
    working_messages = _routed(Hive.working_messages)
    working_clear = _routed(Hive.working_clear)
    working_flush = _routed(Hive.working_flush)
    working_stats = _routed(Hive.working_stats)
    pack = _routed(Hive.pack)
    start_workflow = _routed(Hive.start_workflow)
    workflows = _routed(Hive.workflows)
    get_workflow = _routed(Hive.get_workflow)
    record_steps = _routed(Hive.record_steps)
    finish_workflow = _routed(Hive.finish_workflow)
    cancel_workflow = _routed(Hive.cancel_workflow)
