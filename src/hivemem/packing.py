"""Context packing: one prompt text from a working-memory buffer and recalled memories, within a token budget.

:func:`pack` fills the budget in a fixed order: the buffer's system and
pinned messages, then recalled long-term memories best first (up to half of
what is left), then the newest conversation messages, then more memories if
room remains. Whatever does not fit, or repeats a message already in the
text, is reported in :attr:`Pack.left_out` with the reason, so an agent can
see what its prompt lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hivemem import validation as v
from hivemem.tokens import TokenCounter, checked_counter
from hivemem.working import PROTECTED_ROLES, BufferSettings, WorkingMessage

if TYPE_CHECKING:
    from hivemem.hive import Hive
    from hivemem.models import Hit

_MEMORIES = "Relevant memories:"
_CONVERSATION = "Conversation:"


@dataclass(frozen=True, slots=True)
class PackItem:
    """One candidate of a pack.

    Attributes:
        source: ``message`` (from the working memory) or ``memory`` (recalled).
        ref: The message's seq or the memory's id.
        tokens: Its line's length by the pack's token counter.
        reason: Why it was left out (``token_budget``, ``duplicate``); None when included.
    """

    source: str
    ref: str
    tokens: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"source": self.source, "ref": self.ref, "tokens": self.tokens, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Pack:
    """A packed prompt context.

    Attributes:
        text: The prompt text: recalled memories, then the conversation.
        tokens: Its length by ``counter`` (never above the budget).
        budget: The token budget asked for.
        counter: The token counter's name.
        included: What the text holds, in text order.
        left_out: What did not make it, with the reason.
    """

    text: str
    tokens: int
    budget: int
    counter: str
    included: tuple[PackItem, ...]
    left_out: tuple[PackItem, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "text": self.text,
            "tokens": self.tokens,
            "budget": self.budget,
            "counter": self.counter,
            "included": [i.to_dict() for i in self.included],
            "left_out": [i.to_dict() for i in self.left_out],
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Pack:
        """The reverse of :meth:`to_dict`."""
        return cls(
            payload["text"],
            payload["tokens"],
            payload["budget"],
            payload["counter"],
            tuple(PackItem(**i) for i in payload["included"]),
            tuple(PackItem(**i) for i in payload["left_out"]),
        )


@dataclass
class _Line:
    item: PackItem
    text: str
    section: str
    order: tuple[int, int]


def pack(hive: Hive, query: str, token_budget: int, working: str | None, namespace: str | None, k: int) -> Pack:
    """See :meth:`hivemem.Hive.pack`."""
    budget = v.positive_int(token_budget, "token_budget", v.MAX_INT)
    k = v.positive_int(k, "k", 1000)
    messages: list[WorkingMessage] = []
    counter: TokenCounter = checked_counter(None)
    if working is not None:
        stats = hive.working_stats(working)
        if stats.settings:
            counter = BufferSettings.of(stats.settings, "stored settings").token_counter
        messages = hive.working_messages(working)
    hits: list[Hit] = hive.recall(query, namespace=namespace, k=k)

    def line(source: str, ref: str, text: str, section: str, order: tuple[int, int]) -> _Line:
        return _Line(PackItem(source, ref, counter.count(text)), text, section, order)

    fixed = [m for m in messages if m.pinned or m.role in PROTECTED_ROLES]
    recent = [m for m in messages if not (m.pinned or m.role in PROTECTED_ROLES)]
    said = {" ".join(m.content.split()) for m in messages}
    left_out: list[PackItem] = []
    memory_lines: list[_Line] = []
    for rank, hit in enumerate(hits):
        text = " ".join(hit.memory.content.split())
        if text in said:
            left_out.append(PackItem("memory", hit.memory.id, counter.count(f"- {text}"), "duplicate"))
        else:
            memory_lines.append(line("memory", hit.memory.id, f"- {text}", _MEMORIES, (0, rank)))
    chosen: list[_Line] = []
    used = 0

    def take(candidate: _Line, limit: int) -> bool:
        nonlocal used
        headers = {c.section for c in chosen} | {candidate.section}
        cost = (
            candidate.item.tokens
            + sum(counter.count(h) for h in headers)
            - sum(counter.count(h) for h in {c.section for c in chosen})
        )
        if used + cost > limit:
            return False
        chosen.append(candidate)
        used += cost
        return True

    def message_line(m: WorkingMessage) -> _Line:
        return line("message", str(m.seq), f"{m.role}: {' '.join(m.content.split())}", _CONVERSATION, (1, m.seq))

    waiting: list[_Line] = []
    for m in fixed:
        candidate = message_line(m)
        if not take(candidate, budget):
            waiting.append(candidate)
    rest = list(memory_lines)
    half = used + (budget - used) // 2
    while rest and take(rest[0], half):
        rest.pop(0)
    stopped = False
    for m in reversed(recent):
        candidate = message_line(m)
        if stopped or not take(candidate, budget):
            stopped = True  # the conversation stays contiguous: nothing older than a message left out
            waiting.append(candidate)
    for candidate in list(rest):
        if take(candidate, budget):
            rest.remove(candidate)
    waiting += rest
    text, included = _render(chosen)
    while chosen and counter.count(text) > budget:  # joining may count differently from the parts
        waiting.append(chosen.pop())
        text, included = _render(chosen)
    left_out += [PackItem(c.item.source, c.item.ref, c.item.tokens, "token_budget") for c in waiting]
    return Pack(text, counter.count(text) if text else 0, budget, counter.name, included, tuple(left_out))


def _render(chosen: list[_Line]) -> tuple[str, tuple[PackItem, ...]]:
    ordered = sorted(chosen, key=lambda c: c.order)
    parts: list[str] = []
    section = None
    for c in ordered:
        if c.section != section:
            parts.append(c.section)
            section = c.section
        parts.append(c.text)
    return "\n".join(parts), tuple(c.item for c in ordered)
