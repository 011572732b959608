"""Scoring: fuse keyword and vector evidence, then weigh recency, importance and outcome.

Pure functions over candidate lists, so the ranking can be tested and reasoned
about without a database. Reciprocal-rank fusion needs no score calibration
between BM25 and cosine, and a small constant trusts the top of each list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hivemem.config import RankingWeights
from hivemem.storage.base import RankFacts, ScoredId

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Fused:
    """A candidate after fusion: its relevance and the raw evidence behind it."""

    id: str
    relevance: float
    keyword: float
    vector: float


def fuse(keyword: Sequence[ScoredId], vector: Sequence[ScoredId], weights: RankingWeights) -> list[Fused]:
    """Weighted reciprocal-rank fusion of two ranked lists, normalised to 0..1.

    A memory at the top of every list that took part gets relevance 1. An
    empty list does not count against the other, so keyword-only recall is
    not scaled down.

    Returns:
        Candidates by relevance, best first (ties by id for a stable order).
    """
    k0 = weights.rrf_k
    parts: dict[str, list[float]] = {}
    active = 0.0
    for which, (ranked, weight) in enumerate(((keyword, weights.keyword), (vector, weights.vector))):
        if not ranked or weight <= 0:
            continue
        active += weight / (k0 + 1)
        for rank, item in zip(_competition_ranks(ranked), ranked, strict=True):
            entry = parts.setdefault(item.id, [0.0, 0.0, 0.0])
            entry[0] += weight / (k0 + rank)
            entry[1 + which] = item.score
    if active == 0:
        return []
    fused = [Fused(i, e[0] / active, e[1], e[2]) for i, e in parts.items()]
    fused.sort(key=lambda f: (-f.relevance, f.id))
    return fused


def _competition_ranks(ranked: Sequence[ScoredId]) -> list[int]:
    """1-based ranks of a best-first list where equal scores share the better rank.

    Identical evidence must give identical relevance, so the order a backend
    happens to return ties in never decides between them.
    """
    ranks: list[int] = []
    for position, item in enumerate(ranked, start=1):
        tied = position > 1 and item.score == ranked[position - 2].score
        ranks.append(ranks[-1] if tied else position)
    return ranks


def outcome_of(facts: RankFacts) -> float:
    """1.0 for a successful episode, 0.0 for a failed one, 0.5 when there is no outcome."""
    if facts.success is None:
        return 0.5
    return 1.0 if facts.success else 0.0


def recency_of(facts: RankFacts, now: float, half_life_days: float) -> float:
    """Exponential decay of the memory's age (event time, else creation time): 1 now, 0.5 at the half-life."""
    if facts.when is None:
        return 0.0
    age_days = max(0.0, now - facts.when) / _SECONDS_PER_DAY
    return math.pow(0.5, age_days / half_life_days)


@dataclass(frozen=True, slots=True)
class Scored:
    """A ranked candidate: its final score and the parts it was made of."""

    id: str
    score: float
    parts: Mapping[str, float]


def score(
    candidates: Sequence[Fused], facts: Mapping[str, RankFacts], now: float, weights: RankingWeights
) -> list[Scored]:
    """Final scores of the candidates that have facts, best first (ties by id).

    Args:
        candidates: Fused candidates.
        facts: The visible memories' facts by id (candidates missing here were filtered out).
        now: Current time, Unix seconds.
        weights: Ranking weights.
    """
    scored: list[Scored] = []
    for cand in candidates:
        found = facts.get(cand.id)
        if found is None:
            continue
        parts = {
            "keyword": cand.keyword,
            "vector": cand.vector,
            "relevance": cand.relevance,
            "recency": recency_of(found, now, weights.recency_half_life_days),
            "importance": found.importance,
            "outcome": outcome_of(found),
        }
        total = (
            weights.relevance * parts["relevance"]
            + weights.recency * parts["recency"]
            + weights.importance * parts["importance"]
            + weights.outcome * parts["outcome"]
        )
        scored.append(Scored(cand.id, total, parts))
    scored.sort(key=lambda s: (-s.score, s.id))
    return scored
