"""Recall quality on LoCoMo (shared/data/locomo-dev.json): HiveMem against BM25-only and dense-only.

Protocol (shared/data/README.md): for each conversation, every turn is one memory in
a fresh hive (one SQLite file per conversation, namespace ``locomo/<sample_id>``),
``key`` = the turn's dia_id, ``occurred_at`` = its session's date and time (UTC),
``kind="message"``. Each question of categories 1-4 (category 5 is adversarial and
skipped) is asked with ``k=10``; scores are recall@5 and recall@10 (fraction of the
evidence turns in the top k, averaged over questions), hit@10 (any evidence in the
top 10) and MRR@10 (reciprocal rank of the first evidence turn, 0 past rank 10).

Evidence ids are repaired as the README says: split on ';' ',' and whitespace, "D:11:26"
becomes "D11:26"; ids that name no turn are dropped and counted, and a question left
with no evidence is skipped and counted.

Headline content format (fixed before any experiment, what a user would store):
``"{speaker}: {text}"`` plus ``" [shares {blip_caption}]"`` for a shared photo (the
captions already read "a photo of ...").

Clock: questions are asked one day after the conversation's last session
(``ManualClock``), as an agent would right after the chat; recency then favours
the latest sessions. The ``system clock`` variant asks years later, when recency is
near zero for every turn.

Methods compared in one run: HiveMem default (keyword BM25 + MiniLM vectors, RRF),
BM25 only (the same hive opened with ``embedder=None``) and dense only (numpy cosine
over the same MiniLM vectors). When ``snowballstemmer`` is installed, two reference
re-implementations of the README baselines are added (a numpy BM25 with the Snowball
stemmer, and its RRF with dense at k0=10).

Then experiments (no change to src/): ``ranking`` weights passed through
``hivemem.open`` and other content formats, each against the default with the paired
standard error of the difference and the number of conversations it improves.

    python bench/locomo.py            # all 5 conversations, all variants
    python bench/locomo.py --quick    # one conversation, a few variants, for CI
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import hivemem
from _common import log, print_table, write_results
from hivemem.retrieval.text import STOP_WORDS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev.json"
K = 10
TARGET_RECALL10 = 0.65
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    caption: str | None
    when: datetime
    session: int


@dataclass(frozen=True)
class Question:
    conv: str
    text: str
    category: int
    evidence: tuple[str, ...]


@dataclass
class Conversation:
    sample_id: str
    turns: list[Turn]
    questions: list[Question] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"locomo/{self.sample_id}"

    @property
    def asked_at(self) -> datetime:
        """One day after the last session: when the questions are asked."""
        return max(t.when for t in self.turns) + timedelta(days=1)


# -- data --------------------------------------------------------------------------------------


def parse_when(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware UTC datetime."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def repair_evidence(raw: Sequence[str], known: set[str], stats: dict[str, int]) -> tuple[str, ...]:
    """Split, fix and check evidence ids; counts what was repaired and dropped in ``stats``."""
    out: list[str] = []
    for item in raw:
        pieces = [p for p in re.split(r"[;,\s]+", str(item)) if p]
        if len(pieces) > 1:
            stats["split"] += 1
        for piece in pieces:
            fixed = re.sub(r"^D:(\d+):(\d+)$", r"D\1:\2", piece)
            if fixed != piece:
                stats["fixed"] += 1
            if fixed not in known:
                stats["dropped"] += 1
                continue
            if fixed not in out:
                out.append(fixed)
    return tuple(out)


def load(path: Path, only: Sequence[str] | None) -> tuple[list[Conversation], dict[str, int]]:
    stats = {"split": 0, "fixed": 0, "dropped": 0, "questions_without_evidence": 0, "category_5_skipped": 0}
    conversations = []
    for sample in json.loads(path.read_text()):
        if only and sample["sample_id"] not in only:
            continue
        conv = sample["conversation"]
        turns = []
        for key in sorted((k for k in conv if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k.split("_")[1])):
            when = parse_when(conv[f"{key}_date_time"])
            for turn in conv[key]:
                caption = turn.get("blip_caption") or None
                session = int(key.split("_")[1])
                turns.append(Turn(turn["dia_id"], turn["speaker"], turn["text"], caption, when, session))
        c = Conversation(sample["sample_id"], turns)
        known = {t.dia_id for t in turns}
        for qa in sample["qa"]:
            if qa["category"] == 5:
                stats["category_5_skipped"] += 1
                continue
            evidence = repair_evidence(qa.get("evidence", []), known, stats)
            if not evidence:
                stats["questions_without_evidence"] += 1
                continue
            c.questions.append(Question(c.sample_id, qa["question"], int(qa["category"]), evidence))
        conversations.append(c)
    return conversations, stats


# -- content formats ---------------------------------------------------------------------------


def _photo(t: Turn) -> str:
    return f" [shares {t.caption}]" if t.caption else ""


#: The headline format comes first; the others are experiments.
FORMATS: dict[str, Callable[[Turn], str]] = {
    "speaker: text [shares photo]": lambda t: f"{t.speaker}: {t.text}{_photo(t)}",
    "text": lambda t: t.text,
    "speaker: text": lambda t: f"{t.speaker}: {t.text}",
    "text [shares photo]": lambda t: f"{t.text}{_photo(t)}",
    "[date] speaker: text [shares photo]": lambda t: f"[{t.when.day} {t.when:%B %Y}] {t.speaker}: {t.text}{_photo(t)}",
}
HEADLINE_FORMAT = next(iter(FORMATS))


# -- embedders and scoring ---------------------------------------------------------------------


class MemoEmbedder:
    """The real MiniLM embedder with a text -> vector memo shared by every hive of the run.

    Same name and dim, same vectors: it only avoids embedding a text twice across variants.
    """

    def __init__(self, real: hivemem.Embedder) -> None:
        self.real = real
        self.name = real.name
        self.dim = real.dim
        self._memo: dict[str, NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            for text, vector in zip(todo, self.real.embed(todo), strict=True):
                self._memo[text] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


@dataclass
class Scores:
    """Per-question metrics, in the order of the questions."""

    questions: list[Question]
    r5: NDArray[np.float64]
    r10: NDArray[np.float64]
    hit10: NDArray[np.float64]
    rr: NDArray[np.float64]

    @classmethod
    def of(cls, questions: list[Question], ranked: list[list[str]]) -> Scores:
        r5, r10, hit, rr = [], [], [], []
        for q, ids in zip(questions, ranked, strict=True):
            ev = set(q.evidence)
            top = ids[:K]
            r5.append(len(ev & set(top[:5])) / len(ev))
            r10.append(len(ev & set(top)) / len(ev))
            hit.append(1.0 if ev & set(top) else 0.0)
            first = next((i for i, x in enumerate(top) if x in ev), None)
            rr.append(0.0 if first is None else 1.0 / (first + 1))
        return cls(questions, *(np.asarray(v, dtype=np.float64) for v in (r5, r10, hit, rr)))

    def summary(self, mask: NDArray[np.bool_] | None = None) -> dict[str, float]:
        m = np.ones(len(self.questions), dtype=bool) if mask is None else mask
        if not m.any():
            return {"n": 0, "recall@5": math.nan, "recall@10": math.nan, "hit@10": math.nan, "mrr@10": math.nan}
        return {
            "n": int(m.sum()),
            "recall@5": float(self.r5[m].mean()),
            "recall@10": float(self.r10[m].mean()),
            "hit@10": float(self.hit10[m].mean()),
            "mrr@10": float(self.rr[m].mean()),
        }

    def by_category(self) -> dict[str, dict[str, float]]:
        cats = np.asarray([q.category for q in self.questions])
        return {CATEGORIES[c]: self.summary(cats == c) for c in CATEGORIES if (cats == c).any()}

    def by_conversation(self) -> dict[str, float]:
        convs = np.asarray([q.conv for q in self.questions])
        return {c: float(self.r10[convs == c].mean()) for c in dict.fromkeys(convs.tolist())}

    def versus(self, base: Scores) -> dict[str, Any]:
        """Paired difference of recall@10 against ``base``: mean, standard error, conversations improved."""
        diff = self.r10 - base.r10
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        mine, theirs = self.by_conversation(), base.by_conversation()
        better = sum(1 for c in mine if mine[c] > theirs[c] + 1e-12)
        worse = sum(1 for c in mine if mine[c] < theirs[c] - 1e-12)
        return {"delta_recall@10": float(diff.mean()), "se": se, "convs_better": better, "convs_worse": worse}


def dense_ranked(memo: MemoEmbedder, conv: Conversation, fmt: Callable[[Turn], str]) -> list[list[str]]:
    docs = memo.embed([fmt(t) for t in conv.turns])
    queries = memo.embed([q.text for q in conv.questions])
    sims = queries @ docs.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    return [[conv.turns[i].dia_id for i in row] for row in order]


class SnowballBM25:
    """Reference Okapi BM25 (k1=1.2, b=0.75) with the Snowball English stemmer and HiveMem's stop words."""

    def __init__(self, docs: Sequence[str]) -> None:
        import snowballstemmer  # type: ignore[import-untyped]

        self._stem = snowballstemmer.stemmer("english").stemWord
        self._cache: dict[str, str] = {}
        tokenised = [self.tokens(d) for d in docs]
        self.vocab: dict[str, int] = {}
        for toks in tokenised:
            for tok in toks:
                self.vocab.setdefault(tok, len(self.vocab))
        tf = np.zeros((len(docs), len(self.vocab)), dtype=np.float64)
        for i, toks in enumerate(tokenised):
            for tok in toks:
                tf[i, self.vocab[tok]] += 1
        df = (tf > 0).sum(axis=0)
        n = len(docs)
        self.idf = np.log((n - df + 0.5) / (df + 0.5) + 1.0)
        lengths = tf.sum(axis=1, keepdims=True)
        k1, b = 1.2, 0.75
        self.weights = tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9)))

    def tokens(self, text: str) -> list[str]:
        out = []
        for word in re.findall(r"[^\W_]+", text.lower()):
            if word in STOP_WORDS:
                continue
            stem = self._cache.get(word)
            if stem is None:
                stem = self._cache[word] = self._stem(word)
            out.append(stem)
        return out

    def scores(self, query: str) -> NDArray[np.float64]:
        cols = [self.vocab[t] for t in set(self.tokens(query)) if t in self.vocab]
        if not cols:
            return np.zeros(self.weights.shape[0])
        return self.weights[:, cols] @ self.idf[cols]


def reference_ranked(
    memo: MemoEmbedder, conv: Conversation, fmt: Callable[[Turn], str]
) -> tuple[list[list[str]], list[list[str]]]:
    """(snowball BM25, RRF of snowball BM25 and dense with k0=10) rankings."""
    docs = [fmt(t) for t in conv.turns]
    bm25 = SnowballBM25(docs)
    dvec = memo.embed(docs)
    qvec = memo.embed([q.text for q in conv.questions])
    ids = [t.dia_id for t in conv.turns]
    bm, fused = [], []
    for q, qv in zip(conv.questions, qvec, strict=True):
        s = bm25.scores(q.text)
        order_b = [i for i in np.argsort(-s, kind="stable") if s[i] > 0]
        order_d = np.argsort(-(dvec @ qv), kind="stable")
        bm.append([ids[i] for i in order_b[:K]])
        rrf: dict[int, float] = {}
        for order in (order_b[:100], order_d[:100]):
            for rank, i in enumerate(order, start=1):
                rrf[int(i)] = rrf.get(int(i), 0.0) + 1.0 / (10 + rank)
        fused.append([ids[i] for i in sorted(rrf, key=lambda i: (-rrf[i], i))[:K]])
    return bm, fused


# -- hives -------------------------------------------------------------------------------------


def build_hive(path: Path, conv: Conversation, fmt: Callable[[Turn], str], memo: MemoEmbedder) -> None:
    items = [
        {
            "namespace": conv.namespace,
            "content": fmt(t),
            "kind": "message",
            "key": t.dia_id,
            "occurred_at": t.when,
            "data": {"dia_id": t.dia_id, "speaker": t.speaker, "session": t.session},
        }
        for t in conv.turns
    ]
    clock = hivemem.ManualClock(conv.asked_at.timestamp())
    with hivemem.open(str(path), embedder=memo, clock=clock) as hive:
        hive.remember_many(items)


def hive_ranked(
    path: Path,
    conv: Conversation,
    embedder: hivemem.Embedder | None,
    ranking: dict[str, Any] | None,
    clock_mode: str,
) -> list[list[str]]:
    clock = hivemem.ManualClock(conv.asked_at.timestamp()) if clock_mode == "end" else hivemem.SystemClock()
    options: dict[str, Any] = {"ranking": ranking} if ranking else {}
    with hivemem.open(str(path), embedder=embedder, clock=clock, **options) as hive:
        out = []
        for q in conv.questions:
            hits = hive.recall(q.text, namespace=conv.namespace, k=K)
            out.append([h.memory.key or "" for h in hits])
        return out


@dataclass(frozen=True)
class Variant:
    label: str
    fmt: str = HEADLINE_FORMAT
    ranking: dict[str, Any] | None = None
    clock: str = "end"
    overfit_risk: str = ""


def ranking_variants(quick: bool) -> list[Variant]:
    if quick:
        return [Variant("recency 0", ranking={"recency": 0.0}), Variant("rrf_k 60", ranking={"rrf_k": 60})]
    out = [
        Variant("recency 0", ranking={"recency": 0.0}),
        Variant("system clock (asked years later)", clock="system"),
        Variant("recency 0.2", ranking={"recency": 0.2}),
        Variant("recency half-life 365 d", ranking={"recency_half_life_days": 365.0}),
        Variant("keyword only (vector 0)", ranking={"vector": 0.0}),
        Variant("vector only (keyword 0)", ranking={"keyword": 0.0}),
    ]
    out += [Variant(f"candidates {c}", ranking={"candidates": c}) for c in (10, 20, 50, 200)]
    for rrf_k in (1, 5, 10, 20, 30, 60):
        for vector in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
            if (rrf_k, vector) == (10, 1.0):
                continue
            out.append(Variant(f"rrf_k {rrf_k}, vector {vector}", ranking={"rrf_k": rrf_k, "vector": vector}))
    return out


def leave_one_out(base: Scores, variants: dict[str, Scores]) -> dict[str, Any]:
    """Tune on four conversations, test on the fifth: does picking the best variant generalise?

    For each held-out conversation, the variant (default included) with the best
    recall@10 over the other conversations' questions is chosen and scored on the
    held-out questions. Returns the picks and the pooled held-out recall@10 of the
    tuned choice next to the default's.
    """
    candidates = {"default": base, **variants}
    convs = np.asarray([q.conv for q in base.questions])
    picks, tuned = {}, np.zeros(len(convs))
    for held in dict.fromkeys(convs.tolist()):
        train = convs != held
        best = max(candidates, key=lambda name: candidates[name].r10[train].mean())
        picks[held] = best
        tuned[~train] = candidates[best].r10[~train]
    return {"picks": picks, "tuned_recall@10": float(tuned.mean()), "default_recall@10": float(base.r10.mean())}


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--conversations", default="", help="comma-separated sample ids (default: all)")
    parser.add_argument("--no-experiments", action="store_true", help="only the three methods, headline format")
    parser.add_argument("--dir", type=Path, default=None, help="where the hives go (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="one conversation and a few variants, for CI")
    args = parser.parse_args(argv)
    if args.quick and not args.conversations:
        args.conversations = "conv-30"
    only = [c for c in args.conversations.split(",") if c]
    conversations, repair = load(args.data, only)
    if not conversations:
        raise SystemExit(f"no conversations selected from {args.data}")
    questions = [q for c in conversations for q in c.questions]
    log(
        f"{len(conversations)} conversations, {sum(len(c.turns) for c in conversations):,} turns, "
        f"{len(questions)} questions (categories 1-4); evidence repair: {repair}"
    )

    real = hivemem.make_embedder("minilm")
    assert real is not None
    memo = MemoEmbedder(real)
    formats = [HEADLINE_FORMAT] if args.quick or args.no_experiments else list(FORMATS)
    try:
        import snowballstemmer  # type: ignore[import-untyped]  # noqa: F401

        have_snowball = True
    except ImportError:
        have_snowball = False
        log("snowballstemmer not installed: reference BM25 rows skipped")

    started = time.perf_counter()
    methods: dict[str, Scores] = {}
    by_format: dict[str, dict[str, Scores]] = {}
    variants: dict[str, Scores] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        paths: dict[tuple[str, str], Path] = {}
        for f_index, fmt_name in enumerate(formats):
            fmt = FORMATS[fmt_name]
            log(f"format {fmt_name!r}: building hives")
            for conv in conversations:
                path = paths[fmt_name, conv.sample_id] = Path(tmp) / f"f{f_index}-{conv.sample_id}.db"
                build_hive(path, conv, fmt, memo)
            runs: dict[str, list[list[str]]] = {"hivemem default": [], "bm25 only (hivemem, no embedder)": []}
            runs["dense only (numpy cosine)"] = []
            if have_snowball:
                runs["ref: bm25 + snowball (numpy)"] = []
                runs["ref: rrf(bm25 snowball, dense), k0=10"] = []
            for conv in conversations:
                path = paths[fmt_name, conv.sample_id]
                runs["hivemem default"] += hive_ranked(path, conv, memo, None, "end")
                runs["bm25 only (hivemem, no embedder)"] += hive_ranked(path, conv, None, None, "end")
                runs["dense only (numpy cosine)"] += dense_ranked(memo, conv, fmt)
                if have_snowball:
                    bm, fused = reference_ranked(memo, conv, fmt)
                    runs["ref: bm25 + snowball (numpy)"] += bm
                    runs["ref: rrf(bm25 snowball, dense), k0=10"] += fused
            by_format[fmt_name] = {name: Scores.of(questions, ranked) for name, ranked in runs.items()}
            if fmt_name == HEADLINE_FORMAT:
                methods = by_format[fmt_name]
        base = methods["hivemem default"]
        if not args.no_experiments:
            for v in ranking_variants(args.quick):
                log(f"variant {v.label}")
                ranked = []
                for conv in conversations:
                    ranked += hive_ranked(paths[v.fmt, conv.sample_id], conv, memo, v.ranking, v.clock)
                variants[v.label] = Scores.of(questions, ranked)
    elapsed = time.perf_counter() - started

    # -- report --------------------------------------------------------------------------------
    head = base.summary()
    print_table(
        f"LoCoMo retrieval, {len(questions)} questions (categories 1-4), k={K}, format {HEADLINE_FORMAT!r}",
        ["method", "recall@5", "recall@10", "hit@10", "MRR@10"],
        [[n, *(s.summary()[m] for m in ("recall@5", "recall@10", "hit@10", "mrr@10"))] for n, s in methods.items()],
    )
    cat_names = list(base.by_category())
    print_table(
        "recall@10 by category (questions)",
        ["method", *(f"{c} ({base.by_category()[c]['n']})" for c in cat_names)],
        [[n, *(s.by_category()[c]["recall@10"] for c in cat_names)] for n, s in methods.items()],
    )
    print_table(
        "recall@10 by conversation (questions)",
        ["method", *(f"{c} ({sum(q.conv == c for q in questions)})" for c in base.by_conversation())],
        [[n, *s.by_conversation().values()] for n, s in methods.items()],
    )
    if len(by_format) > 1:
        print_table(
            "content formats: recall@10",
            ["format", *methods],
            [[f, *(s.summary()["recall@10"] for s in runs_.values())] for f, runs_ in by_format.items()],
        )
        print_table(
            "content formats, HiveMem default: recall@10 by category; delta and se against the headline format",
            ["format", "recall@10", "delta", "se", "conv +/-", *cat_names],
            [
                [
                    f,
                    r["hivemem default"].summary()["recall@10"],
                    r["hivemem default"].versus(base)["delta_recall@10"],
                    r["hivemem default"].versus(base)["se"],
                    "{convs_better}/{convs_worse}".format(**r["hivemem default"].versus(base)),
                    *(r["hivemem default"].by_category()[c]["recall@10"] for c in cat_names),
                ]
                for f, r in by_format.items()
            ],
        )
    rows = []
    for label, s in [("default", base), *variants.items()]:
        vs = s.versus(base)
        rows.append(
            [
                label,
                s.summary()["recall@10"],
                vs["delta_recall@10"],
                vs["se"],
                f"{vs['convs_better']}/{vs['convs_worse']}",
                s.summary()["recall@5"],
                s.summary()["mrr@10"],
                *(s.by_category()[c]["recall@10"] for c in cat_names),
            ]
        )
    if variants:
        print_table(
            f"HiveMem ranking variants (format {HEADLINE_FORMAT!r}); "
            "conv +/- = conversations better/worse than default",
            ["variant", "recall@10", "delta", "se", "conv +/-", "recall@5", "MRR@10", *cat_names],
            rows,
        )
    loo = leave_one_out(base, variants) if len(conversations) > 1 and variants else None
    if loo is not None:
        print_table(
            "leave one conversation out: the variant that scores best on the other conversations, "
            "scored on the held-out one",
            ["held out", "picked on the others"],
            list(loo["picks"].items()),
        )
        print(
            f"held-out recall@10: tuned {loo['tuned_recall@10']:.3f} vs default {loo['default_recall@10']:.3f} "
            "(a tuned score no better than the default means the tuning does not generalise)"
        )
    print(
        f"\nHEADLINE: HiveMem default recall@10 = {head['recall@10']:.3f} over {head['n']} questions "
        f"(target >= {TARGET_RECALL10}; README's best simple fusion 0.634); {elapsed:.0f} s"
    )

    def dump(s: Scores) -> dict[str, Any]:
        return {
            "total": s.summary(),
            "by_category": s.by_category(),
            "by_conversation": s.by_conversation(),
            "vs_default": s.versus(base),
        }

    path = write_results(
        "locomo",
        args,
        {
            "questions": len(questions),
            "evidence_repair": repair,
            "headline_format": HEADLINE_FORMAT,
            "headline": head,
            "target_recall@10": TARGET_RECALL10,
            "methods": {n: dump(s) for n, s in methods.items()},
            "formats": {f: {n: dump(s) for n, s in r.items()} for f, r in by_format.items()},
            "variants": {label: dump(s) for label, s in variants.items()},
            "leave_one_conversation_out": loo,
            "seconds": elapsed,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
