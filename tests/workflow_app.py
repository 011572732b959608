"""Workflows that other test processes import: kill -9 children, concurrent recoverers, `hivemem serve`.

Each step logs its execution to the file named by ``HIVEMEM_TEST_STEP_LOG``
(one O_APPEND write per line, so concurrent processes never interleave a line)
and makes two HiveMem writes; the tests count both.
"""

from __future__ import annotations

import os
import time
from typing import Any

import hivemem
from hivemem.workflows import current_step

NAMESPACE = "team-a/wf"
#: Short leases: a killed executor's run is free to resume this soon.
LEASE_TTL = 0.15
#: Runs the kill test makes at most (one workflows() listing counts them).
MAX_RUNS = 900


def _log(line: str) -> None:
    path = os.environ.get("HIVEMEM_TEST_STEP_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@hivemem.step("test.write_twice")
def write_twice(hive: hivemem.Hive, run: int, number: int) -> list[str]:
    """Two writes with a pause between them, so a kill can land after the first."""
    context = current_step()
    assert context is not None and context.step == number
    _log(f"{run} {number} {context.idempotency_key}")
    first = hive.remember(NAMESPACE, f"run {run} step {number} a", data={"run": run, "step": number, "part": "a"})
    time.sleep(0.002)
    second = hive.remember(NAMESPACE, f"run {run} step {number} b", data={"run": run, "step": number, "part": "b"})
    return [first.id, second.id]


@hivemem.workflow("test.five_steps", namespace=NAMESPACE, lease_ttl=LEASE_TTL, wait=30)
def five_steps(hive: hivemem.Hive, run: int) -> list[Any]:
    """Five steps of two writes each; returns every memory id written."""
    return [write_twice(hive, run, number) for number in range(1, 6)]


@hivemem.workflow("test.five_steps_async", namespace=NAMESPACE, lease_ttl=LEASE_TTL, wait=30, durability="async")
def five_steps_async(hive: hivemem.Hive, run: int) -> list[Any]:
    """The same with checkpoints committed in the background, in groups."""
    return [write_twice(hive, run, number) for number in range(1, 6)]


@hivemem.workflow("test.five_steps_steady", namespace=NAMESPACE, lease_ttl=10, wait=30)
def five_steps_steady(hive: hivemem.Hive, run: int) -> list[Any]:
    """The same with a lease no busy machine lets lapse: a live executor is never taken over."""
    return [write_twice(hive, run, number) for number in range(1, 6)]


def recover_until_done(hive: hivemem.Hive) -> None:
    """Resume unfinished runs until none is left (waiting out a killed executor's lease)."""
    while True:
        counts = hive.recover(["test.five_steps", "test.five_steps_async"])
        if counts["held"] == 0:
            return
        time.sleep(0.02)


def churn(target: str, log: str, final: bool, ready: Any = None) -> None:
    """Resume what a killed predecessor left, then run new runs (run-k, k = runs so far) until killed.

    ``ready`` is set once the Hive is open: the killer's random delay counts from there.
    """
    os.environ["HIVEMEM_TEST_STEP_LOG"] = log
    with hivemem.open(target, embedder=None) as hive:
        if ready is not None:
            ready.set()
        recover_until_done(hive)
        if final:
            return
        run = len(hive.workflows(namespace=NAMESPACE, limit=1000))
        while run < MAX_RUNS:  # even runs check each step's checkpoint before the next step, odd ones in the background
            (five_steps if run % 2 == 0 else five_steps_async).with_id(f"run-{run}")(hive, run)
            run += 1
        time.sleep(3600)  # enough runs for one listing (limit 1000) to count them: wait to be killed


def recoverer(target: str, log: str, start: Any) -> None:
    """Call recover() once, as soon as ``start`` is set (two of these race)."""
    os.environ["HIVEMEM_TEST_STEP_LOG"] = log
    with hivemem.open(target, embedder=None) as hive:
        start.wait(timeout=60)
        hive.recover(["test.five_steps_steady"])
