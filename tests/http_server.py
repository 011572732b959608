"""HiveMem servers on loopback for tests: real uvicorn, real sockets, in this process.

:class:`LoopbackServer` serves any ASGI app (a HiveMem app, or a test proxy in
front of one) from a thread. The contract suite's ``http`` deployment is a
:class:`ServedHive`: an embedded Hive (the test's clock and embedder) served
through :func:`hivemem.server.create_app` and called with
:class:`hivemem.client.RemoteHive`, so every contract test crosses HTTP. The
async client's tests open :func:`hivemem.open_async` on a LoopbackServer's URL.
Tests of the ``hivemem serve`` process itself (keys, kill and restart) start it
with subprocess instead.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp

import hivemem
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
