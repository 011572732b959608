"""HiveMem servers on loopback for tests: real uvicorn, real sockets.

The contract suite's ``http`` deployment is a :class:`ForkedServerHive`: a
:class:`hivemem.client.RemoteHive` of its own server process, forked by
``tests/serve_process.py`` with the test's clock and embedder, so every contract
test crosses HTTP to a real, separate server. Tests of the ``hivemem serve``
command itself (keys, kill and restart) and of several processes sharing one
server start it with subprocess: :class:`ServeProcess`. :class:`LoopbackServer`
serves any ASGI app (a HiveMem app, or a test proxy in front of one) from a
thread of the test's process, for tests that need the served Hive at hand: the
async client's and the schemathesis run.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from click.testing import CliRunner
from starlette.types import ASGIApp

import hivemem
from fakes import HashEmbedder, SharedClock
from hivemem.cli import main
from hivemem.client import RemoteHive
from hivemem.errors import HiveError
from hivemem.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LoopbackServer:
    """``app`` served by uvicorn on a free loopback port until :meth:`close`."""

    def __init__(self, app: ASGIApp) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name=f"hivemem-http-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    @classmethod
    def serving(cls, hive: hivemem.Hive, **app_options: Any) -> LoopbackServer:
        """A HiveMem server for ``hive`` (``app_options`` are :func:`create_app`'s)."""
        return cls(create_app(hive=hive, **app_options))

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


SERVER_START_TIMEOUT = 30.0


def cli_json(db: Path, *args: str) -> Any:
    """Run the real CLI on ``db`` with ``--json`` and return its parsed output."""
    result = CliRunner().invoke(main, ["--db", str(db), "--embedder", "none", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def create_key(db: Path, principal: str, *grants: str) -> str:
    """A new API key for ``principal`` with ``grants``, made by ``hivemem keys create``."""
    args = [arg for grant in grants for arg in ("--grant", grant)]
    created = cli_json(db, "keys", "create", "--principal", principal, *args)
    assert created["principal"] == principal
    key: str = created["key"]
    return key


class ServeProcess:
    """A `python -m hivemem serve` process on a free loopback port (keyword-only, ``HIVEMEM_EMBEDDER=none``)."""

    def __init__(self, db: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HIVEMEM_EMBEDDER": "none"}
        command = [sys.executable, "-m", "hivemem", "--db", str(db), "serve", "--port", str(self.port), *extra]
        self.log = db.with_suffix(f".{self.port}.log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("the server did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ServerForker:
    """``tests/serve_process.py``: the process that forks the ``http`` deployment's servers (one per test run)."""

    def __init__(self) -> None:
        # One BLAS thread: the forker must not hold threads when it forks.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        script = Path(__file__).with_name("serve_process.py")
        self._process = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._lock = threading.Lock()

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one command and return its answer (see ``serve_process.py``)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps(command) + "\n")
            self._process.stdin.flush()
            answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the server forker exited with {self._process.wait()}")
        reply: dict[str, Any] = json.loads(answer)
        return reply

    def close(self) -> None:
        """Stop the forker and every server it still runs."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)
        self._process.stdout.close()


@functools.cache
def server_forker() -> ServerForker:
    """The test run's forker, started on first use (its imports take seconds)."""
    forker = ServerForker()
    atexit.register(forker.close)
    return forker


class ForkedServerHive(RemoteHive):
    """A RemoteHive of its own HiveMem server process on ``directory``'s ``hive.db``, stopped by :meth:`close`.

    The server shares the test's ``clock`` and embedder: its HashEmbedder logs to
    the same file as ``embedder`` (when ``embedder`` has a log), so
    ``embedder.texts_embedded`` holds what the server embedded. ``options`` are
    ``hivemem.open`` options for the server's Hive.

    Raises:
        HiveError: The server could not open the hive (the same class and code
            as ``hivemem.open`` raises).
    """

    def __init__(self, directory: Path, clock: SharedClock, embedder: HashEmbedder | None, **options: Any) -> None:
        port = free_port()
        self._outcome = directory / f"server.{port}.outcome"
        self._log = directory / f"server.{port}.log"
        spec = {
            "db": str(directory / "hive.db"),
            "port": port,
            "clock": str(clock.path),
            "embedder": None
            if embedder is None
            else {"name": embedder.name, "dim": embedder.dim, "log": embedder.log and str(embedder.log)},
            "options": options,
            "log": str(self._log),
            "outcome": str(self._outcome),
        }
        self._pid: int | None = server_forker().ask({"serve": spec})["pid"]
        self._await_listening(port)
        super().__init__(f"http://127.0.0.1:{port}")
        #: What the server embeds with (the server's own copy of it).
        self.embedder = embedder

    def _await_listening(self, port: int) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self._outcome.exists():
                self._stop()
                outcome = json.loads(self._outcome.read_text())
                if "error" in outcome:
                    raise HiveError.from_dict(outcome["error"])
                raise AssertionError(f"the server stopped ({outcome}): {self._log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return  # uvicorn listens once the app has started
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._stop()
                raise AssertionError(f"the server did not come up: {self._log.read_text()}")
            time.sleep(0.005)

    def _stop(self) -> None:
        if self._pid is not None:
            server_forker().ask({"stop": self._pid})
            self._pid = None

    def close(self) -> None:
        """Close the connections and stop the server."""
        super().close()
        self._stop()
