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
    raise ConfigError(f"no backend for {scheme}:// URLs (use a file path, sqlite:///path or :memory:)", url=url)
