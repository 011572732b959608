"""Storage backends and the factory that opens one from a URL.

Drivers are imported lazily, so the embedded deployment never needs the
PostgreSQL driver and vice versa.
"""

from __future__ import annotations

from hivemem.config import HiveConfig
from hivemem.errors import ConfigError
from hivemem.storage.base import Store


def open_store(config: HiveConfig) -> Store:
    """Open the backend named by ``config.url``.

    Raises:
        ConfigError: The URL names no backend HiveMem has.
    """
    url = config.url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "sqlite"):
        from hivemem.storage.sqlite import SqliteStore, sqlite_path

        return SqliteStore(
            sqlite_path(url),
            synchronous=config.synchronous,
            busy_timeout_ms=config.busy_timeout_ms,
            vector_search=config.vector_search,
        )
    if scheme in ("postgresql", "postgres"):
        try:
            from hivemem.storage.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"PostgreSQL support needs extra packages: pip install 'hivemem[postgres]' ({exc})"
            ) from exc
        return PostgresStore(
            url,
            read_url=config.read_url,
            pool_size=config.pool_size,
            auto_migrate=config.auto_migrate,
            busy_timeout_ms=config.busy_timeout_ms,
        )
    raise ConfigError(
        f"no backend for {scheme}:// URLs (use a file path, sqlite:///path, :memory: or postgresql://...)", url=url
    )
