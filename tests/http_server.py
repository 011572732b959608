"""A HiveMem server on loopback for tests: real uvicorn, real sockets, in this process.

The contract suite's ``http`` deployment serves an embedded Hive (the test's
clock and embedder) through :func:`hivemem.server.create_app` and talks to it
with :class:`hivemem.client.RemoteHive`, so every contract test crosses HTTP.
Tests of the ``hivemem serve`` process itself (keys, kill and restart) start
it with subprocess instead.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

import hivemem
from hivemem.client import RemoteHive
from hivemem.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServedHive(RemoteHive):
    """A RemoteHive that owns its in-process server and the Hive behind it."""

    def __init__(self, hive: hivemem.Hive, **app_options: Any) -> None:
        self.served = hive
        port = free_port()
        config = uvicorn.Config(create_app(hive=hive, **app_options), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"hivemem-http-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        super().__init__(f"http://127.0.0.1:{port}")
        # The served Hive's internals, for the few contract tests that look inside a deployment.
        self.store = hive.store
        self.embedder = hive.embedder

    def close(self) -> None:
        super().close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.served.close()
