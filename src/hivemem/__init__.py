"""HiveMem: shared, durable memory and coordination for teams of AI agents.

Open a Hive with :func:`open` and use its methods; everything else in the
package is implementation.
"""

from __future__ import annotations

from typing import Any

from hivemem.clock import Clock, ManualClock, SystemClock
from hivemem.config import HiveConfig, RankingWeights
from hivemem.conflicts import ConflictResolver
from hivemem.errors import (
    ConfigError,
    EmbedderUnavailable,
    Forbidden,
    HiveError,
    InvalidInput,
    LockHeld,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StaleFencingToken,
    StorageUnavailable,
    Unauthenticated,
    VersionConflict,
)
from hivemem.hive import Hive
from hivemem.models import Conflict, Group, Hit, Memory, Page, Related, Relation
from hivemem.retrieval.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder, make_embedder

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "ConfigError",
    "Conflict",
    "ConflictResolver",
    "Embedder",
    "EmbedderUnavailable",
    "Forbidden",
    "Group",
    "Hit",
    "Hive",
    "HiveConfig",
    "HiveError",
    "InvalidInput",
    "LockHeld",
    "ManualClock",
    "Memory",
    "MiniLMEmbedder",
    "NotFound",
    "OpenAIEmbedder",
    "Page",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RankingWeights",
    "Related",
    "Relation",
    "StaleFencingToken",
    "StorageUnavailable",
    "SystemClock",
    "Unauthenticated",
    "VersionConflict",
    "__version__",
    "make_embedder",
    "open",
]

_DEFAULT = object()


def open(
    target: str = "hive.db",
    *,
    embedder: Embedder | str | None = _DEFAULT,  # type: ignore[assignment]
    clock: Clock | None = None,
    config: HiveConfig | None = None,
    **options: Any,
) -> Hive:
    """Open a Hive.

    Args:
        target: A SQLite file path, ``sqlite:///path``, ``:memory:``, a PostgreSQL
            URL, or a HiveMem server's ``http(s)://`` URL (then ``options`` are
            :class:`hivemem.client.RemoteHive`'s: ``api_key``, ``timeout``).
        embedder: An :class:`Embedder`, a spec (``"minilm"``, ``"none"``,
            ``"openai:<model>"``) or None for keyword-only recall. Defaults to
            the config's embedder (the offline MiniLM model).
        clock: Source of the current time (tests inject :class:`ManualClock`).
        config: A base configuration; ``options`` override its fields.
        **options: Any :class:`HiveConfig` field, e.g. ``synchronous="normal"``
            or ``ranking={"recency": 0.1}``.

    Returns:
        A Hive; close it or use it as a context manager.

    Raises:
        ConfigError: Unknown options, an unknown URL scheme, or an embedder
            other than the one that made the stored vectors.
    """
    if target.startswith(("http://", "https://")):
        from hivemem.client import RemoteHive

        return RemoteHive(target, **options)
    from hivemem.storage import open_store

    base = config or HiveConfig()
    cfg = base.with_options(url=target, **options)
    if embedder is _DEFAULT:
        embedder = cfg.embedder
    if isinstance(embedder, str) or embedder is None:
        embedder = make_embedder(embedder, base_url=cfg.embedder_url, api_key=cfg.embedder_api_key)
    store = open_store(cfg)
    try:
        return Hive(store, embedder, cfg, clock)
    except BaseException:
        store.close()
        raise
