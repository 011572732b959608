"""HiveMem: shared, durable memory and coordination for teams of AI agents.

Open a Hive with :func:`open` and use its methods (or, in asyncio programs
talking to a server, :func:`open_async`); everything else in the package is
implementation.
"""

from __future__ import annotations

from typing import Any

from hivemem.aclient import AsyncRemoteHive
from hivemem.agents import AgentProfile, AgentScore, ExperienceContext, Outcome
from hivemem.checkpoints import StepRecord, Workflow
from hivemem.clock import Clock, ManualClock, SystemClock
from hivemem.config import HiveConfig, RankingWeights, SelectionWeights
from hivemem.conflicts import ConflictResolver
from hivemem.errors import (
    ConfigError,
    EmbedderUnavailable,
    EventsPruned,
    Forbidden,
    HiveError,
    InvalidInput,
    InvalidTransition,
    LeaseExpired,
    LockHeld,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StaleFencingToken,
    StepFailed,
    StorageUnavailable,
    Unauthenticated,
    VersionConflict,
    WorkflowCancelled,
    WorkflowDiverged,
    WorkflowFailed,
)
from hivemem.hive import Hive
from hivemem.leases import Fence, Lease, LeaseSet
from hivemem.models import Conflict, Group, Hit, Memory, Page, Related, Relation
from hivemem.packing import Pack, PackItem
from hivemem.plans import Plan, PlanProgress, Task
from hivemem.records import KeyedOptions, MemoryOptions, RememberOptions
from hivemem.redaction import Redactor
from hivemem.resources import MemoryResource, ResourceRegistry
from hivemem.retrieval.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder, make_embedder
from hivemem.summarize import ChatSummarizer, ExtractiveSummarizer, Summarizer
from hivemem.tokens import TokenCounter, counter_for
from hivemem.workflows import Retry, StepContext, current_step, step, workflow
from hivemem.working import BufferSettings, WorkingMemory, WorkingMessage, WorkingStats

__version__ = "0.1.0"

__all__ = [
    "AgentProfile",
    "AgentScore",
    "AsyncRemoteHive",
    "BufferSettings",
    "ChatSummarizer",
    "Clock",
    "ConfigError",
    "Conflict",
    "ConflictResolver",
    "Embedder",
    "EmbedderUnavailable",
    "EventsPruned",
    "ExperienceContext",
    "ExtractiveSummarizer",
    "Fence",
    "Forbidden",
    "Group",
    "Hit",
    "Hive",
    "HiveConfig",
    "HiveError",
    "InvalidInput",
    "InvalidTransition",
    "KeyedOptions",
    "Lease",
    "LeaseExpired",
    "LeaseSet",
    "LockHeld",
    "ManualClock",
    "Memory",
    "MemoryOptions",
    "MemoryResource",
    "MiniLMEmbedder",
    "NotFound",
    "OpenAIEmbedder",
    "Outcome",
    "Pack",
    "PackItem",
    "Page",
    "PayloadTooLarge",
    "Plan",
    "PlanProgress",
    "QuotaExceeded",
    "RankingWeights",
    "Redactor",
    "Related",
    "Relation",
    "RememberOptions",
    "ResourceRegistry",
    "Retry",
    "SelectionWeights",
    "StaleFencingToken",
    "StepContext",
    "StepFailed",
    "StepRecord",
    "StorageUnavailable",
    "Summarizer",
    "SystemClock",
    "Task",
    "TokenCounter",
    "Unauthenticated",
    "VersionConflict",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowDiverged",
    "WorkflowFailed",
    "WorkingMemory",
    "WorkingMessage",
    "WorkingStats",
    "__version__",
    "counter_for",
    "current_step",
    "make_embedder",
    "open",
    "open_async",
    "step",
    "workflow",
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
            :class:`hivemem.client.RemoteHive`'s: ``api_key``, ``timeout``,
            ``retries``, ``backoff``, ``breaker``).
        embedder: An :class:`Embedder`, a spec (``"minilm"``, ``"none"``,
            ``"openai:<model>"``) or None for keyword-only recall. Defaults to
            the config's embedder (the offline MiniLM model).
        clock: Source of the current time (tests inject :class:`ManualClock`).
        config: A base configuration; ``options`` override its fields.
        **options: Any :class:`HiveConfig` field, e.g. ``synchronous="normal"``
            or ``ranking={"recency": 0.1}``; and ``resources``, a memory resources
            file (YAML) for :meth:`Hive.working`.

    Returns:
        A Hive; close it or use it as a context manager.

    Raises:
        ConfigError: Unknown options, an unknown URL scheme, or an embedder
            other than the one that made the stored vectors.
    """
    from hivemem.protocol import client_options, is_server_url

    if is_server_url(target):
        from hivemem.client import RemoteHive

        resources = options.pop("resources", None)
        remote = RemoteHive(target, **client_options(options))
        if resources is not None:
            remote.load_resources(resources)
        return remote
    from hivemem.storage import open_store

    resources = options.pop("resources", None)
    base = config or HiveConfig()
    cfg = base.with_options(url=target, **options)
    if embedder is _DEFAULT:
        embedder = cfg.embedder
    if isinstance(embedder, str) or embedder is None:
        embedder = make_embedder(embedder, base_url=cfg.embedder_url, api_key=cfg.embedder_api_key)
    store = open_store(cfg)
    try:
        hive = Hive(store, embedder, cfg, clock)
        if resources is not None:
            hive.load_resources(resources)
        return hive
    except BaseException:
        store.close()
        raise


def open_async(url: str, **options: Any) -> AsyncRemoteHive:
    """Open a HiveMem server's Hive for asyncio: every served method as a coroutine.

    Args:
        url: The server's ``http(s)://`` root; several, comma-separated, for failover.
        **options: :class:`AsyncRemoteHive`'s: ``api_key``, ``timeout``,
            ``retries``, ``backoff``, ``breaker``.

    Returns:
        An AsyncRemoteHive; ``await`` its close or use it with ``async with``.

    Raises:
        InvalidInput: ``url`` is not an ``http(s)://`` URL (an embedded database
            has no async API: open it with :func:`open`).
        ConfigError: An option the client does not take.
    """
    from hivemem.protocol import client_options

    return AsyncRemoteHive(url, **client_options(options))
