"""Unit tests of the pure ranking functions and of query-term extraction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hivemem import Memory
from hivemem.config import RankingWeights
from hivemem.retrieval.ranking import Fused, fuse, outcome_of, recency_of, score
from hivemem.retrieval.text import MAX_TERMS, STOP_WORDS, keyword_terms
from hivemem.storage.base import RankFacts, ScoredId

W = RankingWeights()
NOW = 1_700_000_000.0
DAY = 86_400.0


def memory(memory_id: str = "m", **fields: object) -> Memory:
    fields.setdefault("created_at", datetime.fromtimestamp(NOW, tz=UTC))
    return Memory(id=memory_id, namespace="ns", content="text", **fields)  # type: ignore[arg-type]


def facts(**fields: object) -> RankFacts:
    return RankFacts.of(memory(**fields))


def ranked(*ids: str) -> list[ScoredId]:
    return [ScoredId(i, 10.0 - n) for n, i in enumerate(ids)]


# --------------------------------------------------------------------------- fuse


def test_fuse_of_nothing_is_nothing() -> None:
    assert fuse([], [], W) == []


def test_fuse_top_of_both_lists_has_relevance_one() -> None:
    fused = fuse(ranked("a", "b", "c"), ranked("a", "c"), W)
    assert [f.id for f in fused] == ["a", "c", "b"]
    assert fused[0].relevance == 1.0
    k0 = W.rrf_k
    full = 2 / (k0 + 1)
    assert fused[1].relevance == pytest.approx((1 / (k0 + 3) + 1 / (k0 + 2)) / full)
    assert fused[2].relevance == pytest.approx((1 / (k0 + 2)) / full)


def test_fuse_keeps_raw_scores() -> None:
    fused = {f.id: f for f in fuse([ScoredId("a", 7.5)], [ScoredId("a", 0.25), ScoredId("b", 0.1)], W)}
    assert (fused["a"].keyword, fused["a"].vector) == (7.5, 0.25)
    assert (fused["b"].keyword, fused["b"].vector) == (0.0, 0.1)


def test_fuse_an_empty_list_does_not_scale_the_other_down() -> None:
    keyword_only = fuse(ranked("a", "b"), [], W)
    assert keyword_only[0] == Fused("a", 1.0, 10.0, 0.0)
    vector_only = fuse([], ranked("b", "a"), W)
    assert (vector_only[0].id, vector_only[0].relevance) == ("b", 1.0)


def test_fuse_a_memory_in_one_list_of_two_gets_its_share() -> None:
    fused = {f.id: f.relevance for f in fuse(ranked("a"), ranked("b"), W)}
    assert fused == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}


def test_fuse_weights() -> None:
    weights = RankingWeights(keyword=3.0, vector=1.0)
    fused = {f.id: f.relevance for f in fuse(ranked("a"), ranked("b"), weights)}
    assert fused["a"] == pytest.approx(0.75)
    assert fused["b"] == pytest.approx(0.25)
    ignored_vector = fuse(ranked("a", "b"), ranked("c"), RankingWeights(vector=0.0))
    assert [f.id for f in ignored_vector] == ["a", "b"]
    assert ignored_vector[0].relevance == 1.0
    assert fuse(ranked("a"), ranked("b"), RankingWeights(keyword=0.0, vector=0.0)) == []


def test_fuse_small_rrf_k_trusts_the_top_more() -> None:
    sharp = fuse(ranked("a", "b"), [], RankingWeights(rrf_k=1.0))
    flat = fuse(ranked("a", "b"), [], RankingWeights(rrf_k=100.0))
    assert sharp[1].relevance < flat[1].relevance


def test_fuse_ties_in_relevance_are_ordered_by_id() -> None:
    fused = fuse(ranked("z", "a"), ranked("a", "z"), W)
    assert [f.id for f in fused] == ["a", "z"]
    assert fused[0].relevance == fused[1].relevance


def test_fuse_gives_equal_evidence_equal_relevance() -> None:
    # Two memories with the same keyword and the same vector score (identical text) are
    # equally relevant; their order inside each list is arbitrary and must not decide.
    fused = {
        f.id: f.relevance
        for f in fuse([ScoredId("x", 3.0), ScoredId("y", 3.0)], [ScoredId("x", 0.9), ScoredId("y", 0.9)], W)
    }
    assert fused["x"] == fused["y"]


# --------------------------------------------------------------------------- outcome and recency


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("episode", {"success": True}, 1.0),
        ("episode", {"success": False}, 0.0),
        ("episode", {}, 0.5),
        ("episode", {"success": "yes"}, 0.5),
        ("episode", {"success": 1}, 0.5),
        ("note", {"success": True}, 0.5),
        ("fact", {"success": False}, 0.5),
    ],
)
def test_outcome_of(kind: str, data: dict[str, object], expected: float) -> None:
    assert outcome_of(facts(kind=kind, data=data)) == expected


def test_recency_of() -> None:
    half_life = 30.0
    assert recency_of(facts(), NOW, half_life) == 1.0
    assert recency_of(facts(), NOW + 30 * DAY, half_life) == pytest.approx(0.5)
    assert recency_of(facts(), NOW + 60 * DAY, half_life) == pytest.approx(0.25)
    assert recency_of(facts(), NOW + 7 * DAY, 7.0) == pytest.approx(0.5)
    assert recency_of(facts(), NOW - DAY, half_life) == 1.0  # from the future: not above 1
    assert recency_of(facts(created_at=None), NOW, half_life) == 0.0
    event = datetime.fromtimestamp(NOW - 30 * DAY, tz=UTC)
    assert recency_of(facts(occurred_at=event), NOW, half_life) == pytest.approx(0.5)  # event time wins
    ages = [recency_of(facts(), NOW + d * DAY, half_life) for d in (0, 1, 10, 100, 1000)]
    assert ages == sorted(ages, reverse=True)
    assert all(0.0 <= a <= 1.0 for a in ages)


# --------------------------------------------------------------------------- score


def test_score_combines_the_parts() -> None:
    weights = RankingWeights(relevance=1.0, recency=0.1, importance=0.2, outcome=0.3, recency_half_life_days=1.0)
    old = datetime.fromtimestamp(NOW - DAY, tz=UTC)
    memories = {
        "a": memory("a", kind="episode", data={"success": True}, importance=0.4, created_at=old),
        "b": memory("b", importance=1.0),
    }
    candidates = [Fused("a", 1.0, 5.0, 0.9), Fused("b", 0.5, 0.0, 0.7), Fused("gone", 0.9, 1.0, 1.0)]
    hits = score(candidates, {i: RankFacts.of(m) for i, m in memories.items()}, NOW, weights)
    assert [h.id for h in hits] == ["a", "b"]  # "gone" was filtered out
    a, b = hits
    assert dict(a.parts) == {
        "keyword": 5.0,
        "vector": 0.9,
        "relevance": 1.0,
        "recency": pytest.approx(0.5),
        "importance": 0.4,
        "outcome": 1.0,
    }
    assert a.score == pytest.approx(1.0 + 0.1 * 0.5 + 0.2 * 0.4 + 0.3 * 1.0)
    assert b.score == pytest.approx(0.5 + 0.1 * 1.0 + 0.2 * 1.0 + 0.3 * 0.5)


def test_score_orders_by_score_then_id() -> None:
    memories = {i: facts() for i in ("c", "a", "b")}
    hits = score([Fused("c", 0.2, 0, 0), Fused("b", 0.9, 0, 0), Fused("a", 0.2, 0, 0)], memories, NOW, W)
    assert [h.id for h in hits] == ["b", "a", "c"]
    assert hits[0].score > hits[1].score == hits[2].score


def test_outcome_breaks_a_tie_in_relevance() -> None:
    memories = {
        "failed": facts(kind="episode", data={"success": False}),
        "worked": facts(kind="episode", data={"success": True}),
    }
    hits = score([Fused("failed", 0.8, 1, 1), Fused("worked", 0.8, 1, 1)], memories, NOW, W)
    assert [h.id for h in hits] == ["worked", "failed"]


def test_side_weights_do_not_override_clear_relevance() -> None:
    memories = {
        "relevant": facts(importance=0.0, created_at=datetime.fromtimestamp(NOW - 365 * DAY, tz=UTC)),
        "popular": facts(kind="episode", data={"success": True}, importance=1.0),
    }
    hits = score([Fused("relevant", 1.0, 1, 1), Fused("popular", 0.5, 1, 1)], memories, NOW, W)
    assert hits[0].id == "relevant"


def test_score_of_nothing() -> None:
    assert score([], {}, NOW, W) == []


# --------------------------------------------------------------------------- keyword_terms


def test_keyword_terms_lowercases_dedupes_and_drops_stop_words() -> None:
    assert keyword_terms("Why did the Deploy fail? The deploy FAILED") == ["deploy", "fail", "failed"]


def test_keyword_terms_splits_contractions_and_punctuation() -> None:
    assert keyword_terms("Don't restart the worker's queue!") == ["restart", "worker", "queue"]
    assert keyword_terms("snake_case and kebab-case, v2.1") == ["snake", "case", "kebab", "v2", "1"]


def test_keyword_terms_keeps_unicode_words() -> None:
    assert keyword_terms("Café naïve Straße 東京") == ["café", "naïve", "straße", "東京"]


def test_keyword_terms_of_only_stop_words_keeps_them() -> None:
    assert keyword_terms("to be or not to be") == ["to", "be", "or", "not"]
    assert all(t in STOP_WORDS for t in keyword_terms("what is it"))


def test_keyword_terms_of_no_words_is_empty() -> None:
    assert keyword_terms("") == []
    assert keyword_terms("?!  -- ...") == []


def test_keyword_terms_keeps_the_longest_terms_in_order() -> None:
    words = [f"w{'x' * (i % 7)}{i}" for i in range(50)]
    terms = keyword_terms(" ".join(words))
    assert len(terms) == MAX_TERMS
    assert terms == [w for w in words if w in terms]  # order of appearance
    shortest_kept = min(len(t) for t in terms)
    assert all(len(w) <= shortest_kept for w in words if w not in terms)


def test_keyword_terms_respects_max_terms_exactly() -> None:
    words = [f"term{i:03d}" for i in range(MAX_TERMS + 5)]
    assert keyword_terms(" ".join(words)) == words[:MAX_TERMS]
