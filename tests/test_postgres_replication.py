"""Read scaling and failover through PostgreSQL itself: a primary and a synchronous streaming
replica on loopback (initdb, pg_basebackup), reads sent to the replica with ``read_url``, the
primary killed with SIGKILL, the replica promoted, and writes resuming through a multi-host URL
with no acknowledged write lost.
"""

from __future__ import annotations

import pytest

import hivemem
from fakes import HashEmbedder
from hivemem import NotFound
from pg_cluster import (
    create_database,
    create_vector_extension,
    pause_replay,
    primary_and_standby,
    resume_replay,
    wait_replayed,
)


def _url(ports: list[int], attrs: str) -> str:
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return f"postgresql://postgres@{hosts}/hive?target_session_attrs={attrs}&connect_timeout=3"


@pytest.mark.slow
def test_replica_serves_reads_and_writes_resume_after_failover() -> None:
    with primary_and_standby(synchronous=True) as (primary, standby):
        create_database(primary, "hive")
        create_vector_extension(primary, "hive")
        # Else the replica may not have the database yet and libpq falls back to the primary for reads.
        wait_replayed(primary, standby)
        writes = _url([primary.port, standby.port], "read-write")
        reads = _url([standby.port, primary.port], "prefer-standby")
        embedder = HashEmbedder()
        with (
            hivemem.open(writes, read_url=reads, embedder=embedder, pool_size=2, busy_timeout_ms=60_000) as hive,
            hivemem.open(writes, embedder=embedder, pool_size=1) as on_primary,
        ):
            first = hive.remember("ops/a", "the api deploy went fine")
            wait_replayed(primary, standby)
            assert hive.get(first.id) == first

            # Reads come from the replica: with its replay paused, a new write is
            # acknowledged (the standby flushed it) but not yet visible there.
            pause_replay(standby)
            second = hive.remember("ops/a", "the database migration needed a lock timeout")
            with pytest.raises(NotFound):
                hive.get(second.id)
            assert on_primary.get(second.id) == second
            resume_replay(standby)
            wait_replayed(primary, standby)
            assert hive.get(second.id) == second

            acknowledged = [first, second]
            acknowledged += hive.remember_many(
                [{"namespace": "ops/b", "content": f"rollout step {i} finished"} for i in range(50)]
            )
            acknowledged += [hive.remember("ops/b", f"single write {i}", key=f"k{i}") for i in range(20)]

            primary.kill9()
            standby.promote()

            after = hive.remember("ops/a", "written after the failover")
            assert not standby.is_in_recovery()
            for memory in [*acknowledged, after]:
                assert hive.get(memory.id) == memory
            assert hive.stats()["memories"] == len(acknowledged) + 1
            assert first.id in {h.memory.id for h in hive.recall("api deploy", namespace="ops/a")}
