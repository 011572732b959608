"""HiveMem servers on loopback for tests: real uvicorn, real sockets, in this process.

:class:`LoopbackServer` serves any ASGI app (a HiveMem app, or a test proxy in
front of one) from a thread. The contract suite's ``http`` deployment is a
:class:`ServedHive`: an embedded Hive (the test's clock and embedder) served
through :func:`hivemem.server.create_app` and called with
:class:`hivemem.client.RemoteHive`, so every contract test crosses HTTP. The
async client's tests open :func:`hivemem.open_async` on a LoopbackServer's URL.
Tests of the ``hivemem serve`` process itself (keys, kill and restart) start it
with subprocess instead: :class:`ServeProcess`.
"""

from __future__ import annotations

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
from hivemem.cli import main
from hivemem.client import RemoteHive
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


class ServedHive(RemoteHive):
    """A RemoteHive that owns its in-process server and the Hive behind it."""

    def __init__(self, hive: hivemem.Hive, **app_options: Any) -> None:
        self.served = hive
        self.server = LoopbackServer.serving(hive, **app_options)
        super().__init__(self.server.url)
        # The served Hive's internals, for the few contract tests that look inside a deployment.
        self.store = hive.store
        self.embedder = hive.embedder

    def close(self) -> None:
        super().close()
        self.server.close()
        self.served.close()


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
