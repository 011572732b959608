"""Time and identifiers.

HiveMem takes the current time from an injectable :class:`Clock` and new ids
from :func:`new_id`, so tests can control both and every backend agrees on
what "now" and "newer" mean.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Source of the current time as Unix seconds (UTC)."""

    def now(self) -> float:
        """Current time in seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        """Current wall-clock time in seconds since the epoch."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to; for tests and simulations.

    Args:
        start: Initial time in seconds since the epoch.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """The time last set."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now += seconds


def to_datetime(ts: float | None) -> datetime | None:
    """Unix seconds to an aware UTC datetime (None stays None)."""
    return None if ts is None else utc(ts)


def utc(ts: float) -> datetime:
    """Unix seconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ts, tz=UTC)


def to_timestamp(value: datetime) -> float:
    """An aware datetime to Unix seconds."""
    return value.timestamp()


_id_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """A new time-ordered id (UUIDv7 layout, RFC 9562).

    Ids made by one process sort in creation order: within one millisecond a
    12-bit counter (seeded randomly) keeps them increasing.

    Returns:
        The id as a canonical 36-character UUID string.
    """
    global _last_ms, _counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
        else:
            _counter += 1
            if _counter > 0xFFF:
                # Counter exhausted inside one millisecond: borrow the next one.
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
