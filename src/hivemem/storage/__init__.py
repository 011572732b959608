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


def migrate(config: HiveConfig, *, apply: bool = True) -> dict[str, object]:
    """Bring the schema of the store ``config.url`` names up to date, or (``apply=False``) check it is.

    Returns:
        ``{"backend", "version_before", "version"}``.

    Raises:
        ConfigError: The schema is behind and ``apply`` is False, or is newer than this HiveMem.
    """
    scheme = config.url.split("://", 1)[0].lower() if "://" in config.url else ""
    if scheme in ("postgresql", "postgres"):
        import psycopg

        from hivemem.errors import StorageUnavailable
        from hivemem.storage import postgres

        try:
            with psycopg.connect(config.url, autocommit=True) as conn:
                before, after = postgres.migrate(conn, apply=apply)
        except psycopg.Error as exc:
            raise StorageUnavailable(f"cannot migrate: {exc}", reason=type(exc).__name__) from exc
        return {"backend": "postgresql", "version_before": before, "version": after}
    if scheme not in ("", "sqlite"):
        raise ConfigError(f"no backend for {scheme}:// URLs", url=config.url)
    from hivemem.storage import sqlite

    before, after = sqlite.migrate(sqlite.sqlite_path(config.url), apply=apply)
    return {"backend": "sqlite", "version_before": before, "version": after}
