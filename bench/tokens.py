"""Token counting: speed of each counter, and how far the estimator is from the exact count.

Three corpora, all offline and deterministic:

* ``chat``: generated sentences (``_common.TextGenerator``), like chat turns;
* ``prose``: paragraphs of the Python documentation's topics (``pydoc_data``);
* ``code``: paragraphs of HiveMem's own sources and README (code, docstrings, Markdown).

Speed: strings/s and tokens/s (exact MiniLM tokens of the corpus divided by the
time) for ``count`` one text at a time and for ``count_many`` on the whole
corpus, best of ``--repeat`` runs. ``tiktoken:cl100k_base`` is measured too when
its file is in tiktoken's cache (never downloaded).

Accuracy: the estimator's relative error against the exact MiniLM count on
texts of 20 tokens or more: median and 90th percentile of ``|estimate - exact|
/ exact``, and the mean signed error (bias; negative means it undercounts).

    python bench/tokens.py            # 5,000 texts per corpus, best of 3
    python bench/tokens.py --quick    # 500 texts per corpus, one run: a few seconds
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any

from _common import TextGenerator, log, print_table, write_results
from hivemem.errors import ConfigError
from hivemem.tokens import TokenCounter, counter_for

SOURCES = Path(__file__).resolve().parents[1]


def corpora(size: int) -> dict[str, list[str]]:
    """``size`` texts per corpus (fewer if a source runs out), the same on every run."""
    from pydoc_data.topics import topics

    rng = random.Random(7)
    prose = [p for text in topics.values() for p in text.split("\n\n") if len(p.strip()) > 40]
    files = [SOURCES / "README.md", *sorted((SOURCES / "src" / "hivemem").rglob("*.py"))]
    code = [p for f in files for p in f.read_text(encoding="utf-8").split("\n\n") if len(p.strip()) > 40]
    rng.shuffle(prose)
    rng.shuffle(code)
    return {"chat": TextGenerator(seed=7).sentences(size), "prose": prose[:size], "code": code[:size]}


def speed(counter: TokenCounter, texts: list[str], tokens: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` throughput of ``count`` (one by one) and ``count_many``."""
    one = many = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for text in texts:
            counter.count(text)
        one = min(one, time.perf_counter() - start)
        start = time.perf_counter()
        counter.count_many(texts)
        many = min(many, time.perf_counter() - start)
    return {
        "strings_per_s": len(texts) / one,
        "tokens_per_s": tokens / one,
        "batch_strings_per_s": len(texts) / many,
        "batch_tokens_per_s": tokens / many,
    }


def accuracy(exact: list[int], estimate: list[int]) -> dict[str, float]:
    """Relative error of the estimate on texts of 20+ exact tokens."""
    errors = [(e - x) / x for e, x in zip(estimate, exact, strict=True) if x >= 20]
    absolute = sorted(abs(e) for e in errors)
    return {
        "texts": len(errors),
        "median_error": absolute[len(absolute) // 2],
        "p90_error": absolute[int(0.9 * (len(absolute) - 1))],
        "bias": statistics.fmean(errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5000, help="texts per corpus")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--quick", action="store_true", help="500 texts per corpus, one run, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.repeat = 500, 1
    counters = {"minilm": counter_for("minilm"), "estimate": counter_for("estimate")}
    try:
        counters["tiktoken:cl100k_base"] = counter_for("tiktoken:cl100k_base")
    except ConfigError as exc:
        log(f"tiktoken:cl100k_base not measured: {exc.message.split(' and HiveMem')[0]}")
    log("building corpora")
    texts = corpora(args.texts)
    results: dict[str, Any] = {"speed": {}, "estimate_error": {}}
    speed_rows: list[list[Any]] = []
    error_rows: list[list[Any]] = []
    for corpus, items in texts.items():
        exact = counters["minilm"].count_many(items)
        total = sum(exact)
        counters["minilm"].count_many(items)  # warm the tokenizer up before timing
        for name, counter in counters.items():
            log(f"{corpus}: {name}")
            measured = speed(counter, items, total, args.repeat)
            results["speed"][f"{corpus}/{name}"] = measured
            speed_rows.append(
                [
                    corpus,
                    name,
                    len(items),
                    round(total / len(items), 1),
                    measured["strings_per_s"],
                    measured["tokens_per_s"],
                    measured["batch_strings_per_s"],
                    measured["batch_tokens_per_s"],
                ]
            )
        error = accuracy(exact, counters["estimate"].count_many(items))
        results["estimate_error"][corpus] = error
        error_rows.append(
            [corpus, error["texts"], 100 * error["median_error"], 100 * error["p90_error"], 100 * error["bias"]]
        )
    print_table(
        "token counting speed (best of runs; tokens are exact MiniLM tokens of the corpus)",
        ["corpus", "counter", "texts", "tokens/text", "strings/s", "tokens/s", "batch strings/s", "batch tokens/s"],
        speed_rows,
    )
    print_table(
        "estimate vs exact MiniLM count, texts of 20+ tokens (relative error, %)",
        ["corpus", "texts", "median |error| %", "p90 |error| %", "bias %"],
        error_rows,
    )
    path = write_results("tokens", args, results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
