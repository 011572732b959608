"""One PostgreSQL with pgvector for the whole test run, and a fresh schema per hive.

``HIVEMEM_TEST_POSTGRES_URL`` points the tests at an existing server (it needs
pgvector and a role that may create schemas); otherwise the PyPI package
``pgserver`` starts a private PostgreSQL 16 with pgvector in a temporary
directory, once, on first use. Each test directory gets its own schema in
that database (``search_path`` set through the URL), so hives never see each
other and reopening a directory reaches the same data.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import tempfile
import threading
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

_lock = threading.Lock()
_server: dict[str, Any] = {}


def server_url() -> str:
    """URL of the test server's database, starting the server on first use (skips the test if impossible)."""
    with _lock:
        if "url" not in _server:
            _server["url"] = _start()
        url: str = _server["url"]
        return url


def _start() -> str:
    url = os.environ.get("HIVEMEM_TEST_POSTGRES_URL")
    if not url:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (CI machines, containers).
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError:
            pytest.skip("PostgreSQL tests need pgserver (pip install pgserver) or HIVEMEM_TEST_POSTGRES_URL")
        directory = tempfile.mkdtemp(prefix="hivemem-pg-")
        server = pgserver.get_server(directory, cleanup_mode="delete")
        atexit.register(server.cleanup)
        url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def with_options(url: str, **params: str) -> str:
    """``url`` with query parameters added (libpq URL syntax)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def schema_url(directory: Path) -> str:
    """A URL whose tables live in a schema of their own, named after ``directory`` (created if missing)."""
    base = server_url()
    schema = "t_" + hashlib.sha1(str(directory).encode()).hexdigest()[:20]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    return with_options(base, options=f"-csearch_path={schema},public")
