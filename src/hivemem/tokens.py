"""Token counters: how many tokens a text costs a given model.

Working memory budgets are in tokens, so this module owns turning text into a
token count. :func:`counter_for` turns a name into a :class:`TokenCounter`:

- ``"minilm"`` (the default; alias ``"bert"``): exact for the WordPiece
  vocabulary HiveMem ships with its MiniLM embedder, through the same
  ``tokenizers`` pipeline the embedder feeds the model. Counts leave out the
  ``[CLS]``/``[SEP]`` pair the model adds once per input, so counts of parts
  add up to the count of their concatenation (up to word boundaries).
- ``"tiktoken:<encoding>"`` (``cl100k_base``, ``o200k_base``, ``p50k_base``,
  ``r50k_base``): exact for OpenAI's encodings. ``tiktoken`` is optional and
  downloads its BPE file on first use; HiveMem never lets it: the file must
  already be in tiktoken's cache (``$TIKTOKEN_CACHE_DIR``, else
  ``$DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``), otherwise the name
  raises :class:`~hivemem.errors.ConfigError` saying how to fill the cache.
  Appending ``?fallback=estimate`` asks for the estimator instead of the error.
- ``"openai"``: the best OpenAI encoding in the cache (``o200k_base``, then
  ``cl100k_base``), else the estimator: a provider name asks for a good
  guess, not a specific encoding.
- ``"estimate"``: :class:`EstimateCounter`, no vocabulary at all.

A counter's ``name`` says what it really is, so a caller can tell that a
fallback happened (``counter_for("openai").name == "estimate"`` offline).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from hivemem.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "DEFAULT_COUNTER",
    "EstimateCounter",
    "MiniLMCounter",
    "TiktokenCounter",
    "TokenCounter",
    "check_counter_name",
    "counter_for",
    "tiktoken_cache_dir",
]

#: The counter used when none is named.
DEFAULT_COUNTER: Final = "minilm"

# Where tiktoken_ext.openai_public fetches each encoding, and the sha256 it checks.
# tiktoken caches a file under sha1(url); a cached file with another digest is
# deleted and fetched again, so it counts as missing here.
_TIKTOKEN_FILES: Final[dict[str, tuple[str, str]]] = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "p50k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
    "r50k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}
_OPENAI_PREFERENCE: Final = ("o200k_base", "cl100k_base")
_FALLBACK_SUFFIX: Final = "?fallback=estimate"


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text for one tokenizer.

    Attributes:
        name: What the counter is, e.g. ``"minilm"``, ``"tiktoken:cl100k_base"``
            or ``"estimate"``.
    """

    name: str

    def count(self, text: str) -> int:
        """The number of tokens in ``text`` (0 for ``""``)."""
        ...

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``[count(t) for t in texts]``, in one call where the tokenizer can batch."""
        ...


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidInput("text", "must be a string")
    return text


class MiniLMCounter:
    """Exact counts for HiveMem's MiniLM WordPiece vocabulary, without ``[CLS]``/``[SEP]``.

    Lowercasing, accent stripping, BERT's punctuation and CJK splitting,
    greedy longest-match WordPiece with ``##`` continuations, and ``[UNK]``
    (one token) for a word over 100 characters; the tokenizer is the
    embedder's (:func:`hivemem.retrieval.embedders.minilm_tokenizer`), so the
    count is what the model reads: special-token text written in a message,
    such as ``[SEP]``, is one token. A text longer than the embedder's
    ``max_length`` is still counted in full. Thread-safe.
    """

    name = "minilm"

    def count(self, text: str) -> int:
        """The number of WordPiece tokens in ``text``.

        Raises:
            InvalidInput: ``text`` is not a string.
        """
        return len(_minilm().encode(_check_text(text), add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """The counts of ``texts``, tokenized as one batch on several threads (faster for long texts).

        Raises:
            InvalidInput: An item is not a string.
        """
        items = [_check_text(t) for t in texts]
        return [len(e.ids) for e in _minilm().encode_batch_fast(items, add_special_tokens=False)]


@functools.cache
def _minilm() -> Tokenizer:
    from hivemem.retrieval.embedders import minilm_tokenizer

    return minilm_tokenizer()


# Runs of Latin letters (accented too, composed or not) and digits are words; any other
# non-space character is a piece of its own: punctuation, and letters of other scripts
# (CJK, Cyrillic, Greek...), which a mostly English WordPiece vocabulary splits into
# single characters.
_PIECE: Final = re.compile(r"[0-9A-Za-z\u00c0-\u024f\u0300-\u036f\u1e00-\u1eff]+|\S")
_WHOLE_WORD: Final = 8
_CHARS_PER_EXTRA: Final = 3


class EstimateCounter:
    """A vocabulary-free estimate of a WordPiece count.

    The text is split like BERT's basic tokenizer: runs of Latin letters and
    digits, and each other non-space character alone (punctuation, and the
    letters of other scripts, which the vocabulary mostly splits into single
    characters). A run of
    up to 8 characters is one token (common words are whole entries in the
    vocabulary); a longer one costs one more token per further 3 characters.
    Tuned and measured against the exact :class:`MiniLMCounter` on texts of
    20+ tokens (``bench/tokens.py``): on English prose (the Python
    documentation's topics) the median error is 4% and the 90th percentile
    13%; on generated chat sentences 5% and 14% (it overcounts by 6% on
    average); on code and Markdown (HiveMem's own sources) 6% and 15% (it
    undercounts by 7%). Sample sentences in Russian, Greek, Arabic, Chinese
    and Japanese came within 10%; other Latin-script languages are
    undercounted, as their words split into more pieces (a German sentence
    by 40%). It is 3-9 times faster than the exact counter; use it where no
    vocabulary is known.
    """

    name = "estimate"

    def count(self, text: str) -> int:
        """The estimated number of tokens in ``text``.

        Raises:
            InvalidInput: ``text`` is not a string.
        """
        return sum(
            1 + math.ceil(max(0, len(piece) - _WHOLE_WORD) / _CHARS_PER_EXTRA)
            for piece in _PIECE.findall(_check_text(text))
        )

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """The estimates of ``texts``.

        Raises:
            InvalidInput: An item is not a string.
        """
        return [self.count(t) for t in texts]


class TiktokenCounter:
    """Exact counts for an OpenAI encoding through ``tiktoken``, from its local cache only.

    Build it with :func:`counter_for` (``"tiktoken:cl100k_base"``), which
    checks first that the encoding's file is cached, so nothing is downloaded.
    Special-token text such as ``<|endoftext|>`` is counted as ordinary text.
    """

    def __init__(self, encoding: Any, encoding_name: str) -> None:
        """Wrap a loaded ``tiktoken.Encoding``."""
        self.name = f"tiktoken:{encoding_name}"
        self._encoding = encoding

    def count(self, text: str) -> int:
        """The number of tokens in ``text``.

        Raises:
            InvalidInput: ``text`` is not a string.
        """
        return len(self._encoding.encode_ordinary(_check_text(text)))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """The counts of ``texts``, encoded in parallel by tiktoken.

        Raises:
            InvalidInput: An item is not a string.
        """
        items = [_check_text(t) for t in texts]
        return [len(ids) for ids in self._encoding.encode_ordinary_batch(items)]


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken reads cached encodings from, or None when its cache is disabled.

    The same lookup as ``tiktoken.load.read_file_cached``: ``$TIKTOKEN_CACHE_DIR``,
    else ``$DATA_GYM_CACHE_DIR``, else ``data-gym-cache`` in the temp folder;
    an empty value disables the cache.
    """
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            value = os.environ[variable]
            return Path(value) if value else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _tiktoken_missing(encoding_name: str) -> str | None:
    """Why ``encoding_name`` cannot be loaded offline, or None when it can."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return f"tiktoken:{encoding_name} needs the tiktoken package: pip install tiktoken"
    url, sha256 = _TIKTOKEN_FILES[encoding_name]
    cache = tiktoken_cache_dir()
    # tiktoken names a cached file by the sha1 of its URL.
    path = None if cache is None else cache / hashlib.sha1(url.encode()).hexdigest()
    if path is None or not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        return (
            f"tiktoken:{encoding_name} is not in tiktoken's cache ({path or 'cache disabled'}) and HiveMem does not "
            f"download it: on a machine with network access run "
            f"`python -c \"import tiktoken; tiktoken.get_encoding('{encoding_name}')\"` with TIKTOKEN_CACHE_DIR set "
            f"to a folder, then copy that folder here and set TIKTOKEN_CACHE_DIR to it; "
            f"or name 'tiktoken:{encoding_name}{_FALLBACK_SUFFIX}' to estimate instead"
        )
    return None


def _tiktoken(encoding_name: str) -> TiktokenCounter:
    import tiktoken

    return TiktokenCounter(tiktoken.get_encoding(encoding_name), encoding_name)


def check_counter_name(name: str) -> str:
    """``name`` itself when :func:`counter_for` knows it, without loading anything.

    A resources file is checked with this, so it is valid on a machine
    whatever tiktoken's cache holds there.

    Raises:
        ConfigError: The name is not one :func:`counter_for` accepts.
    """
    if not isinstance(name, str):
        raise ConfigError("a token counter name must be a string", counter=repr(name))
    if name in ("minilm", "bert", "estimate", "openai"):
        return name
    encoding_name = name.removeprefix("tiktoken:").removesuffix(_FALLBACK_SUFFIX)
    if name.startswith("tiktoken:") and encoding_name not in _TIKTOKEN_FILES:
        raise ConfigError(
            f"unknown tiktoken encoding {encoding_name!r}: use one of {', '.join(_TIKTOKEN_FILES)}", counter=name
        )
    if not name.startswith("tiktoken:"):
        raise ConfigError(
            f"unknown token counter {name!r}: use minilm, bert, estimate, openai or tiktoken:<encoding>", counter=name
        )
    return name


def counter_for(name: str | None = None) -> TokenCounter:
    """The token counter a name stands for (see the module docstring for the names).

    Args:
        name: ``"minilm"``/``"bert"``, ``"estimate"``, ``"openai"``,
            ``"tiktoken:<encoding>"`` or ``"tiktoken:<encoding>?fallback=estimate"``;
            None means ``"minilm"``.

    Returns:
        A counter; its ``name`` says which one was chosen.

    Raises:
        ConfigError: The name is unknown, or a tiktoken encoding cannot be
            loaded offline and no fallback was asked for.
    """
    name = check_counter_name(DEFAULT_COUNTER if name is None else name)
    if name in ("minilm", "bert"):
        return MiniLMCounter()
    if name == "estimate":
        return EstimateCounter()
    if name == "openai":
        for encoding_name in _OPENAI_PREFERENCE:
            if _tiktoken_missing(encoding_name) is None:
                return _tiktoken(encoding_name)
        return EstimateCounter()
    encoding_name = name.removeprefix("tiktoken:").removesuffix(_FALLBACK_SUFFIX)
    problem = _tiktoken_missing(encoding_name)
    if problem is None:
        return _tiktoken(encoding_name)
    if name.endswith(_FALLBACK_SUFFIX):
        return EstimateCounter()
    raise ConfigError(problem, counter=name)
