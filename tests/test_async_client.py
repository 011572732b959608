"""The async client against a real server on loopback: same results and errors as the sync client.

Each test serves an embedded Hive (SQLite file, manual clock, HashEmbedder)
with uvicorn on a free port and drives :func:`hivemem.open_async` with
``asyncio.run``; the sync client on the same server is the reference. Lost
answers come from a real proxy in front of the server, dead servers from
ports nothing listens on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import hivemem
from conftest import START
from fakes import HashEmbedder
from hivemem.client import CircuitBreaker
from http_server import LoopbackServer, free_port


class Served:
    """An embedded Hive behind a loopback server, with a sync client on it for reference."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.hive = hivemem.open(str(directory / "hive.db"), embedder=HashEmbedder(), clock=hivemem.ManualClock(START))
        self.server = LoopbackServer.serving(self.hive, auth=False)
        self.url = self.server.url
        self.sync = hivemem.open(self.url)

    def close(self) -> None:
        self.sync.close()
        self.server.close()
        self.hive.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = Served(tmp_path / "main")
    yield running
    running.close()


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_every_kind_of_call_gives_what_the_sync_client_gives(served: Served) -> None:
    sync = served.sync

    async def scenario() -> None:
        async with hivemem.open_async(served.url) as hive:
            first = await hive.remember(
                "team/notes", "the deploy finished at noon", tags=["deploy"], key="deploy", data={"ok": True}
            )
            assert first == sync.get(first.id) == await hive.get(first.id)
            assert await hive.get_by_key("team/notes", "deploy") == sync.get_by_key("team/notes", "deploy")
            batch = await hive.remember_many(
                [{"namespace": "team/notes", "content": f"rollback drill {i}"} for i in range(3)]
            )
            assert batch == [sync.get(m.id) for m in batch]
            updated = await hive.update(first.id, content="the deploy finished at one", expected_version=1)
            assert (updated.version, updated) == (2, sync.get(first.id))
            assert await hive.history(first.id) == sync.history(first.id)
            assert await hive.recall("deploy finished", k=5) == sync.recall("deploy finished", k=5)
            page = await hive.list("team", limit=2)
            assert page == sync.list("team", limit=2)
            assert await hive.list("team", limit=2, cursor=page.next_cursor) == sync.list(
                "team", limit=2, cursor=page.next_cursor
            )
            relation = await hive.relate(batch[0].id, first.id, "about")
            assert await hive.related(batch[0].id) == sync.related(batch[0].id)
            assert relation == sync.related(batch[0].id)[0].relation
            group = await hive.create_group("ops", "on call")
            assert (group.name, group.description) == ("ops", "on call")
            assert await hive.add_to_group(first.id, "ops") is None
            assert await hive.group_members("ops") == sync.group_members("ops") == [updated]
            assert await hive.stats("team") == sync.stats("team")
            assert await hive.forget(batch[2].id) == 1
            with pytest.raises(hivemem.NotFound):
                sync.get(batch[2].id)
            assert await hive.forget_namespace("team/notes") == 3
            assert sync.stats() == await hive.stats()

    asyncio.run(scenario())
    assert served.hive.stats()["memories"] == 0


def test_import_memories_moves_every_field_in_batches(served: Served, tmp_path: Path) -> None:
    exported = [served.sync.remember("team", f"fact {i}", importance=0.1 * i) for i in range(5)]
    target = Served(tmp_path / "target")
    try:

        async def scenario() -> int:
            async with hivemem.open_async(target.url) as hive:
                return await hive.import_memories(iter(exported), batch_size=2)

        assert asyncio.run(scenario()) == 5
        assert list(target.sync.export("team")) == exported
    finally:
        target.close()


def _outcome(call: Callable[[], Any]) -> tuple[type[BaseException], str, str, dict[str, Any]]:
    with pytest.raises(hivemem.HiveError) as info:
        call()
    error = info.value
    return type(error), error.code, error.message, error.details


async def _async_outcome(call: Callable[[], Awaitable[Any]]) -> tuple[type[BaseException], str, str, dict[str, Any]]:
    with pytest.raises(hivemem.HiveError) as info:
        await call()
    error = info.value
    return type(error), error.code, error.message, error.details


def test_errors_are_the_sync_clients_classes_codes_and_details(served: Served) -> None:
    stored = served.sync.remember("team", "the original text")
    cases: list[tuple[str, tuple[Any, ...], dict[str, Any], type[hivemem.HiveError]]] = [
        ("get", ("no-such-id",), {}, hivemem.NotFound),
        ("get", ("",), {}, hivemem.InvalidInput),  # refused before anything is sent
        ("remember", ("team", ""), {}, hivemem.InvalidInput),
        ("remember", ("team", "x"), {"data": {"at": datetime.now(UTC)}}, hivemem.InvalidInput),
        ("remember", ("team", "x"), {"colour": "red"}, hivemem.InvalidInput),
        ("remember", ("team", "x"), {"self": "an option like any other"}, hivemem.InvalidInput),
        ("recall", ("x",), {"k": 100_000}, hivemem.InvalidInput),
        ("update", (stored.id,), {"content": "changed", "expected_version": 7}, hivemem.VersionConflict),
        ("update", ("no-such-id",), {"content": "changed"}, hivemem.NotFound),
        ("import_memories", ([stored],), {"batch_size": 0}, hivemem.InvalidInput),
    ]

    async def scenario() -> None:
        async with hivemem.open_async(served.url) as hive:
            for name, args, kwargs, expected in cases:
                sync = _outcome(lambda: getattr(served.sync, name)(*args, **kwargs))  # noqa: B023
                remote = await _async_outcome(lambda: getattr(hive, name)(*args, **kwargs))  # noqa: B023
                assert remote == sync, name
                assert remote[0] is expected, (name, remote)

    asyncio.run(scenario())
    conflict = _outcome(lambda: served.sync.update(stored.id, content="x", expected_version=7))
    assert conflict[3]["current_version"] == 1
    assert served.hive.get(stored.id) == stored  # no failed call changed anything


def test_fifty_concurrent_remembers_are_each_stored_once(served: Served) -> None:
    async def scenario() -> list[hivemem.Memory]:
        async with hivemem.open_async(served.url) as hive:
            return await asyncio.gather(*(hive.remember("team/log", f"event number {i}") for i in range(50)))

    written = asyncio.run(scenario())
    assert len({m.id for m in written}) == 50
    stored = sorted(m.content for m in served.hive.export("team/log"))
    assert stored == sorted(f"event number {i}" for i in range(50))


class LosingProxy:
    """A proxy that applies every request on the server but loses the first ``lose`` write answers.

    A lost answer comes back as 502, as from a load balancer whose upstream
    went away after committing; :attr:`keys` records each write's
    ``Idempotency-Key`` in arrival order.
    """

    def __init__(self, upstream: str, lose: int) -> None:
        self.upstream = upstream
        self.lose = lose
        self.keys: list[str] = []
        self.server = LoopbackServer(Starlette(routes=[Route("/{path:path}", self._forward, methods=["POST"])]))
        self.url = self.server.url

    async def _forward(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient() as upstream:
            answer = await upstream.post(
                f"{self.upstream}{request.url.path}", content=await request.body(), headers=headers
            )
        key = request.headers.get("idempotency-key")
        if key is not None:
            self.keys.append(key)
            if len(self.keys) <= self.lose:
                return Response("upstream went away", status_code=502)
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))


def test_a_write_whose_answer_is_lost_is_retried_with_its_key_and_applied_once(served: Served) -> None:
    proxy = LosingProxy(served.url, lose=2)
    try:

        async def scenario() -> tuple[hivemem.Memory, dict[str, Any]]:
            async with hivemem.open_async(proxy.url, backoff=0.01) as hive:
                return await hive.remember("team", "applied exactly once"), hive.breaker.status()

        memory, breaker = asyncio.run(scenario())
    finally:
        proxy.server.close()
    assert len(proxy.keys) == 3 and len(set(proxy.keys)) == 1  # three tries, one key
    assert breaker == {"state": "closed", "consecutive_failures": 0}
    assert [m.id for m in served.hive.export("team")] == [memory.id]
    assert served.hive.get(memory.id) == memory


def test_a_dead_server_is_failed_over_and_counted_by_the_breaker(served: Served) -> None:
    dead = _dead_url()

    async def scenario() -> None:
        async with hivemem.open_async(f"{dead},{served.url}", retries=0) as hive:
            with pytest.raises(hivemem.StorageUnavailable) as info:
                await hive.remember("team", "the dead server never saw this")
            assert "reason" not in info.value.details
            assert hive.breaker.status() == {"state": "closed", "consecutive_failures": 1}
            assert hive.url == served.url  # the next call goes to the live one
            await hive.remember("team", "through the second server")
            assert hive.breaker.status()["consecutive_failures"] == 0
        async with hivemem.open_async(f"{dead},{served.url}", backoff=0.01) as hive:
            await hive.remember("team", "retried onto the second server")

    asyncio.run(scenario())
    assert sorted(m.content for m in served.hive.export("team")) == [
        "retried onto the second server",
        "through the second server",
    ]


def test_concurrent_calls_failing_on_one_dead_server_all_move_to_the_next(served: Served) -> None:
    async def scenario() -> list[hivemem.Memory]:
        async with hivemem.open_async(f"{_dead_url()},{served.url}", retries=1, backoff=0.01) as hive:
            hive.breaker.threshold = 1000  # this test is about failover, not the breaker
            return await asyncio.gather(*(hive.remember("team", f"write {i}") for i in range(20)))

    assert len(asyncio.run(scenario())) == 20
    assert served.hive.stats()["memories"] == 20


def test_the_breaker_opens_after_threshold_failures_then_lets_one_call_through() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=1.0)

    async def scenario() -> None:
        async with hivemem.open_async(f"{_dead_url()},{_dead_url()}", retries=0, breaker=breaker) as hive:
            for failures in range(1, 4):
                with pytest.raises(hivemem.StorageUnavailable) as info:
                    await hive.get("anything")
                assert "reason" not in info.value.details
                assert hive.breaker.status()["consecutive_failures"] == failures
            assert hive.breaker.status() == {"state": "open", "consecutive_failures": 3}
            with pytest.raises(hivemem.StorageUnavailable) as info:
                await hive.stats()
            assert info.value.details["reason"] == "CircuitOpen"  # refused without calling anyone
            await asyncio.sleep(1.05)
            assert hive.breaker.status()["state"] == "half_open"
            with pytest.raises(hivemem.StorageUnavailable) as info:
                await hive.stats()  # let through, fails, reopens
            assert "reason" not in info.value.details
            assert hive.breaker.status() == {"state": "open", "consecutive_failures": 4}
            hive.breaker.reset()
            assert hive.breaker.status() == {"state": "closed", "consecutive_failures": 0}

    asyncio.run(scenario())


def test_open_async_takes_only_server_urls_and_known_options(tmp_path: Path) -> None:
    for target in (str(tmp_path / "hive.db"), ":memory:", "sqlite:///x.db", "postgresql://db/hive", "http://a,b.db"):
        with pytest.raises(hivemem.InvalidInput) as info:
            hivemem.open_async(target)
        assert info.value.field == "url"
    with pytest.raises(hivemem.ConfigError, match="unknown option 'embedder'"):
        hivemem.open_async("http://127.0.0.1:1", embedder=None)
    with pytest.raises(hivemem.InvalidInput) as bad:
        hivemem.open_async("http://127.0.0.1:1", retries=-1)
    assert bad.value.field == "retries"
    assert not (tmp_path / "hive.db").exists()


def test_a_closed_client_refuses_calls(served: Served) -> None:
    async def scenario() -> None:
        async with hivemem.open_async(served.url) as hive:
            await hive.stats()
        with pytest.raises(hivemem.StorageUnavailable, match="closed"):
            await hive.stats()

    asyncio.run(scenario())


def test_plans_and_agents_over_the_async_client(served: Served) -> None:
    sync = served.sync
    tasks = [{"id": "a", "description": "migrate orders schema"}, {"id": "b", "description": "y", "depends_on": ["a"]}]

    async def scenario() -> None:
        async with hivemem.open_async(served.url) as hive:
            plan = await hive.create_plan("team", tasks, plan_id="p")
            assert plan == sync.plan("p", namespace="team") == await hive.plan("p", namespace="team")
            claims = await asyncio.gather(
                *(hive.assign_task("p", "a", f"agent-{i}", namespace="team") for i in range(4)), return_exceptions=True
            )
            assert sum(isinstance(c, hivemem.InvalidTransition) for c in claims) == 3
            assert await hive.plans("team") == sync.plans("team")
            moved = await hive.transition_task("p", "a", "pending", namespace="team")
            assert moved == sync.plan("p", namespace="team").task("a")
            await hive.register_agent("team", "dba", specializations=["database"])
            outcome = await hive.record_outcome("dba", "migrate orders schema", namespace="team", success=True)
            assert outcome.profile == (await hive.agents("team"))[0] == sync.agents("team")[0]
            ranking = await hive.select_agent("migrate orders schema", namespace="team")
            assert ranking == sync.select_agent("migrate orders schema", namespace="team")
            context = await hive.context_for("dba", "migrate orders schema", token_budget=100)
            assert context == sync.context_for("dba", "migrate orders schema", token_budget=100)
            assert context.memory_ids == (outcome.episode.id,)

    asyncio.run(scenario())
