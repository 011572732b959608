"""Agents: profiles with specializations and a track record, selection for a task, and context from experience.

An agent profile is an ``agent`` memory record keyed ``agent:{name}`` in its
namespace: specializations, metadata and counters (successes, failures, time
spent). :meth:`hivemem.Hive.record_outcome` stores the outcome as an episode
(``agent_id`` = the agent) and bumps the counters in the same transaction, so
the rate and the episodes never disagree and concurrent outcomes are all
counted.

:meth:`hivemem.Hive.select_agent` scores each agent for a task as
``w_spec * specialization + w_exp * experience + w_perf * performance``
(:class:`~hivemem.config.SelectionWeights`), every part 0..1:

* specialization (:func:`specialization_match`): with required skills, the
  fraction of them the agent's specializations name; without, how fully the
  best of its specializations appears in the task's words.
* experience (:func:`experience_of`): one recall of the task over the episodes
  under the namespace; the agent's best ``relevance x success`` among them
  (a failed episode counts 0). Relevance is rank-fused, so it compares agents
  with each other for this task: the agent whose successful episode ranks
  first gets 1.
  Episodes are matched to agents by ``agent_id``, so a name means one agent
  across namespaces.
* performance (:func:`success_rate`): the success rate smoothed by
  pseudo-counts (1 success and 1 failure by default), so one lucky success is
  0.67, not a perfect 1, and an agent without outcomes is 0.5.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from hivemem import validation as v
from hivemem.config import SelectionWeights
from hivemem.errors import InvalidInput
from hivemem.models import Hit, Memory

AGENT_KIND = "agent"
#: Most specializations of one agent.
MAX_SPECIALIZATIONS = 32
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,99}$")
_WORD = re.compile(r"\w+")
_WEIGHTS = ("specialization", "experience", "performance")


def agent_key(name: str) -> str:
    """The key of an agent's profile record."""
    return f"agent:{name}"


def checked_name(value: object, field: str = "agent") -> str:
    """An agent name: 1-100 letters, digits or ``_ . : @ -``, also the ``agent_id`` of its episodes.

    Raises:
        InvalidInput: Anything else.
    """
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInput(field, "must be 1-100 letters, digits or _ . : @ - (starting with a letter, digit or _)")
    return value


def estimate_tokens(text: str) -> int:
    """A model-free token estimate: about four UTF-8 bytes per token, rounded up.

    The hook for a real tokenizer is the ``count`` argument of :func:`format_context`.
    """
    return math.ceil(len(text.encode("utf-8", errors="surrogatepass")) / 4)


def _words(text: str) -> set[str]:
    """Lowercase words with a trailing plural ``s`` folded (``migrations`` matches ``migration``)."""
    out = set()
    for word in _WORD.findall(text.lower()):
        out.add(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word)
    return out


def specialization_match(task: str, skills: Sequence[str], specializations: Sequence[str]) -> float:
    """How well an agent's specializations fit a task, 0..1.

    Words are compared lowercased, a plural ``s`` folded. With ``skills`` (what
    the task requires): the fraction of them whose every word is in one
    specialization (``"python"`` is covered by ``"python scripting"``,
    ``"database migrations"`` not by ``"database"``). Without: the best
    specialization's share of words found in the task text (``"database
    migrations"`` against "write the database migration" is 1.0, ``"python"``
    against it 0).
    """
    specs = [_words(s) for s in specializations if _words(s)]
    if not specs:
        return 0.0
    if skills:
        wanted = [_words(s) for s in skills if _words(s)]
        covered = sum(1 for w in wanted if any(w <= s for s in specs))
        return covered / len(wanted) if wanted else 0.0
    text = _words(task)
    return max(len(s & text) / len(s) for s in specs)


def success_rate(successes: int, failures: int, weights: SelectionWeights) -> float:
    """The success rate with the weights' pseudo-counts added: ``(s + a) / (s + f + a + b)``."""
    a, b = weights.prior_successes, weights.prior_failures
    total = successes + failures + a + b
    return (successes + a) / total if total > 0 else 0.5


def experience_of(agent: str, hits: Sequence[Hit]) -> tuple[float, tuple[str, ...]]:
    """The agent's best ``relevance x success`` among recalled episodes, and its successful ones' ids."""
    mine = [h for h in hits if h.memory.agent_id == agent and h.memory.data.get("success") is True]
    best = max((float(h.scores.get("relevance", 0.0)) for h in mine), default=0.0)
    return best, tuple(h.memory.id for h in mine)


def selection_weights(base: SelectionWeights, given: object) -> SelectionWeights:
    """``base`` with the per-call ``weights`` (specialization, experience, performance) applied.

    Raises:
        InvalidInput: Not a dict of those names to non-negative numbers, or all three zero.
    """
    values = {name: getattr(base, name) for name in _WEIGHTS}
    if given is not None:
        if not isinstance(given, Mapping):
            raise InvalidInput("weights", f"must be a dict of {', '.join(_WEIGHTS)} to numbers")
        for name, value in given.items():
            if name not in _WEIGHTS:
                raise InvalidInput(f"weights.{name}", f"unknown weight; known: {', '.join(_WEIGHTS)}")
            values[name] = value
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InvalidInput(f"weights.{name}", "must be a number of at least 0", value=repr(value)[:80])
    if not any(values.values()):
        raise InvalidInput("weights", "at least one weight must be above 0")
    return SelectionWeights(
        **{**{f.name: getattr(base, f.name) for f in fields(base)}, **{k: float(x) for k, x in values.items()}}
    )


def checked_specializations(value: object, field: str = "specializations") -> tuple[str, ...]:
    """Up to 32 specializations (labels like tags: ``"python"``, ``"database migrations"``)."""
    out = v.tags(value, field)
    if len(out) > MAX_SPECIALIZATIONS:
        raise InvalidInput(field, f"at most {MAX_SPECIALIZATIONS}")
    return out


def profile_data(
    current: Mapping[str, Any] | None,
    name: str,
    specializations: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A profile's data after (re-)registering: given fields replaced, counters kept."""
    data: dict[str, Any] = (
        dict(current)
        if current
        else {
            "name": name,
            "specializations": [],
            "metadata": {},
            "successes": 0,
            "failures": 0,
            "total_duration": 0.0,
            "timed": 0,
        }
    )
    if specializations is not None:
        data["specializations"] = list(specializations)
    if metadata is not None:
        data["metadata"] = dict(metadata)
    return data


def profile_content(name: str, specializations: Sequence[str]) -> str:
    """The searchable text of a profile."""
    return f"Agent {name}" + (f": {', '.join(specializations)}" if specializations else "")


def counted(data: Mapping[str, Any], success: bool, duration: float | None) -> dict[str, Any]:
    """A profile's data with one more outcome counted."""
    out = dict(data)
    out["successes" if success else "failures"] = int(out.get("successes" if success else "failures", 0)) + 1
    if duration is not None:
        out["total_duration"] = float(out.get("total_duration", 0.0)) + duration
        out["timed"] = int(out.get("timed", 0)) + 1
    return out


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """A registered agent and its track record.

    Attributes:
        name: The agent's name (the ``agent_id`` of its episodes).
        namespace: Where the profile is stored.
        specializations: What it is good at.
        metadata: Anything else about it (model, cost, owner...).
        successes: Outcomes recorded as successful.
        failures: Outcomes recorded as failed.
        success_rate: Smoothed: ``(successes + 1) / (successes + failures + 2)`` with the default prior.
        mean_duration: Mean duration of the outcomes that gave one (seconds), else None.
        version: The profile record's version.
        memory_id: The profile record's memory id.
        updated_at: When it last changed.
    """

    name: str
    namespace: str
    specializations: tuple[str, ...]
    metadata: Mapping[str, Any]
    successes: int
    failures: int
    success_rate: float
    mean_duration: float | None
    version: int
    memory_id: str
    updated_at: datetime

    @classmethod
    def of(cls, memory: Memory, weights: SelectionWeights) -> AgentProfile:
        """The profile an ``agent`` record holds."""
        d = memory.data
        successes, failures, timed = int(d.get("successes", 0)), int(d.get("failures", 0)), int(d.get("timed", 0))
        assert memory.updated_at is not None
        return cls(
            name=d["name"],
            namespace=memory.namespace,
            specializations=tuple(d.get("specializations") or ()),
            metadata=dict(d.get("metadata") or {}),
            successes=successes,
            failures=failures,
            success_rate=success_rate(successes, failures, weights),
            mean_duration=float(d.get("total_duration", 0.0)) / timed if timed else None,
            version=memory.version,
            memory_id=memory.id,
            updated_at=memory.updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["specializations"] = list(self.specializations)
        out["metadata"] = dict(self.metadata)
        out["updated_at"] = self.updated_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> AgentProfile:
        """Rebuild a profile from :meth:`to_dict` output."""
        values = dict(payload)
        values["specializations"] = tuple(values["specializations"])
        values["updated_at"] = datetime.fromisoformat(values["updated_at"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AgentScore:
    """One agent's score for a task, with each weighted part.

    Attributes:
        agent: The agent's name.
        namespace: Where its profile is stored.
        score: ``w_spec * specialization + w_exp * experience + w_perf * performance``.
        specialization: How well its specializations fit the task (0..1).
        experience: Its best relevance x success among recalled episodes (0..1).
        performance: Its smoothed overall success rate (0..1).
        evidence: Ids of its successful episodes the recall found, best first.
    """

    agent: str
    namespace: str
    score: float
    specialization: float
    experience: float
    performance: float
    evidence: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["evidence"] = list(self.evidence)
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> AgentScore:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**{**payload, "evidence": tuple(payload["evidence"])})


def ranked(
    task: str, skills: Sequence[str], profiles: Iterable[AgentProfile], hits: Sequence[Hit], weights: SelectionWeights
) -> list[AgentScore]:
    """Score every profile for the task (see the module docstring), best first, ties by name."""
    out = []
    for p in profiles:
        spec = specialization_match(task, skills, p.specializations)
        exp, evidence = experience_of(p.name, hits)
        perf = p.success_rate
        total = weights.specialization * spec + weights.experience * exp + weights.performance * perf
        out.append(AgentScore(p.name, p.namespace, total, spec, exp, perf, evidence))
    out.sort(key=lambda s: (-s.score, s.agent, s.namespace))
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """A recorded task outcome: the episode stored and the agent's profile after counting it.

    Attributes:
        episode: The episode memory (kind ``episode``, ``agent_id`` the agent).
        profile: The agent's profile with the outcome counted.
    """

    episode: Memory
    profile: AgentProfile

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"episode": self.episode.to_dict(), "profile": self.profile.to_dict()}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Outcome:
        """Rebuild from :meth:`to_dict` output."""
        return cls(Memory.from_dict(payload["episode"]), AgentProfile.from_dict(payload["profile"]))


@dataclass(frozen=True, slots=True)
class ExperienceContext:
    """Past experiences of an agent formatted for a prompt.

    Attributes:
        agent: Whose experiences.
        text: The prompt text: successful experiences first, then failures, each with its lesson.
        memory_ids: The episodes included, in the order shown.
        tokens: The text's size in tokens.
        omitted: Episodes recalled but left out to stay within the token budget.
    """

    agent: str
    text: str
    memory_ids: tuple[str, ...]
    tokens: int
    omitted: int

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        return {
            "agent": self.agent,
            "text": self.text,
            "memory_ids": list(self.memory_ids),
            "tokens": self.tokens,
            "omitted": self.omitted,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ExperienceContext:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            payload["agent"], payload["text"], tuple(payload["memory_ids"]), payload["tokens"], payload["omitted"]
        )


def _entry(memory: Memory) -> str:
    d = memory.data
    mark = "SUCCESS" if d.get("success") is True else "FAILURE"
    lines = [f"- [{mark}] {d.get('context') or memory.content}"]
    for label, name in (("Action", "action"), ("Outcome", "outcome"), ("Lesson", "lesson")):
        if d.get(name):
            lines.append(f"  {label}: {d[name]}")
    return "\n".join(lines)


def format_context(
    agent: str, hits: Sequence[Hit], token_budget: int | None, count: Callable[[str], int] = estimate_tokens
) -> ExperienceContext:
    """Recalled episodes as prompt text: successful ones first (each group by relevance), lessons shown.

    Entries are added best first while the whole text stays within
    ``token_budget`` (as ``count`` measures it); one that does not fit is left
    out and smaller ones after it may still go in. With no entry fitting, the
    text is empty.
    """
    ordered = [h.memory for h in hits if h.memory.data.get("success") is True]
    ordered += [h.memory for h in hits if h.memory.data.get("success") is not True]
    header = f"Past experience of {agent} relevant to this task:"
    parts: list[str] = []
    chosen: list[str] = []
    for memory in ordered:
        candidate = "\n".join([header, *parts, _entry(memory)])
        if token_budget is None or count(candidate) <= token_budget:
            parts.append(_entry(memory))
            chosen.append(memory.id)
    text = "\n".join([header, *parts]) if parts else ""
    return ExperienceContext(agent, text, tuple(chosen), count(text) if text else 0, len(ordered) - len(chosen))


def is_profile(memory: Memory) -> bool:
    """Whether a record is a profile this module wrote (a user's own ``agent`` record may hold anything)."""
    d = memory.data
    counts = [d.get(name) for name in ("successes", "failures", "timed")]
    duration = d.get("total_duration")
    return (
        memory.kind == AGENT_KIND
        and isinstance(d.get("name"), str)
        and isinstance(d.get("specializations"), list)
        and all(isinstance(s, str) for s in d["specializations"])
        and isinstance(d.get("metadata"), dict)
        and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)
        and isinstance(duration, int | float)
        and not isinstance(duration, bool)
    )
