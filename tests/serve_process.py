"""Real HiveMem server processes for the contract suite's ``http`` deployment.

Run as ``python tests/serve_process.py``: this process imports the server once
(seconds of work) and then forks one server process per request (milliseconds),
so that each test's hive is its own ``hivemem serve`` process without paying
the imports every time. A child opens its SQLite file with the test's clock
(a :class:`fakes.SharedClock`) and embedder (a :class:`fakes.HashEmbedder`
that logs to a file the test reads), then runs :func:`hivemem.server.serve`,
the function ``hivemem serve`` runs, on a loopback port without API keys.

Commands come as JSON lines on stdin and are answered as JSON lines on stdout:

- ``{"serve": spec}`` -> ``{"pid": n}``; ``spec`` holds ``db``, ``port``,
  ``clock`` (the clock's file), ``embedder`` (null or ``{"name", "dim", "log"}``),
  ``options`` (``hivemem.open`` options), ``log`` (the child's output) and
  ``outcome`` (a file the child writes when it stops: ``{"error": ...}`` for
  a HiveError, else ``{"exit": code}``; there before the port listens, it
  means the server could not start).
- ``{"stop": pid}`` -> ``{"stopping": pid}``: the child gets SIGTERM and shuts
  down on its own (uvicorn's graceful stop, then the hive closes).

End of input stops every child still running and waits for them all.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hivemem
import hivemem.mcp_server  # imported before forking, like the rest of the server
import hivemem.server
from fakes import HashEmbedder, SharedClock
from hivemem.errors import HiveError

#: Seconds a child has to shut down after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def _serve(spec: dict[str, Any]) -> None:
    """The child: open the hive and serve it until SIGTERM."""
    chosen = spec["embedder"]
    embedder = None if chosen is None else HashEmbedder(chosen["name"], chosen["dim"], _path(chosen["log"]))
    clock = SharedClock(Path(spec["clock"]))
    outcome: dict[str, Any] = {"exit": 1}
    try:
        with hivemem.open(spec["db"], embedder=embedder, clock=clock, **spec["options"]) as hive:
            hivemem.server.serve(hive.config, port=spec["port"], auth=False, hive=hive)
        outcome = {"exit": 0}
    except HiveError as exc:
        outcome = {"error": exc.to_dict()}
    except SystemExit as exc:  # uvicorn's way to say it could not start
        outcome = {"exit": exc.code}
    finally:
        written = Path(spec["outcome"] + ".part")
        written.write_text(json.dumps(outcome))
        written.replace(spec["outcome"])  # whole, or not there yet, for the test polling it


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _fork(spec: dict[str, Any]) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        with open(spec["log"], "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        # uvicorn stops on SIGTERM, then raises it again: exit cleanly then, closing the hive.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        _serve(spec)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(0)  # never back into the command loop


def _stop_all(pids: set[int]) -> None:
    """Wait for ``pids`` to exit, killing those that take longer than STOP_TIMEOUT."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while pids:
        _reap(pids)
        if time.monotonic() > deadline:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return
        time.sleep(0.01)


def _reap(pids: set[int]) -> None:
    """Forget the children in ``pids`` that have exited."""
    for pid in list(pids):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            pids.discard(pid)


def main() -> None:
    running: set[int] = set()
    stopping: set[int] = set()
    answers = sys.stdout
    for line in sys.stdin:
        command = json.loads(line)
        if "serve" in command:
            pid = _fork(command["serve"])
            running.add(pid)
            answer: dict[str, Any] = {"pid": pid}
        else:
            pid = command["stop"]
            os.kill(pid, signal.SIGTERM)  # the test goes on while the server shuts down
            running.discard(pid)
            stopping.add(pid)
            answer = {"stopping": pid}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
        _reap(stopping)
    for pid in running:
        os.kill(pid, signal.SIGTERM)
    _stop_all(running | stopping)


if __name__ == "__main__":
    main()
