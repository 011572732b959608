"""Shared fixtures: every contract test runs once per deployment in DEPLOYMENTS.

A test that needs more than the Hive API marks it with the capabilities it
needs, ``@pytest.mark.requires("durable")``; it is skipped, with the reason, on
deployments without them (see CAPABILITIES).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

import hivemem
from fakes import HashEmbedder, SharedClock

#: The fixed instant every test's manual clock starts at (2023-11-14T22:13:20Z).
START = 1_700_000_000.0


class Factory(Protocol):
    """Opens a Hive of one deployment.

    ``directory`` belongs to this hive: calling the factory again with the same
    directory must reach the same data (for durable deployments), a different
    directory must give an empty hive. ``options`` are ``hivemem.open`` options
    such as ``max_content_bytes``.
    """

    def __call__(
        self, directory: Path, clock: hivemem.ManualClock, embedder: hivemem.Embedder | None, **options: Any
    ) -> hivemem.Hive: ...


def _sqlite_file(
    directory: Path, clock: hivemem.ManualClock, embedder: hivemem.Embedder | None, **options: Any
) -> hivemem.Hive:
    return hivemem.open(str(directory / "hive.db"), embedder=embedder, clock=clock, **options)


def _sqlite_memory(
    directory: Path, clock: hivemem.ManualClock, embedder: hivemem.Embedder | None, **options: Any
) -> hivemem.Hive:
    return hivemem.open(":memory:", embedder=embedder, clock=clock, **options)


def _postgres(
    directory: Path, clock: hivemem.ManualClock, embedder: hivemem.Embedder | None, **options: Any
) -> hivemem.Hive:
    from pg_server import schema_url

    return hivemem.open(schema_url(directory), embedder=embedder, clock=clock, pool_size=4, **options)


def _http(
    directory: Path, clock: hivemem.ManualClock, embedder: hivemem.Embedder | None, **options: Any
) -> hivemem.Hive:
    from http_server import ForkedServerHive

    assert isinstance(clock, SharedClock), "a server process shares the test's clock through its file"
    assert embedder is None or isinstance(embedder, HashEmbedder), "a server process embeds with a HashEmbedder"
    return ForkedServerHive(directory, clock, embedder, **options)


#: What a test may need beyond the Hive API, and why a deployment may lack it.
CAPABILITIES = {
    "durable": "close and reopen reaches the same data (an in-memory database is gone)",
    "store": "the Hive's store in the test's process (over HTTP it is in the server)",
}


@dataclass(frozen=True)
class Deployment:
    """How to open a deployment, and which CAPABILITIES it has."""

    open: Factory
    capabilities: frozenset[str]


#: Every deployment the contract runs on, by test id. A new deployment is one
#: more entry here: a factory(directory, clock, embedder, **options) -> Hive and
#: its capabilities. Factories that need an unavailable service should call
#: pytest.skip() with the reason.
DEPLOYMENTS: dict[str, Deployment] = {
    "sqlite-file": Deployment(_sqlite_file, frozenset({"durable", "store"})),
    "sqlite-memory": Deployment(_sqlite_memory, frozenset({"store"})),
    "postgres": Deployment(_postgres, frozenset({"durable", "store"})),
    "http": Deployment(_http, frozenset({"durable"})),
}

#: Marks "use the test's shared embedder" in open_hive (None means keyword-only).
SHARED: Any = object()


@pytest.fixture
def clock(tmp_path: Path) -> hivemem.ManualClock:
    """A clock frozen at START that moves only when a test advances it (also in a server process)."""
    return SharedClock(tmp_path / "clock", START)


@pytest.fixture
def embedder(tmp_path: Path) -> HashEmbedder:
    """A fresh deterministic embedder; its ``texts_embedded`` (starting empty) include a server process's."""
    return HashEmbedder(log=tmp_path / "embedded.jsonl")


@pytest.fixture(params=list(DEPLOYMENTS), ids=list(DEPLOYMENTS))
def deployment(request: pytest.FixtureRequest) -> str:
    """The name of the deployment under test; skips the test if it lacks a capability the test requires."""
    name: str = request.param
    for marker in request.node.iter_markers("requires"):
        for capability in marker.args:
            if capability not in DEPLOYMENTS[name].capabilities:
                pytest.skip(f"{name} lacks {capability!r}: {CAPABILITIES[capability]}")
    return name


@pytest.fixture
def capabilities(deployment: str) -> frozenset[str]:
    """What the deployment under test can do beyond the Hive API (CAPABILITIES)."""
    return DEPLOYMENTS[deployment].capabilities


OpenHive = Callable[..., hivemem.Hive]


@pytest.fixture
def open_hive(
    deployment: str, tmp_path: Path, clock: hivemem.ManualClock, embedder: HashEmbedder
) -> Iterator[OpenHive]:
    """Open (more) hives of the deployment under test; all are closed at teardown.

    Call as ``open_hive(slot="main", embedder=SHARED, **options)``: the same slot
    reaches the same data again on a durable deployment (close and reopen),
    another slot is a separate, empty hive. Every hive shares the test's clock.
    """
    factory = DEPLOYMENTS[deployment].open
    opened: list[hivemem.Hive] = []

    def _open(slot: str = "main", *, embedder: Any = SHARED, **options: Any) -> hivemem.Hive:
        directory = tmp_path / slot
        directory.mkdir(exist_ok=True)
        chosen = shared_embedder if embedder is SHARED else embedder
        hive = factory(directory, clock, chosen, **options)
        opened.append(hive)
        return hive

    shared_embedder = embedder
    yield _open
    for hive in reversed(opened):
        hive.close()


@pytest.fixture
def hive(open_hive: OpenHive) -> hivemem.Hive:
    """A fresh, empty hive of the deployment under test, with the manual clock and HashEmbedder."""
    return open_hive()


@pytest.fixture(params=["sqlite-file", "postgres", "http"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A target that other processes can open: a SQLite file, a PostgreSQL schema, or a `hivemem serve` URL."""
    if request.param == "sqlite-file":
        yield str(tmp_path / "shared.db")
    elif request.param == "postgres":
        from pg_server import schema_url

        yield schema_url(tmp_path)
    else:
        from http_server import ServeProcess

        server = ServeProcess(tmp_path / "served.db", "--no-auth")
        yield server.url
        server.stop()
