"""Redaction: secrets and personal data never survive; ordinary text does."""

from __future__ import annotations

import base64
import secrets
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hivemem.errors import InvalidInput
from hivemem.redaction import BUILTIN_LABELS, Redactor

REDACTOR = Redactor()

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_URLSAFE = _ALNUM + "_-"


def _chars(alphabet: str, size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=max_size or size)


def _digits(n: int) -> st.SearchStrategy[str]:
    return _chars("0123456789", n)


SECRETS: dict[str, st.SearchStrategy[str]] = {
    "openai_key": st.builds(
        lambda p, k: f"sk-{p}{k}", st.sampled_from(["", "proj-", "ant-api03-"]), _chars(_URLSAFE, 20, 60)
    ),
    "aws_key": st.builds(lambda p, k: p + k, st.sampled_from(["AKIA", "ASIA"]), _chars(_UPPER, 16)),
    "github_token": st.one_of(
        st.builds(lambda p, k: p + k, st.sampled_from(["ghp_", "gho_", "ghs_"]), _chars(_ALNUM, 36)),
        st.builds(lambda k: "github_pat_" + k, _chars(_ALNUM + "_", 22, 82)),
    ),
    "slack_token": st.builds(lambda p, k: f"xox{p}-{k}", st.sampled_from("abpr"), _chars(_ALNUM + "-", 10, 50)),
    "google_key": st.builds(lambda k: "AIza" + k, _chars(_URLSAFE, 35)),
    "stripe_key": st.builds(lambda p, k: p + k, st.sampled_from(["sk_live_", "rk_test_"]), _chars(_ALNUM, 16, 40)),
    "jwt": st.builds(
        lambda h, p, s: f"eyJ{h}.eyJ{p}.{s}",
        _chars(_URLSAFE, 10, 40),
        _chars(_URLSAFE, 10, 80),
        _chars(_URLSAFE, 0, 60),
    ),
    "email": st.builds(
        lambda u, d, t: f"{u}@{d}.{t}",
        _chars(_ALNUM + "._%+-", 1, 30),
        _chars(_ALNUM + "-", 1, 20),
        st.sampled_from(["com", "org", "co.uk", "io", "museum"]),
    ),
    "phone": st.one_of(
        st.builds(lambda c, a, b, d: f"+{c} {a} {b} {d}", _digits(2), _digits(1), _digits(4), _digits(4)),
        st.builds(lambda a, b, c: f"({a}) {b}-{c}", _digits(3), _digits(3), _digits(4)),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", _digits(3), _digits(3), _digits(4)),
        st.builds(lambda a, b: f"0{a} {b}", _digits(1), st.lists(_digits(2), min_size=4, max_size=4).map(" ".join)),
        st.builds(lambda a: f"07{a}", _digits(9)),
    ),
    "private_key": st.builds(
        lambda kind, body: f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----",
        st.sampled_from(["", "RSA ", "EC ", "OPENSSH "]),
        _chars(_ALNUM + "+/=\n", 20, 200),
    ),
}

# Each is written next to the words that give it away; only the value must go.
ASSIGNED: dict[str, st.SearchStrategy[str]] = {
    "password={}": _chars(_ALNUM + "!@#$%^&*", 10, 30),
    "DB_PASSWORD: {}": _chars(_ALNUM, 10, 30),
    'client_secret = "{}"': _chars(_ALNUM + " ", 10, 30),
    "Authorization: Bearer {}": _chars(_URLSAFE + ".~+/", 16, 60),
    '"api_key": "{}"': _chars(_ALNUM, 10, 30),
}

filler = st.text(max_size=80)


@settings(max_examples=150, deadline=None)
@given(label=st.sampled_from(sorted(SECRETS)), data=st.data(), before=filler, after=filler)
def test_a_secret_in_random_text_never_survives(label: str, data: st.DataObject, before: str, after: str) -> None:
    secret = data.draw(SECRETS[label], label)
    assume(secret not in before and secret not in after)
    out = REDACTOR.redact(f"{before} {secret}\n{after}")
    assert secret not in out
    assert "[REDACTED:" in out


@settings(max_examples=150, deadline=None)
@given(template=st.sampled_from(sorted(ASSIGNED)), data=st.data(), before=filler, after=filler)
def test_an_assigned_secret_never_survives(template: str, data: st.DataObject, before: str, after: str) -> None:
    value = data.draw(ASSIGNED[template], "value")
    assume(value.strip() and value not in before and value not in after)
    out = REDACTOR.redact(f"{before}\n{template.format(value)}\n{after}")
    assert value not in out


@pytest.mark.parametrize(
    "make", [secrets.token_hex, secrets.token_urlsafe, lambda n: base64.b64encode(secrets.token_bytes(n)).decode()]
)
def test_random_high_entropy_strings_are_redacted(make: object) -> None:
    for _ in range(200):
        secret = make(32)  # type: ignore[operator]
        out = REDACTOR.redact(f"value {secret} end")
        assert secret not in out, secret


def test_the_placeholder_names_what_was_removed() -> None:
    assert REDACTOR.redact("write to ana.lopez@example.org today") == "write to [REDACTED:email] today"
    assert REDACTOR.redact("Authorization: Bearer abcdef0123456789") == "Authorization: Bearer [REDACTED:bearer_token]"
    assert REDACTOR.redact("password=hunter22, user=ana") == "password=[REDACTED:secret], user=ana"
    assert REDACTOR.redact("aws AKIAIOSFODNN7EXAMPLE") == "aws [REDACTED:aws_key]"
    assert REDACTOR.redact("-----BEGIN PRIVATE KEY-----\nMIIE\n(cut off") == "[REDACTED:private_key]"
    assert set(BUILTIN_LABELS) >= {"email", "phone", "jwt", "private_key", "secret", "openai_key", "aws_key"}


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 we shipped 3 releases to 12,345 users.",
        "order 1234567 and ticket #98765 closed on 2024-01-15 at 10:30",
        "version 1.2.3 on host 192.168.1.10 port 8080",
        "the token budget is 2000; keep the secret sauce private",
        "see src/hivemem/retrieval/embedders.py and test_minilm_matches_the_embedders_tokenizer_without_cls",
        "price $1,299.99, ratio 3.14159, id 550e8400",
        "café déjà vu, 部署失败, emoji 🚀",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert REDACTOR.redact(text) == text


def test_user_patterns_with_and_without_a_secret_group() -> None:
    redactor = Redactor([r"ACCT-\d{6}", r"ssn (?P<secret>\d{3}-\d{2}-\d{4})"], builtins=False)
    assert redactor.redact("ACCT-123456 ssn 123-45-6789 ana@example.org") == (
        "[REDACTED:custom] ssn [REDACTED:custom] ana@example.org"
    )


@pytest.mark.parametrize(
    ("patterns", "field", "message"),
    [
        (["ok", "(unclosed"], "patterns[1]", "not a valid regular expression"),
        (["a*"], "patterns[0]", "matches the empty string"),
        ([""], "patterns[0]", "non-empty"),
        ("just-one-string", "patterns", "a list"),
    ],
)
def test_bad_patterns_are_refused_naming_them(patterns: list[str], field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as raised:
        Redactor(patterns)
    assert raised.value.field == field


def test_redact_data_walks_json_values() -> None:
    data = {"user": {"email": "ana@example.org", "age": 31}, "notes": ["call +1 415 555 0100", None, True], "n": 1.5}
    assert REDACTOR.redact_data(data) == {
        "user": {"email": "[REDACTED:email]", "age": 31},
        "notes": ["call [REDACTED:phone]", None, True],
        "n": 1.5,
    }
    assert data["user"] == {"email": "ana@example.org", "age": 31}  # the input is not changed


def test_non_string_text_is_refused() -> None:
    with pytest.raises(InvalidInput):
        REDACTOR.redact(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "unit", ["a.", "a-", "a", "1", "1 ", "+1 ", "x@", "b.", "eyJaaaaa.", "bearer ", "password=", "sk-", "A/", "(123) "]
)
def test_long_adversarial_text_is_redacted_in_linear_time(unit: str) -> None:
    text = unit * (40_000 // len(unit))
    start = time.perf_counter()
    REDACTOR.redact(text)
    assert time.perf_counter() - start < 1.0  # a backtracking pattern takes minutes here
