"""Property tests: namespace prefixes, data filters, pagination and rank fusion against simple models.

Hypothesis and function-scoped fixtures do not mix, so each example opens its
own ``:memory:`` hive (keyword-only, for speed) with a manual clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import hivemem
from conftest import START
from hivemem import Hive, Memory
from hivemem.config import RankingWeights
from hivemem.retrieval.ranking import fuse
from hivemem.storage.base import ORDER_COLUMNS, ScoredId

T0 = datetime.fromtimestamp(START, tz=UTC)
FAST = settings(max_examples=150, deadline=None, database=None)


@contextmanager
def memory_hive() -> Iterator[tuple[Hive, hivemem.ManualClock]]:
    clock = hivemem.ManualClock(START)
    hive = hivemem.open(":memory:", embedder=None, clock=clock)
    try:
        yield hive, clock
    finally:
        hive.close()


def listing(hive: Hive, **kwargs: Any) -> list[Memory]:
    page = hive.list(limit=1000, **kwargs)
    assert page.next_cursor is None
    return list(page.items)


# --------------------------------------------------------------------------- namespace prefixes

# Segments chosen so that string prefixes are not namespace prefixes ("a" / "ab" / "a.b" / "a-1").
SEGMENT = st.sampled_from(["a", "ab", "a.b", "a-1", "b", "A", "_x", "0"])
NAMESPACE = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)


def in_prefix_model(namespace: str, prefix: str) -> bool:
    return namespace.split("/")[: len(prefix.split("/"))] == prefix.split("/")


def all_prefixes(namespace: str) -> list[str]:
    parts = namespace.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


@FAST
@given(spaces=st.lists(NAMESPACE, max_size=25), probes=st.lists(NAMESPACE, max_size=4), victim=NAMESPACE)
def test_namespace_prefix_semantics(spaces: list[str], probes: list[str], victim: str) -> None:
    with memory_hive() as (hive, _):
        made = hive.remember_many([{"namespace": ns, "content": f"common word {i}"} for i, ns in enumerate(spaces)])
        prefixes = set(probes) | {p for ns in spaces for p in all_prefixes(ns)}
        for prefix in sorted(prefixes):
            expected = [m.id for m in made if in_prefix_model(m.namespace, prefix)]
            assert [m.id for m in listing(hive, namespace=prefix)] == expected
            assert [m.id for m in listing(hive, namespace=prefix + "/")] == expected
            assert hive.stats(prefix)["memories"] == len(expected)
            found = {h.memory.id for h in hive.recall("common", namespace=prefix, k=1000)}
            assert found == set(expected)
        doomed = [m.id for m in made if in_prefix_model(m.namespace, victim)]
        assert hive.forget_namespace(victim) == len(doomed)
        assert [m.id for m in listing(hive)] == [m.id for m in made if m.id not in doomed]


# --------------------------------------------------------------------------- data filters


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def lookup(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def holds(data: dict[str, Any], path: str, op: str, operand: Any) -> bool:
    """The documented filter semantics over JSON values (a boolean is not a number)."""
    present, value = lookup(data, path)
    if op == "$eq":
        if operand is None:
            return not present or value is None
        return present and kind_of(value) == kind_of(operand) and value == operand
    if op == "$ne":
        return not holds(data, path, "$eq", operand)
    if op == "$in":
        return any(holds(data, path, "$eq", item) for item in operand)
    if not present or value is None or kind_of(value) != kind_of(operand) or kind_of(value) not in ("number", "string"):
        return False
    return {"$gt": value > operand, "$gte": value >= operand, "$lt": value < operand, "$lte": value <= operand}[op]


def matches(data: dict[str, Any], where: dict[str, dict[str, Any]]) -> bool:
    return all(holds(data, path, op, operand) for path, ops in where.items() for op, operand in ops.items())


INTS = st.integers(-3, 3)
STRS = st.sampled_from(["", "a", "ab", "b", "B", "10", "é"])
RANGE_OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]

# Every path has one JSON type, so conditions never compare across types.
TYPED_DATA = st.fixed_dictionaries(
    {},
    optional={
        "n": INTS,
        "s": STRS,
        "b": st.booleans(),
        "m": st.fixed_dictionaries({}, optional={"n": INTS}),
        "z": st.none(),
    },
)


def _ops(values: st.SearchStrategy[Any], ops: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    single = st.tuples(st.sampled_from(ops), values)
    in_list = st.tuples(st.just("$in"), st.lists(values, min_size=1, max_size=3))
    return st.lists(st.one_of(single, in_list), min_size=1, max_size=2).map(dict)


TYPED_CONDITIONS = {
    "n": _ops(INTS, RANGE_OPS),
    "m.n": _ops(INTS, RANGE_OPS),
    "s": _ops(STRS, RANGE_OPS),
    "b": _ops(st.booleans(), ["$eq", "$ne"]),
    "z": st.sampled_from([{"$eq": None}, {"$ne": None}]),
    "missing": st.sampled_from([{"$eq": None}, {"$ne": None}, {"$eq": 1}, {"$ne": "a"}]),
}


@st.composite
def typed_where(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    paths = draw(st.lists(st.sampled_from(sorted(TYPED_CONDITIONS)), min_size=1, max_size=3, unique=True))
    return {path: draw(TYPED_CONDITIONS[path]) for path in paths}


@FAST
@given(rows=st.lists(TYPED_DATA, max_size=15), conditions=st.lists(typed_where(), min_size=1, max_size=4))
def test_where_filters_match_the_model(rows: list[dict[str, Any]], conditions: list[dict[str, Any]]) -> None:
    with memory_hive() as (hive, _):
        made = hive.remember_many([{"namespace": "f", "content": "row", "data": d} for d in rows])
        for where in conditions:
            expected = [m.id for m in made if matches(dict(m.data), where)]
            assert [m.id for m in listing(hive, where=where)] == expected, where
            found = {h.memory.id for h in hive.recall("row", where=where, k=1000)}
            assert found == set(expected), where


SCALAR = st.one_of(INTS, STRS, st.booleans())


@FAST
@given(
    values=st.lists(st.one_of(SCALAR, st.none()), max_size=12),
    op=st.sampled_from([*RANGE_OPS, "$in"]),
    operand=SCALAR,
)
def test_where_filters_match_the_model_across_types(values: list[Any], op: str, operand: Any) -> None:
    # Values of one path have mixed JSON types: comparisons must not match across types
    # (a string is not "greater than" 5, true is not equal to 1).
    if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(operand, bool):
        return  # refused by validation, covered by the contract tests
    where = {"x": {op: [operand] if op == "$in" else operand}}
    with memory_hive() as (hive, _):
        made = hive.remember_many([{"namespace": "f", "content": "row", "data": {"x": v}} for v in values])
        expected = [m.id for m in made if matches(dict(m.data), where)]
        got = [m.id for m in listing(hive, where=where)]
        assert got == expected, [(m.data["x"], m.id in got) for m in made]


# --------------------------------------------------------------------------- pagination


def sort_key(order_by: str) -> Any:
    def key(m: Memory) -> tuple[float, str]:
        if order_by == "importance":
            return (m.importance, m.id)
        if order_by == "occurred_at":
            return ((m.occurred_at or m.created_at).timestamp(), m.id)
        value = getattr(m, order_by)
        return (value.timestamp(), m.id)

    return key


STEP = st.sampled_from([0.0, 0.0, 0.1, 0.25, 1.0])
IMPORTANCE = st.sampled_from([0.0, 0.3, 0.5, 0.5, 1.0, 0.1 + 0.2])
OCCURRED = st.one_of(st.none(), st.sampled_from([-5.0, -0.1, 0.0, 0.3, 2.0, 1e-6]))


def _remember(hive: Hive, clock: hivemem.ManualClock, draw: st.DrawFn, label: str) -> Memory:
    clock.advance(draw(STEP))
    offset = draw(OCCURRED)
    occurred = None if offset is None else T0 + timedelta(seconds=offset)
    return hive.remember("p", label, importance=draw(IMPORTANCE), occurred_at=occurred)


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_pages_concatenate_to_the_full_listing(data: st.DataObject) -> None:
    order_by = data.draw(st.sampled_from(ORDER_COLUMNS), "order_by")
    descending = data.draw(st.booleans(), "descending")
    with memory_hive() as (hive, clock):
        made = [_remember(hive, clock, data.draw, f"m{i}") for i in range(data.draw(st.integers(0, 20), "n"))]
        for m in made:
            if data.draw(st.booleans()):
                clock.advance(data.draw(STEP))
                hive.update(m.id, importance=data.draw(IMPORTANCE))
        current = sorted(listing(hive), key=sort_key(order_by), reverse=descending)
        assert listing(hive, order_by=order_by, descending=descending) == current

        pages: list[Memory] = []
        cursor = None
        while True:
            size = data.draw(st.integers(1, 6), "page size")
            page = hive.list(order_by=order_by, descending=descending, limit=size, cursor=cursor)
            assert len(page) <= size
            assert page.next_cursor is None or len(page) == size
            pages += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == current


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_pagination_with_inserts_between_pages_never_repeats(data: st.DataObject) -> None:
    order_by = data.draw(st.sampled_from(ORDER_COLUMNS), "order_by")
    descending = data.draw(st.booleans(), "descending")
    with memory_hive() as (hive, clock):
        original = [_remember(hive, clock, data.draw, f"m{i}") for i in range(data.draw(st.integers(0, 15), "n"))]
        expected = [m.id for m in sorted(original, key=sort_key(order_by), reverse=descending)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            size = data.draw(st.integers(1, 5), "page size")
            page = hive.list(order_by=order_by, descending=descending, limit=size, cursor=cursor)
            seen += [m.id for m in page]
            pages += 1
            assert pages < 200
            for j in range(data.draw(st.integers(0, 2), "inserts")):
                _remember(hive, clock, data.draw, f"new {pages}.{j}")
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "a memory was listed twice"
        originals = set(expected)
        assert [i for i in seen if i in originals] == expected


# --------------------------------------------------------------------------- rank fusion

IDS = [f"id-{i:02d}" for i in range(12)]
RANKED = st.lists(st.sampled_from(IDS), unique=True, max_size=10)
WEIGHTS = st.builds(
    RankingWeights,
    keyword=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    vector=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    rrf_k=st.sampled_from([0.5, 1.0, 10.0, 60.0]),
)


def scored(ids: list[str]) -> list[ScoredId]:
    return [ScoredId(i, float(len(ids) - n)) for n, i in enumerate(ids)]


@settings(max_examples=300, deadline=None, database=None)
@given(keyword=RANKED, vector=RANKED, weights=WEIGHTS)
def test_fuse_properties(keyword: list[str], vector: list[str], weights: RankingWeights) -> None:
    fused = fuse(scored(keyword), scored(vector), weights)
    taking_part = [ranked for ranked, w in ((keyword, weights.keyword), (vector, weights.vector)) if ranked and w > 0]
    if not taking_part:
        assert fused == []
        return
    by_id = {f.id: f for f in fused}
    assert len(by_id) == len(fused)
    assert set(by_id) == {i for ranked in taking_part for i in ranked}
    for f in fused:
        assert 0.0 < f.relevance <= 1.0 + 1e-12
    assert [(-f.relevance, f.id) for f in fused] == sorted((-f.relevance, f.id) for f in fused)
    firsts = {ranked[0] for ranked in taking_part}
    if len(firsts) == 1:  # one memory tops every list that took part
        assert math.isclose(by_id[firsts.pop()].relevance, 1.0)
        assert math.isclose(fused[0].relevance, 1.0)
    else:
        assert fused[0].relevance < 1.0

    def rank(ranked: list[str], memory_id: str) -> float:
        return ranked.index(memory_id) if memory_id in ranked else math.inf

    # Monotonic: ranking at least as well in every list never gives a lower relevance.
    for a, fa in by_id.items():
        for b, fb in by_id.items():
            if all(rank(r, a) <= rank(r, b) for r in taking_part):
                assert fa.relevance >= fb.relevance - 1e-12
            if all(rank(r, a) < rank(r, b) for r in taking_part):
                assert fa.relevance > fb.relevance


@settings(max_examples=200, deadline=None, database=None)
@given(ranked=st.lists(st.sampled_from(IDS), unique=True, min_size=1, max_size=12), weights=WEIGHTS)
def test_fuse_single_list_is_strictly_decreasing_in_rank(ranked: list[str], weights: RankingWeights) -> None:
    if weights.keyword <= 0:
        return
    fused = fuse(scored(ranked), [], weights)
    assert [f.id for f in fused] == ranked
    assert fused[0].relevance == 1.0
    relevances = [f.relevance for f in fused]
    assert all(a > b for a, b in itertools.pairwise(relevances))
    assert all(f.vector == 0.0 for f in fused)
    assert [f.keyword for f in fused] == [s.score for s in scored(ranked)]


@settings(max_examples=300, deadline=None, database=None)
@given(
    keyword=st.dictionaries(st.sampled_from(IDS), st.sampled_from([1.0, 2.0, 3.0]), max_size=10),
    vector=st.dictionaries(st.sampled_from(IDS), st.sampled_from([0.1, 0.5, 0.9]), max_size=10),
    weights=WEIGHTS,
)
def test_fuse_equal_evidence_gives_equal_relevance(
    keyword: dict[str, float], vector: dict[str, float], weights: RankingWeights
) -> None:
    # Backends return tied scores in any order: shuffle the ties and the relevances must not change.
    def best_first(scores: dict[str, float], ties_reversed: bool) -> list[ScoredId]:
        by_id = sorted(scores, reverse=ties_reversed)
        order = sorted(by_id, key=lambda i: -scores[i])  # stable: ties keep the id order chosen above
        return [ScoredId(i, scores[i]) for i in order]

    one = {f.id: f.relevance for f in fuse(best_first(keyword, False), best_first(vector, False), weights)}
    two = {f.id: f.relevance for f in fuse(best_first(keyword, True), best_first(vector, True), weights)}
    assert one == two
    for a, rel_a in one.items():
        for b, rel_b in one.items():
            if keyword.get(a) == keyword.get(b) and vector.get(a) == vector.get(b):
                assert rel_a == rel_b
            if keyword.get(a, -1.0) >= keyword.get(b, -1.0) and vector.get(a, -1.0) >= vector.get(b, -1.0):
                assert rel_a >= rel_b - 1e-12
