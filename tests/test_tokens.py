"""Token counters: MiniLM counts are exact, tiktoken never downloads, the estimator stays close."""

from __future__ import annotations

import importlib.resources
import random
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivemem.errors import ConfigError, InvalidInput
from hivemem.retrieval.embedders import MiniLMEmbedder
from hivemem.tokens import (
    EstimateCounter,
    MiniLMCounter,
    TiktokenCounter,
    TokenCounter,
    counter_for,
    tiktoken_cache_dir,
)

# --- an independent reference: BERT's original basic + WordPiece tokenizer, in plain Python ---


def _vocab() -> set[str]:
    text = importlib.resources.files("hivemem.data").joinpath("minilm-vocab.txt").read_text(encoding="utf-8")
    return set(text.splitlines())


VOCAB = _vocab()
WORDS = sorted(VOCAB)
SPECIALS = re.compile(r"(\[UNK\]|\[SEP\]|\[CLS\]|\[PAD\]|\[MASK\])")


def _is_cjk(cp: int) -> bool:
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x4E00, 0x9FFF),
            (0x3400, 0x4DBF),
            (0x20000, 0x2A6DF),
            (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F),
            (0x2B820, 0x2CEAF),
            (0xF900, 0xFAFF),
            (0x2F800, 0x2FA1F),
        )
    )


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch)[0] == "P"


def _clean(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\t\n\r " or unicodedata.category(ch) == "Zs":
            out.append(" ")
        # BERT drops unassigned code points (Cn) too; the tokenizer the model uses keeps them.
        elif ord(ch) in (0, 0xFFFD) or unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs"):
            continue
        elif _is_cjk(ord(ch)):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def _wordpiece(word: str) -> int:
    if len(word) > 100:
        return 1
    count, start = 0, 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in VOCAB:
                break
            end -= 1
        if end == start:
            return 1  # the whole word becomes one [UNK]
        count += 1
        start = end
    return count


def reference_count(text: str) -> int:
    # Special tokens written in the text are matched first, as the model's tokenizer does.
    parts = SPECIALS.split(text)
    return sum(1 if i % 2 else _basic_count(part) for i, part in enumerate(parts))


def _basic_count(text: str) -> int:
    total = 0
    for raw in _clean(text).split():
        token = "".join(c for c in unicodedata.normalize("NFD", raw.lower()) if unicodedata.category(c) != "Mn")
        word = ""
        for ch in token:
            if _is_punct(ch):
                total += _wordpiece(word) if word else 0
                total += _wordpiece(ch)
                word = ""
            else:
                word += ch
        total += _wordpiece(word) if word else 0
    return total


# --- generated texts: words, unicode, punctuation, emoji, long words ---

_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "éèêëàâäôöûüçñßøåÉÀÖÜ",
    "абвгдежзийклмнопрстуфхцчшщыэюя",
    "部署在迁移数据库时失败了请检查日志",
    "データベースの移行中にデプロイが失敗",
    "한국어텍스트",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "“”‘’«»—–…·•§¶†",
    "😀🚀🔥👍🏽❤️🇫🇷",
    " \t\n\u00a0\u2003\u200b\u2028",
    "\u0301\u0308\u00ad\ufeff\x00\x07",
]


def random_text(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(0, 25)):
        roll = rng.random()
        if roll < 0.5:
            words.append(rng.choice(WORDS).removeprefix("##"))
        elif roll < 0.55:
            words.append("x" * rng.choice((99, 100, 101, 150)))
        else:
            alphabet = rng.choice(_ALPHABETS)
            words.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))))
    return rng.choice([" ", "", "  ", "\n"]).join(words)


TEXTS = [random_text(random.Random(seed)) for seed in range(3000)]


def test_minilm_matches_an_independent_bert_reference() -> None:
    counts = MiniLMCounter().count_many(TEXTS)
    mismatches = [(t, c, reference_count(t)) for t, c in zip(TEXTS, counts, strict=True) if c != reference_count(t)]
    assert not mismatches, mismatches[:5]


def test_minilm_matches_the_embedders_tokenizer_without_cls_and_sep() -> None:
    embedder = MiniLMEmbedder()
    counter = counter_for("minilm")
    for text in TEXTS[:500]:
        assert counter.count(text) == embedder.count_tokens(text) - 2


def test_minilm_matches_tokenizers_bert_wordpiece_tokenizer() -> None:
    from tokenizers import BertWordPieceTokenizer

    with importlib.resources.as_file(importlib.resources.files("hivemem.data").joinpath("minilm-vocab.txt")) as vocab:
        bert = BertWordPieceTokenizer(str(vocab), lowercase=True)
    expected = [len(e.ids) for e in bert.encode_batch(TEXTS, add_special_tokens=False)]
    assert MiniLMCounter().count_many(TEXTS) == expected


def test_count_and_count_many_agree() -> None:
    counter = MiniLMCounter()
    assert counter.count_many(TEXTS[:300]) == [counter.count(t) for t in TEXTS[:300]]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_minilm_matches_reference_on_arbitrary_unicode(text: str) -> None:
    assert MiniLMCounter().count(text) == reference_count(text)


def test_known_counts() -> None:
    counter = counter_for(None)
    assert counter.name == "minilm"
    assert counter.count("") == 0
    assert counter.count("Hello, world!") == 4
    assert counter.count("HÉLLO") == counter.count("hello") == 1
    assert counter.count("x" * 101) == 1  # one [UNK] for a word over 100 characters
    assert counter.count("a [SEP] b") == 3  # special tokens in the text are read as such
    assert counter.count("部署") == 2
    assert counter_for("bert").count("unaffable") == counter.count("unaffable") > 1


@pytest.mark.parametrize("name", ["minilm", "estimate"])
def test_counters_refuse_non_strings(name: str) -> None:
    counter = counter_for(name)
    assert isinstance(counter, TokenCounter)
    with pytest.raises(InvalidInput):
        counter.count(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        counter.count_many(["ok", 3])  # type: ignore[list-item]


def test_estimate_is_close_to_minilm_on_prose() -> None:
    prose = [t for t in Path(__file__).resolve().parents[1].joinpath("README.md").read_text().split("\n\n")]
    exact = MiniLMCounter().count_many(prose)
    estimate = EstimateCounter().count_many(prose)
    errors = sorted(abs(e - x) / x for e, x in zip(estimate, exact, strict=True) if x >= 20)
    assert len(errors) > 20
    assert errors[len(errors) // 2] < 0.15


@pytest.mark.parametrize(
    "text",
    [
        "Развертывание не удалось из-за ошибки миграции базы данных.",
        "Η ανάπτυξη απέτυχε λόγω σφάλματος μετανάστευσης.",
        "部署在迁移数据库时失败了，请检查日志。",
        "データベースの移行中にデプロイが失敗しました。",
    ],
)
def test_estimate_counts_other_scripts_by_character(text: str) -> None:
    exact = MiniLMCounter().count(text)
    assert abs(EstimateCounter().count(text) - exact) <= 0.1 * exact


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100), st.text(max_size=100))
def test_estimate_is_additive_over_whitespace(a: str, b: str) -> None:
    counter = EstimateCounter()
    assert counter.count(a + " " + b) == counter.count(a) + counter.count(b)


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown token counter 'gpt'"):
        counter_for("gpt")
    with pytest.raises(ConfigError, match="unknown tiktoken encoding 'nope'"):
        counter_for("tiktoken:nope?fallback=estimate")


# --- tiktoken: never a download ---

tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is optional (it is in the dev extra)")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    return tmp_path


def test_missing_encoding_is_a_config_error_without_network(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*_args: object) -> bytes:
        raise AssertionError("tiktoken tried to download")

    monkeypatch.setattr("tiktoken.load.read_file", no_network)
    with pytest.raises(ConfigError, match="TIKTOKEN_CACHE_DIR") as raised:
        counter_for("tiktoken:cl100k_base")
    assert str(empty_cache) in raised.value.message
    assert counter_for("tiktoken:cl100k_base?fallback=estimate").name == "estimate"
    assert counter_for("openai").name == "estimate"
    assert list(empty_cache.iterdir()) == []


def test_a_corrupt_cached_file_counts_as_missing(empty_cache: Path) -> None:
    import hashlib

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    cached = empty_cache / hashlib.sha1(url.encode()).hexdigest()
    cached.write_bytes(b"not the encoding\n")
    with pytest.raises(ConfigError, match="not in tiktoken's cache"):
        counter_for("tiktoken:cl100k_base")
    assert cached.exists()  # tiktoken would have deleted it and fetched again


def test_known_files_match_tiktokens_own() -> None:
    import inspect

    import tiktoken_ext.openai_public as public  # type: ignore[import-untyped]

    from hivemem.tokens import _TIKTOKEN_FILES

    for name, (url, sha256) in _TIKTOKEN_FILES.items():
        source = inspect.getsource(getattr(public, name))
        assert url in source
        assert sha256 in source


def test_cache_dir_follows_tiktoken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))
    assert tiktoken_cache_dir() == tmp_path
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tiktoken_cache_dir() is None
    with pytest.raises(ConfigError, match="cache disabled"):
        counter_for("tiktoken:o200k_base")


def test_cached_encoding_counts_exactly() -> None:
    if "not in tiktoken's cache" in _why_unavailable("cl100k_base"):
        pytest.skip("cl100k_base is not in tiktoken's cache here and the tests never download it")
    counter = counter_for("tiktoken:cl100k_base")
    assert isinstance(counter, TiktokenCounter)
    assert counter.count("hello world") == 2
    assert counter.count("<|endoftext|>") > 1
    assert counter.count_many(["hello world", ""]) == [2, 0]


def _why_unavailable(encoding: str) -> str:
    try:
        counter_for(f"tiktoken:{encoding}")
    except ConfigError as exc:
        return exc.message
    return ""
