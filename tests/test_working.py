"""Working memory on every deployment: limits, strategies, flush, redaction, resources, packing.

Contract tests take the ``hive`` fixture (sqlite-file, sqlite-memory,
postgres, http). The planning functions are checked with hypothesis; the
store-level tests check that each strategy evicts what it promises; the
concurrency tests use real threads and, on the ``shared`` targets, real
processes; the flush crash test kills a flushing process with SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hivemem
from hivemem import Forbidden, Hive, InvalidInput, PayloadTooLarge
from hivemem.access import Grant, Principal
from hivemem.client import RemoteHive
from hivemem.summarize import ExtractiveSummarizer, clip
from hivemem.tokens import counter_for
from hivemem.working import STRATEGIES, BufferSettings, Entry, plan_evictions, plan_flush

KEY = "team/session-1"
SECRET = "SECRET-7731-ALPHA"


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


# --------------------------------------------------------------------------- basics


def test_append_messages_and_stats(hive: Hive) -> None:
    w = hive.working(KEY, max_tokens=1000)
    w.append("system", "You are a helpful deploy assistant.")
    w.append("user", "How do I deploy?", metadata={"turn": 1})
    stats = w.append("assistant", "Run the migration first.", priority=2)
    assert (stats.messages, stats.evictions, stats.flushes) == (3, 0, 0)
    got = w.messages()
    assert [m.role for m in got] == ["system", "user", "assistant"]
    assert [m.seq for m in got] == [1, 2, 3]
    assert got[1].metadata == {"turn": 1} and got[2].priority == 2
    assert stats.tokens == sum(m.tokens for m in got) == w.stats().tokens
    assert w.chat()[0] == {"role": "system", "content": "You are a helpful deploy assistant."}
    assert hive.working_stats("team/unknown").messages == 0
    assert hive.working_messages("team/unknown") == []


def test_token_budget_returns_system_then_newest_that_fit(hive: Hive) -> None:
    w = hive.working(KEY, max_tokens=1000)
    w.append("system", "rules")
    for i in range(5):
        w.append("user", _words(10, f"m{i}-"))
    sizes = {m.seq: m.tokens for m in w.messages()}
    budget = sizes[1] + sizes[6] + sizes[5]
    assert [m.seq for m in w.messages(token_budget=budget)] == [1, 5, 6]
    assert sum(m.tokens for m in w.messages(token_budget=budget + 1)) <= budget + 1


def test_bad_input_is_refused_with_the_field_named(hive: Hive) -> None:
    w = hive.working(KEY)
    cases: list[tuple[Any, str]] = [
        (lambda: w.append("User!", "x"), "role"),
        (lambda: w.append("user", 5), "content"),
        (lambda: w.append("user", "x", priority=1.5), "priority"),
        (lambda: w.append("user", "x", metadata=[1]), "metadata"),
        (lambda: hive.working_append("bad//key", "user", "x"), "key"),
        (lambda: hive.working_append(KEY, "user", "x", settings={"strategy": "random"}), "settings.strategy"),
        (lambda: hive.working_append(KEY, "user", "x", settings={"flush_threshold": 0}), "settings.flush_threshold"),
        (lambda: hive.working_append(KEY, "user", "x", settings={"max_tokens": -1}), "settings.max_tokens"),
        (lambda: hive.working_append(KEY, "user", "x", settings={"bogus": 1}), "settings.bogus"),
        (lambda: hive.working_messages(KEY, token_budget=-1), "token_budget"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.details["field"] == field
    assert hive.working_stats(KEY).messages == 0


# --------------------------------------------------------------------------- limits and strategies


def _fill(hive: Hive, strategy: str, **extra: Any) -> Any:
    return hive.working(KEY, max_messages=4, max_tokens=None, strategy=strategy, flush_threshold=1.0, **extra)


def test_fifo_evicts_the_oldest(hive: Hive) -> None:
    w = _fill(hive, "fifo")
    for i in range(6):
        stats = w.append("user", f"m{i}")
    assert [m.content for m in w.messages()] == ["m2", "m3", "m4", "m5"]
    assert (stats.messages, stats.evictions) == (4, 2)


def test_lru_evicts_the_least_recently_read(hive: Hive) -> None:
    w = _fill(hive, "lru")
    for i in range(4):
        w.append("user", f"m{i}")
    w.messages()  # all four read at one tick
    w.append("user", "m4")  # ties go oldest first: m0
    assert [m.content for m in w.messages()] == ["m1", "m2", "m3", "m4"]
    newest = w.messages()[-1].tokens
    hive.working_messages(KEY, token_budget=newest)  # m4 is now the most recently read
    w.append("user", "m5")
    w.append("user", "m6")  # m5 was never read: the least recent of all
    assert [m.content for m in w.messages()] == ["m2", "m3", "m4", "m6"]


def test_lfu_evicts_the_least_often_read_oldest_first(hive: Hive) -> None:
    w = _fill(hive, "lfu")
    for i in range(4):
        w.append("user", f"m{i}")
    newest_two = sum(m.tokens for m in w.messages()[-2:])  # every message read once
    hive.working_messages(KEY, token_budget=newest_two)  # m2, m3 read twice
    w.append("user", "m4")  # m0 and m1 tie at one read: the older goes
    assert [m.content for m in w.messages()] == ["m1", "m2", "m3", "m4"]
    w.append("user", "m5")  # m1 (2 reads) and m4 (1 read): m4 goes
    assert [m.content for m in w.messages()] == ["m1", "m2", "m3", "m5"]


def test_priority_evicts_the_lowest_priority_oldest_first(hive: Hive) -> None:
    w = _fill(hive, "priority")
    for i, p in enumerate([5, 1, 3, 1]):
        w.append("user", f"m{i}", priority=p)
    w.append("user", "m4", priority=0)  # m4 itself is never evicted by its own append
    assert [m.content for m in w.messages()] == ["m0", "m2", "m3", "m4"]
    w.append("user", "m5", priority=9)
    assert [m.content for m in w.messages()] == ["m0", "m2", "m3", "m5"]


def test_system_and_pinned_messages_are_never_evicted_and_overruns_are_refused(hive: Hive) -> None:
    w = _fill(hive, "fifo")
    w.append("system", "rules")
    w.append("user", "keep me", pinned=True)
    w.append("user", "keep me too", metadata={"pinned": True})
    for i in range(5):
        w.append("user", f"m{i}")
    assert [m.content for m in w.messages()] == ["rules", "keep me", "keep me too", "m4"]
    w.append("system", "one more rule")  # evicts m4: four protected messages fit
    before = w.messages()
    with pytest.raises(PayloadTooLarge) as info:
        w.append("user", "a fifth protected one", pinned=True)
    assert info.value.details["field"] == "content"
    assert [m.content for m in w.messages()] == [m.content for m in before]
    small = hive.working("team/small", max_tokens=5)
    with pytest.raises(PayloadTooLarge):
        small.append("user", _words(20, "w"))
    assert small.stats().messages == 0


def test_a_token_limit_is_never_exceeded(hive: Hive) -> None:
    w = hive.working(KEY, max_tokens=120, flush_threshold=1.0)
    rng = random.Random(7)
    for i in range(40):
        stats = w.append("user", _words(rng.randint(1, 12), f"t{i}-"))
        assert stats.tokens <= 120
        assert sum(m.tokens for m in w.messages()) <= 120
    assert stats.evictions > 0


def test_settings_are_stored_with_the_buffer_for_every_caller(hive: Hive) -> None:
    hive.working(KEY, max_messages=3, max_tokens=None, flush_threshold=1.0).append("user", "a")
    for i in range(5):  # no settings given: the stored ones apply
        stats = hive.working_append(KEY, "user", f"b{i}")
    assert stats.messages == 3
    assert stats.settings["max_messages"] == 3
    stats = hive.working(KEY).append("user", "c")  # a handle without settings keeps the stored ones
    assert stats.settings["max_messages"] == 3 and stats.messages == 3


def test_settings_take_what_a_resources_file_takes(hive: Hive, tmp_path: Path) -> None:
    # One set of checks for a buffer's settings, whether a call or a resource gives them.
    assert hive.working(KEY, ttl="30m").settings.ttl == 1800.0
    path = tmp_path / "resources.yaml"
    path.write_text("resources:\n  chat:\n    key_template: chat/{user}\n    max_tokens: 100\n    ttl: 30m\n")
    registry = hivemem.ResourceRegistry.load(path)
    assert registry.get("chat").ttl == 1800.0
    with pytest.raises(InvalidInput) as info:
        hive.working(KEY, never_persist_roles=[" "])
    assert info.value.field == "options.never_persist_roles"


def test_a_buffer_not_written_for_its_ttl_is_emptied(hive: Hive, clock: hivemem.ManualClock) -> None:
    w = hive.working(KEY, ttl=60)
    w.append("system", "rules")
    w.append("user", "old")
    clock.advance(50)
    w.messages()  # a read is not a write: it does not keep the buffer alive
    w.append("user", "kept: written within the ttl")
    clock.advance(59)
    assert len(w.messages()) == 3
    clock.advance(2)
    assert w.messages() == [] and w.stats().messages == 0
    w.append("user", "new")
    assert [m.content for m in w.messages()] == ["new"]


# --------------------------------------------------------------------------- flush


def test_crossing_the_threshold_flushes_the_oldest_part_into_one_summary(hive: Hive) -> None:
    w = hive.working(KEY, max_tokens=200, flush_threshold=0.5)
    w.append("system", "You help with deploys.")
    for i in range(30):
        stats = w.append("user", f"Deploy step {i} needs the migration. The cache warms after step {i}.")
        assert stats.tokens <= 200
    assert stats.flushes >= 1 and stats.summarized > 0
    got = w.messages()
    assert got[0].role == "system"
    summaries = [m for m in got if m.role == "summary"]
    assert len(summaries) == 1 and summaries[0].content.startswith("Summary:")
    kept = {m.seq for m in got if m.role != "summary"}
    assert not kept & set(summaries[0].metadata["summary_of"])
    assert set(summaries[0].metadata["summary_of"]) | kept == set(range(1, 32))


def test_manual_flush_and_clear(hive: Hive) -> None:
    w = hive.working(KEY, max_tokens=10_000)
    for i in range(6):
        w.append("user", f"Sentence {i} about the rate limit.")
    assert w.flush() == 2  # the older half of the messages before the newest
    got = w.messages()
    assert [m.role for m in got] == ["summary", "user", "user", "user", "user"]
    assert got[0].metadata["summary_of"] == [1, 2] and "Sentence 0" in got[0].content
    assert w.stats().flushes == 1
    assert w.clear() == 5
    events = hive.events("team", types=["working.appended", "working.flushed", "working.cleared"])
    assert [e.type for e in events] == ["working.appended"] * 6 + ["working.flushed", "working.cleared"]
    assert events[0].subject == KEY and events[0].data["seq"] == 1 and "content" not in events[0].data
    assert events[-2].data == {"replaced": [1, 2], "summarized": 2} and events[-1].data == {"messages": 5}
    assert w.messages() == [] and w.stats().flushes == 1


def test_archived_messages_become_recallable_memories(hive: Hive) -> None:
    w = hive.working(KEY, max_messages=2, max_tokens=None, archive=True, flush_threshold=1.0)
    w.append("user", "the staging database password rotates on fridays")
    w.append("user", "second")
    stats = w.append("user", "third")
    assert (stats.evictions, stats.archived) == (1, 1)
    hits = hive.recall("staging database rotates", namespace=KEY, kinds="message")
    assert [h.memory.content for h in hits] == ["the staging database password rotates on fridays"]
    assert hits[0].memory.data["role"] == "user"


# --------------------------------------------------------------------------- privacy


def test_redaction_and_never_persisted_roles(hive: Hive) -> None:
    w = hive.working(KEY, redact_patterns=[r"SECRET-\d+-[A-Z]+"], never_persist_roles=["tool"])
    w.append("user", f"my token is {SECRET}, keep it safe")
    stats = w.append("tool", "raw tool output")
    assert stats.dropped == 1 and stats.messages == 1
    # A caller that skips the handle still gets the stored patterns applied.
    hive.working_append(KEY, "user", f"again {SECRET}")
    contents = [m.content for m in w.messages()]
    assert len(contents) == 2 and not any(SECRET in c for c in contents)


def test_no_secret_reaches_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "hive.db"
    with hivemem.open(str(path), embedder=None) as hive:
        w = hive.working(KEY, max_tokens=80, archive=True, redact_patterns=[r"SECRET-\d+-[A-Z]+"])
        for i in range(40):
            w.append("user", f"turn {i}: the key is {SECRET} and more words to fill the buffer")
        w.flush()
        assert w.stats().archived > 0
        files = [p for p in tmp_path.iterdir() if p.name.startswith("hive.db")]
        assert any(p.name.endswith("-wal") for p in files)
        for p in files:
            assert SECRET.encode() not in p.read_bytes(), p.name


# --------------------------------------------------------------------------- access and resources


def test_grants_apply_to_buffers(hive: Hive) -> None:
    if isinstance(hive, RemoteHive):
        pytest.skip("over HTTP the API key decides the principal (covered by the server's auth tests)")
    reader = hive.as_principal(Principal("r", (Grant.parse("read:team"),)))
    hive.working(KEY).append("user", "hello")
    assert [m.content for m in reader.working_messages(KEY)] == ["hello"]
    with pytest.raises(Forbidden):
        reader.working(KEY).append("user", "no")
    outsider = hive.as_principal(Principal("o", (Grant.parse("write:other"),)))
    with pytest.raises(Forbidden):
        outsider.working_messages(KEY)


def test_resources_give_keys_and_settings(hive: Hive, tmp_path: Path) -> None:
    from hivemem.resources import ResourceRegistry

    registry = ResourceRegistry.from_mapping(
        {
            "resources": {
                "support": {
                    "key_template": "support/{user_id}",
                    "type": "message_count",
                    "max_messages": 3,
                    "strategy": "fifo",
                    "flush_threshold": 1.0,
                    "redact_patterns": [r"SECRET-\d+-[A-Z]+"],
                }
            }
        }
    )
    hive.load_resources(registry)
    w = hive.working("support", user_id="u1")
    assert w.key == "support/u1" and w.settings.max_messages == 3 and w.settings.max_tokens is None
    for i in range(5):
        w.append("user", f"{i} {SECRET}")
    assert [m.content for m in w.messages()] == [f"{i} [REDACTED:custom]" for i in (2, 3, 4)]
    assert hive.working("support", user_id="u2", max_messages=10).settings.max_messages == 10
    assert hive.working("free/form", max_tokens=7).settings.max_tokens == 7


# --------------------------------------------------------------------------- packing


def test_pack_stays_within_budget_and_says_what_it_left_out(hive: Hive) -> None:
    for i in range(8):
        hive.remember("team/notes", f"deploy note {i}: migrations run before the cache warms")
    w = hive.working(KEY, max_tokens=10_000)
    w.append("system", "You help with deploys.")
    for i in range(10):
        w.append("user", f"question {i} about the deploy order")
    packed = hive.pack("deploy migrations", token_budget=60, working=KEY, namespace="team/notes")
    assert 0 < packed.tokens <= 60
    assert counter_for(packed.counter).count(packed.text) == packed.tokens
    assert "system: You help with deploys." in packed.text
    assert packed.text.index("Relevant memories:") < packed.text.index("Conversation:")
    assert packed.left_out and all(item.reason == "token_budget" for item in packed.left_out)
    included = {(i.source, i.ref) for i in packed.included}
    left = {(i.source, i.ref) for i in packed.left_out}
    assert not included & left
    assert len(included | left) == 8 + 11
    roomy = w.pack("deploy migrations", token_budget=100_000, namespace="team/notes")
    assert roomy.left_out == () and len(roomy.included) == 8 + 11


# --------------------------------------------------------------------------- concurrency


def test_eight_concurrent_appenders_never_overrun_the_buffer(hive: Hive) -> None:
    limit_tokens, limit_messages = 80, 10
    settings = {"max_tokens": limit_tokens, "max_messages": limit_messages, "flush_threshold": 1.0}
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    per_thread = 10

    def appender(n: int) -> None:
        try:
            for i in range(per_thread):
                s = hive.working_append(KEY, "user", _words(1 + (n + i) % 7, f"a{n}-{i}-"), settings=settings)
                seen.append((s.tokens, s.messages))
                got = hive.working_messages(KEY)
                seen.append((sum(m.tokens for m in got), len(got)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(tokens <= limit_tokens and count <= limit_messages for tokens, count in seen)
    stats = hive.working_stats(KEY)
    assert stats.messages + stats.evictions == 8 * per_thread  # every append kept or evicted, none lost


def _process_appender(target: str, n: int, count: int, settings: dict[str, Any], out: Any) -> None:
    with hivemem.open(target, embedder=None) as hive:
        worst = (0, 0)
        for i in range(count):
            s = hive.working_append(KEY, "user", _words(1 + (n + i) % 5, f"p{n}-{i}-"), settings=settings)
            worst = (max(worst[0], s.tokens), max(worst[1], s.messages))
        out.put(worst)


def test_processes_appending_to_one_buffer_never_overrun_it(shared: str) -> None:
    settings = {"max_tokens": 40, "max_messages": 6, "flush_threshold": 1.0}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_appender, args=(shared, n, 8, settings, out)) for n in range(4)]
    for p in procs:
        p.start()
    worst = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(tokens <= 40 and count <= 6 for tokens, count in worst)
    with hivemem.open(shared, embedder=None) as hive:
        stats = hive.working_stats(KEY)
        got = hive.working_messages(KEY)
    assert stats.messages + stats.evictions == 32
    assert sum(m.tokens for m in got) <= 40 and len(got) <= 6


# --------------------------------------------------------------------------- crash safety

_FLUSHER = """
import sys, hivemem
path = sys.argv[1]
with hivemem.open(path, embedder=None, synchronous="normal") as hive:
    w = hive.working("team/crash", max_tokens=1_000_000, flush_threshold=1.0, archive=True)
    print("ready", flush=True)
    while True:
        for i in range(200):
            w.append("user", "Turn %d of the long session. The deploy needs the migration first." % i)
        while w.flush():  # each flush replaces the older half of what is left: large flushes first
            pass
"""


def test_a_flush_killed_midway_loses_nothing_and_keeps_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(11)
    for _ in range(6):
        with subprocess.Popen([sys.executable, "-c", _FLUSHER, str(path)], stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.1, 1.5))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with hivemem.open(str(path), embedder=None) as hive:
            stats = hive.working_stats("team/crash")
            got = hive.working_messages("team/crash")
            archived = [m.data["seq"] for m in hive.export("team/crash") if m.kind == "message"]
        kept = {m.seq for m in got if m.role != "summary"}
        summarized: set[int] = set()
        for m in got:
            if m.role == "summary":
                assert not summarized & set(m.metadata["summary_of"])
                summarized |= set(m.metadata["summary_of"])
        assert not kept & summarized  # no message both summarised and kept
        appended = max([*kept, *summarized, 0])
        # Every appended message is kept or summarised (nothing is evicted here); a summary reuses
        # the seq of the oldest message it replaced, which it lists.
        assert kept | summarized == set(range(1, appended + 1))
        # Each summarised message was archived exactly once, in the summary's own transaction.
        assert sorted(archived) == sorted(summarized)
        assert stats.summarized == stats.archived == len(summarized)
    assert stats.flushes > 0


# --------------------------------------------------------------------------- pure planning (hypothesis)

_entries = st.lists(
    st.builds(
        Entry,
        seq=st.integers(1, 10_000),
        tokens=st.integers(0, 50),
        priority=st.integers(-3, 3),
        protected=st.booleans(),
        last_used=st.integers(0, 20),
        uses=st.integers(0, 5),
    ),
    max_size=25,
    unique_by=lambda e: e.seq,
)
_ORDER = {
    "fifo": lambda e: (e.seq,),
    "lru": lambda e: (e.last_used, e.seq),
    "lfu": lambda e: (e.uses, e.seq),
    "priority": lambda e: (e.priority, e.seq),
}


@settings(max_examples=300, deadline=None)
@given(
    entries=_entries,
    max_tokens=st.none() | st.integers(1, 400),
    max_messages=st.none() | st.integers(1, 20),
    strategy=st.sampled_from(STRATEGIES),
)
def test_evictions_take_the_strategy_order_and_only_what_is_needed(
    entries: list[Entry], max_tokens: int | None, max_messages: int | None, strategy: str
) -> None:
    keep = frozenset(e.seq for e in entries[-1:])
    fixed = [e for e in entries if e.protected or e.seq in keep]

    def over(items: list[Entry]) -> bool:
        return (max_tokens is not None and sum(e.tokens for e in items) > max_tokens) or (
            max_messages is not None and len(items) > max_messages
        )

    if over(fixed):
        with pytest.raises(PayloadTooLarge):
            plan_evictions(entries, max_tokens=max_tokens, max_messages=max_messages, strategy=strategy, keep=keep)
        return
    taken = plan_evictions(entries, max_tokens=max_tokens, max_messages=max_messages, strategy=strategy, keep=keep)
    left = [e for e in entries if e.seq not in set(taken)]
    assert not over(left)
    evictable = sorted((e for e in entries if not (e.protected or e.seq in keep)), key=_ORDER[strategy])
    assert taken == [e.seq for e in evictable[: len(taken)]]  # a prefix of the strategy's order
    if taken:  # and no shorter prefix would do
        assert over([e for e in entries if e.seq not in set(taken[:-1])])


@settings(max_examples=200, deadline=None)
@given(entries=_entries, max_tokens=st.integers(1, 400), threshold=st.floats(0.05, 1.0))
def test_a_flush_takes_only_unprotected_messages_oldest_first(
    entries: list[Entry], max_tokens: int, threshold: float
) -> None:
    plan = plan_flush(entries, BufferSettings(max_tokens=max_tokens, flush_threshold=threshold))
    unprotected = sorted(e.seq for e in entries if not e.protected)
    assert plan == unprotected[: len(plan)]
    assert max((e.seq for e in entries), default=None) not in plan  # never the turn in progress


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=8), budget=st.integers(1, 80))
def test_the_extractive_summary_fits_its_budget(texts: list[str], budget: int) -> None:
    counter = counter_for("estimate")
    summary = ExtractiveSummarizer().summarize([("user", t) for t in texts], max_tokens=budget, counter=counter)
    assert counter.count(summary) <= budget
    assert counter.count(clip("word " * 500, budget, counter)) <= budget


# --------------------------------------------------------------------------- CLI


def test_cli_working_show_append_flush_clear(tmp_path: Path) -> None:
    from http_server import cli_json

    db = tmp_path / "cli.db"
    first = cli_json(db, "working", "append", "t/s", "system", "be brief", "--max-messages", "10")
    assert first["messages"] == 1 and first["settings"]["max_messages"] == 10
    for i in range(4):
        cli_json(db, "working", "append", "t/s", "user", f"question {i} about deploys.", "--priority", str(i))
    shown = cli_json(db, "working", "show", "t/s")
    assert shown["messages"][0]["role"] == "system"
    assert shown["stats"]["messages"] == 5
    assert cli_json(db, "working", "flush", "t/s")["summarized"] == 2  # the older half; never the newest
    assert cli_json(db, "working", "clear", "t/s")["cleared"] == 4
    assert cli_json(db, "working", "show", "t/s")["messages"] == []


def test_open_with_the_shipped_resources_file_embedded_and_over_http(tmp_path: Path) -> None:
    import importlib.resources

    from http_server import ServeProcess

    shipped = str(importlib.resources.files("hivemem") / "data" / "resources.yaml")
    served = ServeProcess(tmp_path / "served.db", "--no-auth")
    try:
        with hivemem.open(str(tmp_path / "h.db"), embedder=None, resources=shipped) as embedded:
            remote = hivemem.open(served.url, resources=shipped)
            for hive in (embedded, remote):
                chat = hive.working("support", user_id="u1")
                assert chat.key == "support/u1" and chat.settings.max_tokens == 4000 and chat.settings.archive
                assert chat.append("system", "never stored: the file lists system in never_persist_roles").dropped
                chat.append("user", "account ACCT-12345678, mail ann@example.com")
                (message,) = chat.messages()
                assert "ACCT-12345678" not in message.content and "ann@example.com" not in message.content
                assert hive.working("support", user_id="u1", agent="triage-bot").settings.max_tokens == 2000
            remote.close()
    finally:
        served.stop()
