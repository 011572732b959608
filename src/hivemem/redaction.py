"""Redaction: removing personal data and secrets from text before it is stored.

A :class:`Redactor` replaces every match of its patterns with a placeholder
that names what was removed (``[REDACTED:email]``), so a reader still sees
that something was there. The built-in patterns cover e-mail addresses, phone
numbers, well-known API key and token formats, JWTs, PEM private keys,
``password=...``-style assignments and long high-entropy strings. They lean
towards privacy: a git commit id or a sha256 digest looks like a secret and is
redacted too. Users add their own regular expressions; in any pattern, a group
named ``secret`` limits the replacement to that group (``Bearer [REDACTED:...]``
keeps the word ``Bearer``).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from hivemem.errors import InvalidInput

__all__ = ["BUILTIN_LABELS", "Redactor", "compile_pattern"]

_SECRET_GROUP: Final = "secret"
_BEFORE: Final = r"(?<![A-Za-z0-9_])"  # not inside a longer word or key
_AFTER: Final = r"(?![A-Za-z0-9_])"
# Leaves a placeholder alone, so a later pattern does not redact it again.
_NOT_PLACEHOLDER: Final = r"(?!\[REDACTED)"


def _high_entropy(candidate: str) -> bool:
    """Random-looking: letters and digits mixed, and at least 3 bits of entropy per character."""
    if not (any(c.isdigit() for c in candidate) and any(c.isalpha() for c in candidate)):
        return False
    counts = Counter(candidate)
    entropy = -sum(n / len(candidate) * math.log2(n / len(candidate)) for n in counts.values())
    return entropy >= 3.0


@dataclass(frozen=True, slots=True)
class _Pattern:
    label: str
    regex: re.Pattern[str]
    accept: Callable[[str], bool] | None = None


# The name's ending is enough (DB_PASSWORD, github_token...): the value after it is what goes.
# No pattern for the name's beginning: one would backtrack quadratically over long dotted words.
_ASSIGNED_NAME: Final = (
    r"(?:password|passwd|passphrase|pwd|secret|api[_-]?key|apikey|access[_-]?key|"
    r"auth[_-]?token|access[_-]?token|refresh[_-]?token|private[_-]?key|client[_-]?secret|credentials?)"
)

# In order: the most specific formats first, so their label wins.
_BUILTINS: Final = (
    _Pattern(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)",
            re.DOTALL,
        ),
    ),
    _Pattern("jwt", re.compile(_BEFORE + r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*" + _AFTER)),
    _Pattern("github_token", re.compile(_BEFORE + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})")),
    _Pattern("slack_token", re.compile(_BEFORE + r"xox[abposer]-[A-Za-z0-9-]{10,}")),
    _Pattern("stripe_key", re.compile(_BEFORE + r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}")),
    _Pattern("openai_key", re.compile(_BEFORE + r"sk-[A-Za-z0-9_-]{20,}")),
    _Pattern("aws_key", re.compile(_BEFORE + r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}" + _AFTER)),
    _Pattern("google_key", re.compile(_BEFORE + r"AIza[A-Za-z0-9_-]{35}")),
    _Pattern(
        "bearer_token",
        re.compile(r"(?i)\bbearer\s+" + _NOT_PLACEHOLDER + r"(?P<secret>[A-Za-z0-9._~+/=-]{8,})"),
    ),
    _Pattern(
        "secret",
        re.compile(
            r"(?i)"
            + _ASSIGNED_NAME
            + r"[\"']?\s*[:=]\s*"
            + _NOT_PLACEHOLDER
            + r"(?P<secret>\"[^\"\n]+\"|'[^'\n]+'|[^\s\"',;]+)"
        ),
    ),
    _Pattern(
        "email",
        re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}" + _AFTER),
    ),
    _Pattern(
        "phone",
        re.compile(
            r"(?<![\w+])(?:"
            # International: +33 6 12 34 56 78, +1 (415) 555-0100, +442079460000
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}[ .-]?\d{2,4}"
            # North American: (415) 555-0100, 415-555-0100, 415.555.0100
            r"|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}"
            # Trunk prefix 0: 06 12 34 56 78, 020 7946 0000, 07911123456
            r"|0\d{1,4}(?:[ .-]\d{2,4}){2,4}|0\d{9,10}"
            r")(?![\w])"
        ),
    ),
    _Pattern(
        "secret",
        re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])"),
        _high_entropy,
    ),
)

#: The labels the built-in patterns produce, most specific first.
BUILTIN_LABELS: Final = tuple(dict.fromkeys(p.label for p in _BUILTINS))


def compile_pattern(pattern: object, field: str) -> re.Pattern[str]:
    """A user's pattern, compiled, or InvalidInput naming ``field`` and saying what is wrong.

    Raises:
        InvalidInput: ``pattern`` is not a non-empty string, not a valid regular
            expression, or matches the empty string.
    """
    if not isinstance(pattern, str) or not pattern:
        raise InvalidInput(field, "must be a non-empty regular expression string", value=repr(pattern))
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(field, f"not a valid regular expression: {exc}", pattern=pattern) from None
    if compiled.search("") is not None:
        raise InvalidInput(
            field, "matches the empty string, so it would redact between every character", pattern=pattern
        )
    return compiled


class Redactor:
    """Replaces personal data and secrets with ``[REDACTED:<label>]`` placeholders.

    The user's patterns (label ``custom``) run first, as they know the
    domain's formats best, then the built-in ones, most specific first; each
    runs over the text the previous ones left.
    A redactor is immutable and thread-safe.
    """

    def __init__(self, patterns: Sequence[str] = (), *, builtins: bool = True) -> None:
        """Compile the patterns.

        Args:
            patterns: The user's regular expressions (Python ``re`` syntax). A
                group named ``secret`` limits the replacement to that group.
            builtins: Also apply the built-in patterns (see :data:`BUILTIN_LABELS`).

        Raises:
            InvalidInput: A pattern is not a valid regular expression or matches
                the empty string; the field is ``patterns[<index>]``.
        """
        if isinstance(patterns, str):
            raise InvalidInput("patterns", "must be a list of regular expressions, not one string")
        custom = tuple(_Pattern("custom", compile_pattern(p, f"patterns[{i}]")) for i, p in enumerate(patterns))
        self._patterns = custom + (_BUILTINS if builtins else ())
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.builtins = builtins

    def __repr__(self) -> str:
        """Show the configuration."""
        return f"Redactor(patterns={self.patterns!r}, builtins={self.builtins})"

    def redact(self, text: str) -> str:
        """``text`` with every match replaced by ``[REDACTED:<label>]``.

        Raises:
            InvalidInput: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise InvalidInput("text", "must be a string")
        for pattern in self._patterns:
            text = pattern.regex.sub(functools.partial(_replace, pattern=pattern), text)
        return text

    def redact_data(self, value: Any) -> Any:
        """A copy of a JSON value with every string in it redacted (keys stay as they are).

        Dicts, lists and tuples are walked (tuples come back as lists, as JSON
        has no tuples); numbers, booleans and None are returned unchanged.
        """
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(item) for item in value]
        return value


def _replace(match: re.Match[str], pattern: _Pattern) -> str:
    if pattern.accept is not None and not pattern.accept(match.group()):
        return match.group()
    placeholder = f"[REDACTED:{pattern.label}]"
    if _SECRET_GROUP not in pattern.regex.groupindex or match.group(_SECRET_GROUP) is None:
        return placeholder
    start, end = match.span(_SECRET_GROUP)
    whole = match.group()
    return whole[: start - match.start()] + placeholder + whole[end - match.start() :]
