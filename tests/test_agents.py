"""Agents on every deployment: profiles, outcomes, selection by the weights' formula, context from experience.

The HashEmbedder makes texts similar by shared words, so "relevant" experience
below shares the task's words and irrelevant experience shares none (not even
"the").
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import hivemem
from conftest import OpenHive
from hivemem import AgentScore, ConfigError, Hive, InvalidInput, NotFound, SelectionWeights
from hivemem.agents import estimate_tokens, specialization_match, success_rate

NS = "team/agents"
TASK = "migrate orders database schema"


def setup_rivals(hive: Hive) -> None:
    """Two agents with equal specializations: ``expert`` did one task like TASK; ``veteran`` many unlike it."""
    hive.register_agent(NS, "expert", specializations=["backend"])
    hive.register_agent(NS, "veteran", specializations=["backend"])
    hive.record_outcome("expert", "migrate billing database schema", namespace=NS, success=True, duration=30)
    for i in range(8):
        hive.record_outcome("veteran", f"polish frontend widget colours {i}", namespace=NS, success=True)


def by_agent(ranking: list[AgentScore]) -> dict[str, AgentScore]:
    return {s.agent: s for s in ranking}


def expected(score: AgentScore, weights: SelectionWeights) -> float:
    return (
        weights.specialization * score.specialization
        + weights.experience * score.experience
        + weights.performance * score.performance
    )


# --------------------------------------------------------------------------- profiles and outcomes


def test_register_and_list_agents(hive: Hive) -> None:
    made = hive.register_agent(NS, "coder", specializations=["python", "sql"], metadata={"model": "m-1"})
    assert (made.name, made.namespace, made.specializations) == ("coder", NS, ("python", "sql"))
    assert made.metadata == {"model": "m-1"}
    assert (made.successes, made.failures, made.success_rate, made.mean_duration) == (0, 0, 0.5, None)
    hive.register_agent(f"{NS}/sub", "alpha")
    assert [(p.name, p.namespace) for p in hive.agents("team")] == [("alpha", f"{NS}/sub"), ("coder", NS)]
    assert [p.name for p in hive.agents(f"{NS}/sub")] == ["alpha"]


def test_registering_again_keeps_the_track_record(hive: Hive) -> None:
    hive.register_agent(NS, "coder", specializations=["python"], metadata={"model": "m-1"})
    hive.record_outcome("coder", "write a parser", namespace=NS, success=True)
    again = hive.register_agent(NS, "coder", specializations=["python", "rust"])
    assert again.specializations == ("python", "rust")
    assert again.metadata == {"model": "m-1"}  # not given: kept
    assert again.successes == 1
    kept = hive.register_agent(NS, "coder", metadata={"model": "m-2"})
    assert kept.specializations == ("python", "rust") and kept.metadata == {"model": "m-2"}


def test_an_outcome_stores_an_episode_and_counts(hive: Hive) -> None:
    hive.register_agent(NS, "coder")
    first = hive.record_outcome(
        "coder", "write a parser", namespace=NS, success=True, duration=10, notes="used a PEG", lesson="test edge cases"
    )
    episode = first.episode
    assert (episode.kind, episode.agent_id, episode.namespace) == ("episode", "coder", NS)
    assert episode.data["success"] is True and episode.data["lesson"] == "test edge cases"
    assert episode.data["action"] == "used a PEG" and episode.data["metrics"] == {"duration": 10.0}
    assert hive.get(episode.id) == episode
    second = hive.record_outcome("coder", "write a lexer", namespace=NS, success=False, duration=30)
    profile = second.profile
    assert (profile.successes, profile.failures, profile.mean_duration) == (1, 1, 20.0)
    assert profile.success_rate == pytest.approx(2 / 4)
    assert hive.agents(NS) == [profile]


def test_an_outcome_of_an_unknown_agent_writes_nothing(hive: Hive) -> None:
    hive.register_agent(NS, "coder")
    with pytest.raises(NotFound):
        hive.record_outcome("ghost", "write a parser", namespace=NS, success=True)
    with pytest.raises(NotFound):
        hive.record_outcome("coder", "write a parser", namespace=f"{NS}/elsewhere", success=True)
    assert hive.recall("parser", kinds="episode") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"success": "yes"}, "success"),
        ({"success": True, "duration": -1}, "duration"),
        ({"success": True, "duration": float("nan")}, "duration"),
        ({"success": True, "notes": ""}, "notes"),
        ({"success": True, "lesson": " "}, "lesson"),
    ],
)
def test_bad_outcomes_are_refused(hive: Hive, kwargs: dict[str, Any], field: str) -> None:
    hive.register_agent(NS, "coder")
    with pytest.raises(InvalidInput) as err:
        hive.record_outcome("coder", "write a parser", namespace=NS, **kwargs)
    assert err.value.field == field
    assert hive.agents(NS)[0].version == 1


def test_bad_registrations_are_refused(hive: Hive) -> None:
    for name, kwargs, field in (
        ("a b", {}, "name"),
        ("", {}, "name"),
        ("ok", {"specializations": "python"}, "specializations"),
        ("ok", {"metadata": [1]}, "metadata"),
    ):
        with pytest.raises(InvalidInput) as err:
            hive.register_agent(NS, name, **kwargs)
        assert err.value.field == field
    assert hive.agents(NS) == []


def test_concurrent_outcomes_are_all_counted(hive: Hive) -> None:
    hive.register_agent(NS, "coder")
    start = threading.Barrier(6)

    def work(i: int) -> None:
        start.wait()
        for j in range(3):
            hive.record_outcome("coder", f"job {i} {j}", namespace=NS, success=(i + j) % 2 == 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    profile = hive.agents(NS)[0]
    assert profile.successes + profile.failures == 18 and profile.successes == 9
    assert profile.version == 19


# --------------------------------------------------------------------------- selection


def test_relevant_successful_experience_beats_a_higher_base_rate(hive: Hive) -> None:
    setup_rivals(hive)
    ranking = hive.select_agent(TASK, namespace=NS)
    assert [s.agent for s in ranking] == ["expert", "veteran"]
    scores = by_agent(ranking)
    assert scores["veteran"].performance > scores["expert"].performance  # the higher base rate
    assert scores["expert"].experience > scores["veteran"].experience
    assert scores["expert"].specialization == scores["veteran"].specialization
    assert scores["expert"].performance == pytest.approx(success_rate(1, 0, SelectionWeights()))
    for score in ranking:
        assert score.score == pytest.approx(expected(score, SelectionWeights()))
    assert len(scores["expert"].evidence) == 1


def test_with_no_weight_on_experience_the_base_rate_wins(hive: Hive) -> None:
    setup_rivals(hive)
    weights = {"experience": 0.0}
    ranking = hive.select_agent(TASK, namespace=NS, weights=weights)
    assert [s.agent for s in ranking] == ["veteran", "expert"]
    chosen = SelectionWeights(experience=0.0)
    for score in ranking:
        assert score.score == pytest.approx(expected(score, chosen))


def test_weights_from_the_config_apply_and_a_call_overrides_them(open_hive: OpenHive) -> None:
    hive = open_hive(selection={"experience": 0.0})
    setup_rivals(hive)
    assert hive.select_agent(TASK, namespace=NS)[0].agent == "veteran"
    assert hive.select_agent(TASK, namespace=NS, weights={"experience": 0.3})[0].agent == "expert"


def test_specialization_decides_when_the_records_are_equal(hive: Hive) -> None:
    hive.register_agent(NS, "dba", specializations=["database schema"])
    hive.register_agent(NS, "designer", specializations=["frontend"])
    ranking = hive.select_agent(TASK, namespace=NS)
    assert [(s.agent, s.specialization) for s in ranking] == [("dba", 1.0), ("designer", 0.0)]
    assert [s.experience for s in ranking] == [0.0, 0.0]
    with_skills = hive.select_agent(TASK, namespace=NS, skills=["frontend", "accessibility"])
    assert [(s.agent, s.specialization) for s in with_skills] == [("designer", 0.5), ("dba", 0.0)]


def test_candidates_limit_the_ranking(hive: Hive) -> None:
    setup_rivals(hive)
    assert [s.agent for s in hive.select_agent(TASK, namespace=NS, candidates=["veteran"])] == ["veteran"]
    with pytest.raises(NotFound):
        hive.select_agent(TASK, namespace=NS, candidates=["ghost"])
    assert hive.select_agent(TASK, namespace="team/empty") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weights": {"luck": 1.0}}, "weights.luck"),
        ({"weights": {"experience": -1}}, "weights.experience"),
        ({"weights": {"experience": True}}, "weights.experience"),
        ({"weights": {"specialization": 0, "experience": 0, "performance": 0}}, "weights"),
        ({"weights": [1, 2, 3]}, "weights"),
        ({"candidates": "expert"}, "candidates"),
        ({"skills": "backend"}, "skills"),
    ],
)
def test_bad_selection_arguments(hive: Hive, kwargs: dict[str, Any], field: str) -> None:
    setup_rivals(hive)
    with pytest.raises(InvalidInput) as err:
        hive.select_agent(TASK, namespace=NS, **kwargs)
    assert err.value.field == field


def test_specialization_match_and_success_rate() -> None:
    assert specialization_match("write the database migrations", (), ["database migration"]) == 1.0
    assert specialization_match("write the database migrations", (), ["python", "database tuning"]) == 0.5
    assert specialization_match("anything", ["python", "sql"], ["Python"]) == 0.5
    assert specialization_match("anything", ["python"], []) == 0.0
    prior = SelectionWeights()
    assert success_rate(0, 0, prior) == 0.5
    assert success_rate(1, 0, prior) == pytest.approx(2 / 3)
    assert success_rate(10, 0, prior) == pytest.approx(11 / 12)


# --------------------------------------------------------------------------- context


def test_context_puts_successes_first_and_shows_lessons(hive: Hive) -> None:
    hive.register_agent(NS, "dba")
    hive.record_outcome(
        "dba", "migrate orders database schema", namespace=NS, success=False, lesson="take a backup first"
    )
    hive.record_outcome("dba", "migrate users database schema", namespace=NS, success=True, lesson="lock tables")
    hive.register_agent(NS, "other")
    hive.record_outcome("other", "migrate orders database schema", namespace=NS, success=True)
    context = hive.context_for("dba", TASK, namespace=NS)
    lines = context.text.splitlines()
    assert lines[0] == "Past experience of dba relevant to this task:"
    assert lines[1].startswith("- [SUCCESS] migrate users database schema")
    assert "  Lesson: lock tables" in lines and "  Lesson: take a backup first" in lines
    assert lines.index("  Lesson: lock tables") < lines.index("  Lesson: take a backup first")
    assert len(context.memory_ids) == 2 and context.omitted == 0
    assert context.tokens == estimate_tokens(context.text)
    assert str(context) == context.text


def test_context_stays_within_the_token_budget(hive: Hive) -> None:
    hive.register_agent(NS, "dba")
    for i in range(6):
        hive.record_outcome(
            "dba", f"migrate orders database schema step {i}", namespace=NS, success=True, lesson=f"lesson {i}"
        )
    full = hive.context_for("dba", TASK, namespace=NS, k=6)
    assert len(full.memory_ids) == 6
    for budget in (full.tokens, full.tokens - 1, full.tokens // 2, 30, 5):
        bounded = hive.context_for("dba", TASK, namespace=NS, k=6, token_budget=budget)
        assert estimate_tokens(bounded.text) <= budget
        assert bounded.tokens == estimate_tokens(bounded.text)
        assert len(bounded.memory_ids) + bounded.omitted == 6
        assert list(bounded.memory_ids) == [i for i in full.memory_ids if i in bounded.memory_ids]
    assert hive.context_for("dba", TASK, namespace=NS, k=6, token_budget=full.tokens - 1).omitted >= 1
    nothing = hive.context_for("dba", TASK, namespace=NS, token_budget=5)
    assert (nothing.text, nothing.memory_ids, nothing.tokens) == ("", (), 0)
    assert hive.context_for("dba", TASK, namespace=NS, k=2).memory_ids == full.memory_ids[:2]


def test_bad_context_arguments(hive: Hive) -> None:
    for kwargs, field in (({"token_budget": 0}, "token_budget"), ({"k": 0}, "k")):
        with pytest.raises(InvalidInput) as err:
            hive.context_for("dba", TASK, namespace=NS, **kwargs)
        assert err.value.field == field
    with pytest.raises(InvalidInput) as err:
        hive.context_for("dba", " ", namespace=NS)
    assert err.value.field == "task"


def test_agent_records_stay_out_of_recall(hive: Hive) -> None:
    hive.register_agent(NS, "dba", specializations=["database schema"])
    assert hive.recall("database schema", namespace="team") == []
    assert [h.memory.kind for h in hive.recall("database schema", kinds="agent")] == ["agent"]


def test_a_users_own_agent_record_is_not_a_profile(hive: Hive) -> None:
    hive.remember(NS, "my agent", kind="agent", key="agent:coder", data={"successes": "many"})
    assert hive.agents(NS) == []
    with pytest.raises(NotFound):
        hive.record_outcome("coder", "write a parser", namespace=NS, success=True)
    made = hive.register_agent(NS, "coder", specializations=["python"])
    assert (made.successes, made.version) == (0, 2)


def test_without_a_namespace_every_readable_agent_takes_part(hive: Hive) -> None:
    setup_rivals(hive)
    hive.register_agent("elsewhere", "outsider", specializations=["backend"])
    assert [p.name for p in hive.agents()] == ["expert", "outsider", "veteran"]
    assert hive.select_agent(TASK)[0].agent == "expert"
    assert [s.agent for s in hive.select_agent(TASK, ["outsider", "veteran"])] == ["veteran", "outsider"]
    assert hive.context_for("expert", TASK).memory_ids != ()


@pytest.mark.parametrize(
    "selection",
    [{"experience": -1}, {"luck": 1}, {"specialization": 0, "experience": 0, "performance": 0}, {"experience_pool": 0}],
)
def test_bad_selection_config_is_a_config_error(selection: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        hivemem.open(":memory:", embedder=None, selection=selection)
