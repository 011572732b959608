"""Configuration: one typed object built at the entry point.

Precedence, highest first: explicit keyword arguments to :func:`hivemem.open`
(or CLI flags), then ``HIVEMEM_*`` environment variables (read only by
:meth:`HiveConfig.from_env`, which the CLI calls; the library never reads the
environment on its own), then the defaults below.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hivemem.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RankingWeights:
    """How recall turns keyword and vector evidence into one score.

    The keyword and vector candidate lists are fused by weighted reciprocal
    rank (``weight / (rrf_k + rank)``), normalised to 0..1 as ``relevance``.
    The final score is ``relevance * relevance_weight + recency * recency_weight
    + importance * importance_weight + outcome * outcome_weight``. The side
    weights are small on purpose: they order memories of similar relevance
    (a successful episode above a failed one) without overriding relevance.

    Attributes:
        keyword: Weight of the keyword (BM25) list in the fusion.
        vector: Weight of the vector (cosine) list in the fusion.
        rrf_k: Reciprocal-rank constant; small values trust the top ranks more.
        relevance: Weight of the fused relevance.
        recency: Weight of recency (exponential decay of the memory's age).
        importance: Weight of importance (0..1).
        outcome: Weight of outcome: 1 for a successful episode, 0 for a failed
            one, 0.5 for everything else.
        recency_half_life_days: Age at which recency has fallen to 0.5.
        candidates: How many candidates each list contributes before fusion
            (at least ``k``).
    """

    keyword: float = 1.0
    vector: float = 1.0
    rrf_k: float = 10.0
    relevance: float = 1.0
    recency: float = 0.05
    importance: float = 0.05
    outcome: float = 0.05
    recency_half_life_days: float = 30.0
    candidates: int = 100


@dataclass(frozen=True, slots=True)
class SelectionWeights:
    """How :meth:`hivemem.Hive.select_agent` scores an agent for a task.

    ``score = specialization * match + experience * relevant_success + performance * success_rate``
    (see :mod:`hivemem.agents` for each part, all 0..1). The defaults sum to 1,
    so a score is 0..1 too; any non-negative weights work.

    Attributes:
        specialization: Weight of the match between the task and the agent's specializations.
        experience: Weight of the agent's relevant successful episodes, found by recall.
        performance: Weight of the agent's overall (smoothed) success rate.
        prior_successes: Successes every agent starts with when its rate is computed.
        prior_failures: Failures every agent starts with: with 1 and 1 a new agent
            rates 0.5 and one success makes 0.67, not a perfect 1.
        experience_pool: How many episodes the one recall behind ``experience`` returns.
    """

    specialization: float = 0.4
    experience: float = 0.3
    performance: float = 0.3
    prior_successes: float = 1.0
    prior_failures: float = 1.0
    experience_pool: int = 50

    def __post_init__(self) -> None:
        for name in ("specialization", "experience", "performance", "prior_successes", "prior_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"selection.{name} must be a number of at least 0, not {value!r}")
        if not (self.specialization or self.experience or self.performance):
            raise ConfigError("selection: at least one of specialization, experience, performance must be above 0")
        pool = self.experience_pool
        if isinstance(pool, bool) or not isinstance(pool, int) or not 1 <= pool <= 1000:
            raise ConfigError(f"selection.experience_pool must be a whole number from 1 to 1000, not {pool!r}")


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@dataclass(frozen=True, slots=True)
class HiveConfig:
    """Everything a Hive needs to open.

    Attributes:
        url: Where the data lives: a file path, ``sqlite:///path``, ``:memory:``
            or a PostgreSQL URL (``postgresql://...``, several hosts allowed).
        read_url: PostgreSQL only: a replica's URL; recall, get and list read there.
        pool_size: PostgreSQL only: most connections per pool.
        auto_migrate: PostgreSQL only: apply missing schema migrations at open.
            False refuses to open a database whose schema is behind (for roles
            without DDL rights; an administrator runs ``hivemem migrate``).
        prepared_statements: PostgreSQL only: prepare the statements a connection
            runs often on the server, which then skips parsing and planning them.
            False for PgBouncer in transaction mode, unless it is 1.22 or newer
            with ``max_prepared_statements`` set (see psycopg's documentation).
        embedder: ``"minilm"`` (the default, offline), ``"none"`` (keyword-only
            recall) or ``"openai:<model>"``.
        embedder_url: Base URL of an OpenAI-compatible embeddings API.
        embedder_api_key: Key for that API.
        synchronous: SQLite ``synchronous`` pragma: ``full`` (default: an
            acknowledged write survives power loss) or ``normal`` (faster;
            survives a process crash, may lose the last commits on power loss).
        busy_timeout_ms: How long a SQLite writer waits for the write lock.
        vector_search: ``"matrix"`` (in-process matrix mirrored from the store:
            fast) or ``"sqlite-vec"`` (sqlite-vec KNN in the database: no extra memory).
        max_content_bytes: Largest accepted ``content`` (UTF-8 bytes).
        max_data_bytes: Largest accepted ``data`` (as JSON).
        max_batch: Largest ``remember_many`` batch.
        idempotency_ttl_seconds: How long :meth:`Hive.run_once` (the server's
            ``Idempotency-Key``) remembers a key and its result.
        event_retention_seconds: How long events are kept: :meth:`Hive.sweep`
            deletes older ones (0 keeps every event).
        ranking: Recall weights.
        selection: Agent selection weights (``select_agent``).
        summarizer: What a working-memory flush summarises with: ``extractive``
            (offline, deterministic) or ``openai:<model>`` (an OpenAI-compatible chat API).
        summarizer_url: Base URL of that chat API (``.../v1``).
        summarizer_api_key: Key for that API.
    """

    url: str = "hive.db"
    read_url: str | None = None
    pool_size: int = 10
    auto_migrate: bool = True
    prepared_statements: bool = True
    embedder: str = "minilm"
    embedder_url: str | None = None
    embedder_api_key: str | None = None
    synchronous: str = "full"
    busy_timeout_ms: int = 30_000
    vector_search: str = "matrix"
    max_content_bytes: int = 64 * 1024
    max_data_bytes: int = 256 * 1024
    max_batch: int = 10_000
    idempotency_ttl_seconds: int = 24 * 3600
    event_retention_seconds: int = 7 * 86_400
    ranking: RankingWeights = field(default_factory=RankingWeights)
    selection: SelectionWeights = field(default_factory=SelectionWeights)
    summarizer: str = "extractive"
    summarizer_url: str | None = None
    summarizer_api_key: str | None = None

    def __post_init__(self) -> None:
        if self.synchronous not in ("full", "normal", "extra"):
            raise ConfigError(f"synchronous must be full, normal or extra, not {self.synchronous!r}")
        if self.vector_search not in ("matrix", "sqlite-vec"):
            raise ConfigError(f"vector_search must be matrix or sqlite-vec, not {self.vector_search!r}")
        for name in (
            "busy_timeout_ms",
            "max_content_bytes",
            "max_data_bytes",
            "max_batch",
            "pool_size",
            "idempotency_ttl_seconds",
        ):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive")
        if int(self.event_retention_seconds) < 0:
            raise ConfigError("event_retention_seconds must be 0 (keep every event) or positive")

    def with_options(self, **options: Any) -> HiveConfig:
        """A copy with some fields replaced; ``ranking`` may be a dict of weights.

        Raises:
            ConfigError: An option name is unknown.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}", options=unknown)
        ranking = options.get("ranking")
        if isinstance(ranking, Mapping):
            options["ranking"] = dataclasses.replace(self.ranking, **ranking)
        selection = options.get("selection")
        if isinstance(selection, Mapping):
            unknown_weights = sorted(set(selection) - {f.name for f in dataclasses.fields(SelectionWeights)})
            if unknown_weights:
                raise ConfigError(f"unknown selection option(s): {', '.join(map(str, unknown_weights))}")
            options["selection"] = dataclasses.replace(self.selection, **selection)
        return dataclasses.replace(self, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HiveConfig:
        """Build a config from ``HIVEMEM_*`` variables (``HIVEMEM_URL``, ``HIVEMEM_EMBEDDER``...).

        Args:
            environ: Usually ``os.environ``, passed in by the entry point.
        """
        options: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"HIVEMEM_{f.name.upper()}")
            if raw is None or f.name in ("ranking", "selection"):
                continue
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                if raw.lower() not in _BOOLEANS:
                    raise ConfigError(f"HIVEMEM_{f.name.upper()} must be true or false, not {raw!r}")
                options[f.name] = _BOOLEANS[raw.lower()]
            else:
                options[f.name] = int(raw) if isinstance(default, int) else raw
        return cls(**options)
