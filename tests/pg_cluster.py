"""Real PostgreSQL primary/standby pairs on loopback TCP, for replication and failover tests.

Servers are built from the PostgreSQL 16 binaries (with pgvector) inside the ``pgserver`` wheel. PostgreSQL
refuses to run as root, so as root every binary runs as the ``pgserver`` user, as pgserver itself does: the
user is created with ``useradd`` and the install and the data dirs' parents get go+rx. ``pgserver`` is found,
never imported: importing it warns when XDG_RUNTIME_DIR is unset, an error under ``filterwarnings = error``.
Each node's unix socket lives in its data dir and socket paths are limited to ~107 bytes: keep dirs short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

_PGSERVER = importlib.util.find_spec("pgserver")
assert _PGSERVER is not None and _PGSERVER.origin is not None, "pip install pgserver"
PG_BIN = Path(_PGSERVER.origin).parent / "pginstall" / "bin"
#: The OS account PostgreSQL runs as when we are root (the one pgserver uses).
OS_USER = "pgserver"
#: Seconds any wait in this module gives up after.
TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _open_to_others(path: Path) -> None:
    """chmod go+rx every parent of ``path`` so OS_USER can reach it (pgserver's ensure_prefix_permissions)."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o055)


@functools.cache
def _os_account() -> pwd.struct_passwd | None:
    """The account to run binaries as: None if we are not root, else OS_USER (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", OS_USER], check=True, capture_output=True)
    install = PG_BIN.parent
    _open_to_others(install)
    for path in [install, *install.rglob("*")]:  # a+rX, as pgserver's ensure_folder_permissions
        mode = path.stat().st_mode
        path.chmod(mode | 0o044 | (0o011 if path.is_dir() or mode & 0o100 else 0))
    return pwd.getpwnam(OS_USER)


def _run(*args: str) -> str:
    """Run a pginstall binary (as OS_USER when root); return stdout, raise with stderr on failure."""
    account = _os_account()
    as_user: dict[str, Any] = {}
    if account is not None:
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    command = [str(PG_BIN / args[0]), *args[1:]]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd="/", timeout=TIMEOUT, **as_user)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _own(path: Path, *, directory: bool) -> None:
    """Create ``path`` (mode 0700 dir or empty file), owned by the account PostgreSQL runs as."""
    if directory:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        path.touch()
    account = _os_account()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
        _open_to_others(path)


def _status(pid: int) -> str:
    """psutil status of ``pid`` or "gone"; "zombie" = dead but not yet reaped (this container's PID 1 takes ~2 s)."""
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return "gone"


def _wait(what: str, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (exceptions count as False) until it is true; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclasses.dataclass
class PgNode:
    """One PostgreSQL server: a data dir, a loopback port and a name (its replication application_name)."""

    data_dir: Path
    port: int
    name: str
    log_file: Path = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.log_file = self.data_dir.with_name(self.data_dir.name + ".log")
        socket_path = self.data_dir / f".s.PGSQL.{self.port}"
        if len(os.fsencode(socket_path)) > 100:
            raise ValueError(f"unix socket path too long (limit ~107 bytes), use a shorter data dir: {socket_path}")

    @classmethod
    def initdb(cls, data_dir: Path, port: int, name: str = "primary") -> PgNode:
        """Create (not start) a primary: trust auth for user postgres, ready to feed streaming standbys."""
        node = cls(data_dir, port, name)
        _own(node.data_dir, directory=True)
        _run("initdb", "-D", str(node.data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        node._configure(wal_level="replica", max_wal_senders="10", hot_standby="on")
        return node

    def _configure(self, **settings: str) -> None:
        """Append this node's own settings (and ``settings``) to postgresql.conf; later lines win."""
        own = {"listen_addresses": "127.0.0.1", "port": self.port, "unix_socket_directories": self.data_dir}
        lines = "".join(f"{key} = '{value}'\n" for key, value in {**own, "cluster_name": self.name, **settings}.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# pg_cluster.py\n{lines}")

    def postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid (stale after kill9), None if there is no such file."""
        with contextlib.suppress(FileNotFoundError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def is_running(self) -> bool:
        """True if the postmaster is alive."""
        pid = self.postmaster_pid()
        return pid is not None and _status(pid) not in {"zombie", "gone"}

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if (pid := self.postmaster_pid()) is not None:  # PostgreSQL won't start while a crashed one is a zombie
            _wait(f"crashed {self.name} to be reaped", lambda: _status(pid) != "zombie")
        _own(self.log_file, directory=False)
        _run("pg_ctl", "start", "-w", "-t", str(int(TIMEOUT)), "-D", str(self.data_dir), "-l", str(self.log_file))
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server with pg_ctl (mode: smart, fast or immediate) and wait until it is down."""
        _run("pg_ctl", "stop", "-w", "-t", str(int(TIMEOUT)), "-D", str(self.data_dir), "-m", mode)

    def kill9(self) -> None:
        """Crash the server: SIGKILL the postmaster and its children at once; return when all are dead.

        pg_ctl starts the postmaster in its own session, so its process group is the whole server.
        postmaster.pid stays behind, as after a real crash; start() recovers from it.
        """
        pid = self.postmaster_pid()
        assert pid is not None, f"{self.name} is not running"
        pids = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
        os.killpg(pid, signal.SIGKILL)
        _wait(f"{self.name} to die", lambda: all(_status(each) in {"zombie", "gone"} for each in pids))

    def promote(self) -> None:
        """Promote this standby to a primary; returns once it accepts writes."""
        _run("pg_ctl", "promote", "-w", "-t", str(int(TIMEOUT)), "-D", str(self.data_dir))
        _wait(f"{self.name} to leave recovery", lambda: not self.is_in_recovery())

    def url(self, dbname: str = "postgres") -> str:
        """libpq URL reaching this node over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def query(self, statement: str | sql.Composable, params: Any = None, dbname: str = "postgres") -> list[Any]:
        """Run one statement in autocommit mode; return its rows ([] if it returns none)."""
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def is_in_recovery(self) -> bool:
        """True while the node is a standby."""
        return bool(self.query("SELECT pg_is_in_recovery()")[0][0])

    def wait_ready(self) -> None:
        """Wait until the node answers queries over TCP."""
        _wait(f"{self.name} to accept connections", lambda: self.query("SELECT 1") == [(1,)])


def _replication_state(primary: PgNode, standby_name: str) -> tuple[str, str]:
    """(state, sync_state) of ``standby_name`` in the primary's pg_stat_replication, ("", "") if absent."""
    query = "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s"
    rows = primary.query(query, (standby_name,))
    return (rows[0][0], rows[0][1]) if rows else ("", "")


def make_standby(primary: PgNode, data_dir: Path, port: int, name: str = "standby") -> PgNode:
    """Clone ``primary`` with pg_basebackup -R, start the clone as a hot standby and wait until it streams."""
    node = PgNode(data_dir, port, name)
    _own(node.data_dir, directory=True)
    conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={name}"
    _run("pg_basebackup", "-D", str(node.data_dir), "-d", conninfo, "-R", "-X", "stream", "-c", "fast", "--no-sync")
    node._configure()  # the copied postgresql.conf carries the primary's port and socket dir
    node.start()
    try:
        _wait(f"{name} to stream from {primary.name}", lambda: _replication_state(primary, name)[0] == "streaming")
    except BaseException:
        with contextlib.suppress(Exception):
            node.stop("immediate")
        raise
    return node


def make_synchronous(primary: PgNode, standby_name: str) -> None:
    """Make commits on ``primary`` wait until ``standby_name`` has flushed them; wait until it is sync.

    ALTER SYSTEM writes postgresql.auto.conf, which standbys cloned later inherit (and obey once promoted).
    """
    names = sql.Literal(f'"{standby_name}"')
    primary.query(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(names))
    primary.query("SELECT pg_reload_conf()")
    _wait(f"{standby_name} to be synchronous", lambda: _replication_state(primary, standby_name)[1] == "sync")


def wait_replayed(primary: PgNode, standby: PgNode) -> None:
    """Wait until ``standby`` has replayed all WAL written on ``primary`` so far.

    A synchronous commit waits for the standby's flush, not its replay: reads there can briefly lag it.
    """
    lsn = primary.query("SELECT pg_current_wal_lsn()")[0][0]
    replayed = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
    _wait(f"{standby.name} to replay {lsn}", lambda: standby.query(replayed, (lsn,))[0][0])


def pause_replay(standby: PgNode) -> None:
    """Stop applying WAL on ``standby`` (it still receives and flushes it); returns once paused."""
    standby.query("SELECT pg_wal_replay_pause()")
    _wait(f"{standby.name} to pause", lambda: standby.query("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused")


def resume_replay(standby: PgNode) -> None:
    """Resume applying WAL on ``standby``."""
    standby.query("SELECT pg_wal_replay_resume()")


def create_database(node: PgNode, name: str) -> None:
    """CREATE DATABASE ``name`` on ``node`` (a primary)."""
    node.query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def create_vector_extension(node: PgNode, dbname: str = "postgres") -> None:
    """Install pgvector in ``dbname`` on ``node`` (a primary)."""
    node.query("CREATE EXTENSION IF NOT EXISTS vector", dbname=dbname)


@contextlib.contextmanager
def primary_and_standby(base_dir: Path | None = None, *, synchronous: bool = True) -> Iterator[tuple[PgNode, PgNode]]:
    """A running primary and streaming standby ("standby", synchronous unless told otherwise), torn down at exit.

    Data dirs go in ``base_dir``/primary and ``base_dir``/standby; without ``base_dir`` a short temporary
    dir is used and deleted afterwards. Teardown stops (mode immediate, else kill -9) running nodes, ignoring errors.
    """
    own_dir = base_dir is None
    base = Path(tempfile.mkdtemp(prefix="pg")) if base_dir is None else Path(base_dir)
    nodes: list[PgNode] = []
    try:
        primary = PgNode.initdb(base / "primary", free_port())
        nodes.append(primary)
        primary.start()
        standby = make_standby(primary, base / "standby", free_port())
        nodes.append(standby)
        if synchronous:
            make_synchronous(primary, standby.name)
        yield primary, standby
    finally:
        for node in filter(PgNode.is_running, nodes):
            try:
                node.stop("immediate")  # "fast" waits for a promoted node's spread checkpoint (~2 s)
            except Exception:
                with contextlib.suppress(Exception):
                    node.kill9()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
