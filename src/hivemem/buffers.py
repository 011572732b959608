"""The working-memory operations behind the Hive's ``working_*`` methods, one store transaction each.

An append reads the buffer's row with its claim lock, so appends to one
buffer take turns on every backend; it redacts and counts the message with
the buffer's own settings, drops expired messages, evicts what the strategy
names until the limits hold (archiving it if the buffer archives), and stores
the message and the counters, all in that one transaction: a buffer is never
seen over its limits. A flush summarises outside any transaction (a model may
be slow), then, in one transaction, checks that the messages it read are
still there and replaces them with the summary; if another writer moved them
first it reads again. Either the summary and the removal both commit or
neither does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hivemem import validation as v
from hivemem.clock import new_id, to_datetime, utc
from hivemem.errors import InvalidInput
from hivemem.records import draft
from hivemem.storage.base import StoreTx
from hivemem.summarize import ExtractiveSummarizer, clip
from hivemem.working import (
    PROTECTED_ROLES,
    SUMMARY_ROLE,
    BufferSettings,
    Entry,
    WorkingMessage,
    WorkingStats,
    above_threshold,
    plan_evictions,
    plan_flush,
)

if TYPE_CHECKING:
    from hivemem.hive import Hive

_MAX_PRIORITY = 2**31 - 1
#: Reads before a flush gives up on a buffer other writers keep changing.
_FLUSH_TRIES = 5


def buffer_key(key: object) -> str:
    """A checked buffer key (a namespace path)."""
    return v.namespace(key, "key")


def _settings_of(row: Mapping[str, Any] | None) -> BufferSettings:
    stored = row["settings"] if row else None
    return BufferSettings.of(stored, "stored settings") if stored else BufferSettings()


def _entry(message: Mapping[str, Any]) -> Entry:
    protected = message["pinned"] or message["role"] in PROTECTED_ROLES
    return Entry(
        message["seq"], message["tokens"], message["priority"], protected, message["last_used"], message["uses"]
    )


def _record(message: Mapping[str, Any]) -> WorkingMessage:
    return WorkingMessage(
        seq=int(message["seq"]),
        role=message["role"],
        content=message["content"],
        tokens=int(message["tokens"]),
        priority=int(message["priority"]),
        pinned=bool(message["pinned"]),
        metadata=message["metadata"],
        created_at=utc(message["created_at"]),
        uses=int(message["uses"]),
    )


def _stats(
    key: str, row: Mapping[str, Any] | None, live: Sequence[Mapping[str, Any]], dropped: int = 0
) -> WorkingStats:
    if row is None:
        return WorkingStats(key)
    return WorkingStats(
        key=key,
        tokens=sum(int(m["tokens"]) for m in live),
        messages=len(live),
        evictions=row["evictions"],
        flushes=row["flushes"],
        summarized=row["summarized"],
        archived=row["archived"],
        dropped=dropped,
        settings=row["settings"],
    )


def _live(tx: StoreTx, key: str, settings: BufferSettings, now: float, *, drop: bool) -> list[dict[str, Any]]:
    """The buffer's messages, or none if it was not written for its ``ttl``; with ``drop``, those are deleted."""
    entries = tx.working_entries(key)
    if settings.ttl is None or not entries or max(m["created_at"] for m in entries) > now - settings.ttl:
        return entries
    if drop:
        tx.clear_working_messages(key)
    return []


def _archive(hive: Hive, tx: StoreTx, key: str, messages: Sequence[Mapping[str, Any]], now: float) -> int:
    """Keep messages as long-term memories (kind ``message``) in the buffer's namespace."""
    for message in messages:
        data = {
            "role": message["role"],
            "seq": int(message["seq"]),
            "priority": int(message["priority"]),
            "metadata": message["metadata"],
            "buffer": key,
        }
        memory = draft(
            key,
            message["content"],
            hive.config,
            kind="message",
            data=data,
            occurred_at=to_datetime(message["created_at"]),
        ).new_memory(new_id(), now)
        hive._retriever.store_vector_now(tx, memory.content)
        tx.insert(memory)
    return len(messages)


def append(
    hive: Hive,
    key: str,
    role: str,
    content: str,
    *,
    priority: int,
    metadata: Mapping[str, Any] | None,
    pinned: bool,
    settings: Mapping[str, Any] | None,
) -> WorkingStats:
    """See :meth:`hivemem.Hive.working_append`."""
    ns = buffer_key(key)
    role = v.kind(role, "role")
    text = v.content(content, hive.config.max_content_bytes)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > _MAX_PRIORITY:
        raise InvalidInput("priority", f"must be a whole number from {-_MAX_PRIORITY} to {_MAX_PRIORITY}")
    meta = v.data(metadata, hive.config.max_data_bytes, "metadata")
    pin = v.boolean(pinned, "pinned") or meta.get("pinned") is True
    given = None if settings is None else BufferSettings.of(settings)
    hive._may("write", ns)

    def write(tx: StoreTx) -> WorkingStats:
        now = hive.clock.now()
        row = tx.working_buffer(ns, create_at=now)
        assert row is not None
        chosen = given or _settings_of(row)
        row["settings"] = chosen.to_dict()
        live = _live(tx, ns, chosen, now, drop=True)
        if role in chosen.never_persist_roles:
            tx.put_working_buffer(ns, row, now)
            return _stats(ns, row, live, dropped=1)
        stored = chosen.redactor.redact(text)
        row["tick"] += 1
        message = {
            "seq": row["next_seq"],
            "role": role,
            "content": stored,
            "tokens": chosen.token_counter.count(stored),
            "priority": priority,
            "pinned": pin,
            "metadata": meta,
            "created_at": now,
            "last_used": 0,  # never read: the least recently read of all, for lru
            "uses": 0,
        }
        row["next_seq"] += 1
        evict = set(
            plan_evictions(
                [*map(_entry, live), _entry(message)],
                max_tokens=chosen.max_tokens,
                max_messages=chosen.max_messages,
                strategy=chosen.strategy,
                keep=frozenset({message["seq"]}),
            )
        )
        evicted = [m for m in live if m["seq"] in evict]
        if chosen.archive and evicted:
            row["archived"] += _archive(hive, tx, ns, evicted, now)
        tx.drop_working_messages(ns, sorted(evict))
        tx.add_working_message(ns, message)
        row["evictions"] += len(evicted)
        left = [*(m for m in live if m["seq"] not in evict), message]
        event = {"seq": message["seq"], "role": role, "tokens": message["tokens"], "evicted": len(evicted)}
        tx.record_event(ns, "working.appended", ns, event)
        if inline and above_threshold(sum(int(m["tokens"]) for m in left), len(left), chosen):
            left = _flush_inline(hive, tx, ns, row, chosen, left, now)
        tx.put_working_buffer(ns, row, now)
        return _stats(ns, row, left)

    # A summarizer that runs in this process in no time flushes inside the append's own
    # transaction; one that calls a model flushes after it, holding no lock while it waits.
    inline = isinstance(hive.summarizer, ExtractiveSummarizer)
    result = hive._write(write)
    settings_after = BufferSettings.of(result.settings)
    if not inline and result.dropped == 0 and above_threshold(result.tokens, result.messages, settings_after):
        flush(hive, ns)
    return result


def _flush_inline(
    hive: Hive,
    tx: StoreTx,
    ns: str,
    row: dict[str, Any],
    settings: BufferSettings,
    live: list[dict[str, Any]],
    now: float,
) -> list[dict[str, Any]]:
    """Flush inside the caller's transaction; the messages left."""
    chosen = _flush_plan(settings, live)
    if not chosen:
        return live
    summary = _apply_flush(hive, tx, ns, row, chosen, _summary(hive, settings, chosen), now)
    gone = {m["seq"] for m in chosen}
    left = [m for m in live if m["seq"] not in gone]
    return sorted([*left, *([summary] if summary else [])], key=lambda m: m["seq"])


def messages(hive: Hive, key: str, token_budget: int | None) -> list[WorkingMessage]:
    """See :meth:`hivemem.Hive.working_messages`."""
    ns = buffer_key(key)
    budget = None if token_budget is None else v.count(token_budget, "token_budget", v.MAX_INT)
    hive._may("read", ns)

    def write(tx: StoreTx) -> list[WorkingMessage]:
        now = hive.clock.now()
        row = tx.working_buffer(ns)
        if row is None:
            return []
        live = _live(tx, ns, _settings_of(row), now, drop=True)
        chosen = select(live, budget)
        row["tick"] += 1
        tx.touch_working_messages(ns, [m["seq"] for m in chosen], row["tick"])
        tx.put_working_buffer(ns, row, now)
        return [_record({**m, "uses": m["uses"] + 1}) for m in chosen]

    return hive.store.write(write)


def select(live: Sequence[Mapping[str, Any]], budget: int | None) -> list[Mapping[str, Any]]:
    """What a read returns: everything, or system and pinned messages and then the newest that fit ``budget``."""
    if budget is None:
        return list(live)
    left = budget
    keep: set[int] = set()
    for m in live:
        if (m["pinned"] or m["role"] in PROTECTED_ROLES) and m["tokens"] <= left:
            keep.add(m["seq"])
            left -= m["tokens"]
    for m in reversed(live):
        if m["seq"] in keep:
            continue
        if m["tokens"] > left:
            break
        keep.add(m["seq"])
        left -= m["tokens"]
    return [m for m in live if m["seq"] in keep]


def clear(hive: Hive, key: str) -> int:
    """See :meth:`hivemem.Hive.working_clear`."""
    ns = buffer_key(key)
    hive._may("write", ns)

    def write(tx: StoreTx) -> int:
        if tx.working_buffer(ns) is None:
            return 0
        count = len(tx.working_entries(ns))
        tx.clear_working_messages(ns)
        tx.record_event(ns, "working.cleared", ns, {"messages": count})
        return count

    return hive._write(write)


def stats(hive: Hive, key: str) -> WorkingStats:
    """See :meth:`hivemem.Hive.working_stats`."""
    ns = buffer_key(key)
    hive._may("read", ns)

    def read(tx: StoreTx) -> WorkingStats:
        row = tx.working_buffer(ns)
        return _stats(ns, row, _live(tx, ns, _settings_of(row), hive.clock.now(), drop=False))

    return hive.store.read(read, primary=True)


class _Moved(Exception):
    """The messages a flush summarised changed before it could commit: read again."""


def flush(hive: Hive, key: str) -> int:
    """See :meth:`hivemem.Hive.working_flush`."""
    ns = buffer_key(key)
    hive._may("write", ns)
    for _ in range(_FLUSH_TRIES):
        row, entries = hive.store.read(lambda tx: _snapshot(hive, tx, ns), primary=True)
        if row is None:
            return 0
        settings = _settings_of(row)
        chosen = _flush_plan(settings, entries)
        if not chosen:
            return 0
        summary = _summary(hive, settings, chosen)
        replace = functools.partial(_replace, hive, ns=ns, chosen=chosen, summary=summary)
        try:
            return hive._write(replace)
        except _Moved:
            continue
    return 0


def _snapshot(hive: Hive, tx: StoreTx, ns: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    row = tx.working_buffer(ns)
    if row is None:
        return None, []
    return row, _live(tx, ns, _settings_of(row), hive.clock.now(), drop=False)


def _flush_plan(settings: BufferSettings, entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The messages a flush replaces (none if the only candidate is a summary already)."""
    by_seq = {m["seq"]: m for m in entries}
    plan = plan_flush([_entry(m) for m in entries], settings)
    if not plan or (len(plan) == 1 and by_seq[plan[0]]["role"] == SUMMARY_ROLE):
        return []
    return [by_seq[s] for s in plan]


def _summary(hive: Hive, settings: BufferSettings, chosen: Sequence[Mapping[str, Any]]) -> str:
    """The summary of ``chosen``, clipped to its budget whatever the summarizer returned."""
    budget = _summary_budget(settings, sum(int(m["tokens"]) for m in chosen))
    counter = settings.token_counter
    parts = [(m["role"], _unsummary(m["content"]) if m["role"] == SUMMARY_ROLE else m["content"]) for m in chosen]
    text = hive.summarizer.summarize(parts, max_tokens=budget, counter=counter)
    return clip(text, budget, counter)


def _unsummary(text: str) -> str:
    """A summary's text without its ``Summary:`` label, so summaries of summaries do not nest labels."""
    return text.removeprefix("Summary:").strip()


def _summary_budget(settings: BufferSettings, removed: int) -> int:
    """Tokens a summary may take: half of what it replaces (at least 32, never more than all of it),
    and at most a quarter of the token threshold."""
    cap = min(removed, max(removed // 2, 32))
    if settings.max_tokens is not None:
        cap = min(cap, int(settings.max_tokens * settings.flush_threshold / 4))
    return max(1, cap)


def _replace(hive: Hive, tx: StoreTx, *, ns: str, chosen: Sequence[Mapping[str, Any]], summary: str) -> int:
    """Commit a summary made outside the transaction, if what it summarised is still there."""
    row = tx.working_buffer(ns)
    if row is None:
        raise _Moved()
    current = {m["seq"]: m for m in tx.working_entries(ns)}
    if any(current.get(m["seq"], {}).get("content") != m["content"] for m in chosen):
        raise _Moved()
    _apply_flush(hive, tx, ns, row, chosen, summary, hive.clock.now())
    tx.put_working_buffer(ns, row, hive.clock.now())
    return len(chosen)


def _apply_flush(
    hive: Hive,
    tx: StoreTx,
    ns: str,
    row: dict[str, Any],
    chosen: Sequence[Mapping[str, Any]],
    summary: str,
    now: float,
) -> dict[str, Any] | None:
    """Replace ``chosen`` by the summary in this transaction; updates ``row``; returns the summary message."""
    settings = _settings_of(row)
    seqs = sorted(m["seq"] for m in chosen)
    originals = [m for m in chosen if m["role"] != SUMMARY_ROLE]
    replaced: set[int] = {m["seq"] for m in originals}
    for m in chosen:
        if m["role"] == SUMMARY_ROLE:
            replaced.update(int(s) for s in m["metadata"].get("summary_of", ()))
    if settings.archive and originals:
        row["archived"] += _archive(hive, tx, ns, originals, now)
    tx.drop_working_messages(ns, seqs)
    row["flushes"] += 1
    row["summarized"] += len(originals)
    tx.record_event(ns, "working.flushed", ns, {"replaced": seqs, "summarized": len(originals)})
    if not summary:
        return None
    message = {
        "seq": seqs[0],
        "role": SUMMARY_ROLE,
        "content": summary,
        "tokens": settings.token_counter.count(summary),
        "priority": 0,
        "pinned": False,
        "metadata": {"summary_of": sorted(replaced)},
        "created_at": now,
        "last_used": 0,
        "uses": 0,
    }
    tx.add_working_message(ns, message)
    return message
