"""Storage backends and the factory that opens one from a URL.

Drivers are imported lazily, so the embedded deployment never needs the
PostgreSQL driver and vice versa.
"""

from __future__ import annotations

from types import ModuleType

from hivemem.config import HiveConfig
from hivemem.errors import ConfigError
from hivemem.storage.base import Store


def _backend(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``: the backend a target names.

    Raises:
        ConfigError: The URL names no backend HiveMem has.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "sqlite"):
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ConfigError(
        f"no backend for {scheme}:// URLs (use a file path, sqlite:///path, :memory: or postgresql://...)", url=url
    )


def _postgres() -> ModuleType:
    try:
        from hivemem.storage import postgres
    except ImportError as exc:
        raise ConfigError(f"PostgreSQL support needs extra packages: pip install 'hivemem[postgres]' ({exc})") from exc
    return postgres


def open_store(config: HiveConfig) -> Store:
    """Open the backend named by ``config.url``.

    Raises:
        ConfigError: The URL names no backend HiveMem has, or its driver is not installed.
    """
    if _backend(config.url) == "postgresql":
        store: Store = _postgres().PostgresStore(
            config.url,
            read_url=config.read_url,
            pool_size=config.pool_size,
            auto_migrate=config.auto_migrate,
            busy_timeout_ms=config.busy_timeout_ms,
            prepared_statements=config.prepared_statements,
        )
        return store
    from hivemem.storage.sqlite import SqliteStore, sqlite_path

    return SqliteStore(
        sqlite_path(config.url),
        synchronous=config.synchronous,
        busy_timeout_ms=config.busy_timeout_ms,
        vector_search=config.vector_search,
    )


def migrate(config: HiveConfig, *, apply: bool = True) -> dict[str, object]:
    """Bring the schema of the store ``config.url`` names up to date, or (``apply=False``) check it is.

    Returns:
        ``{"backend", "version_before", "version"}``.

    Raises:
        ConfigError: The schema is behind and ``apply`` is False, or is newer than this HiveMem.
    """
    backend = _backend(config.url)
    if backend == "postgresql":
        before, after = _postgres().migrate_url(config.url, apply=apply)
    else:
        from hivemem.storage import sqlite

        before, after = sqlite.migrate(sqlite.sqlite_path(config.url), apply=apply)
    return {"backend": backend, "version_before": before, "version": after}
