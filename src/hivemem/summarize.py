"""Summarizers: what a working-memory flush turns its oldest messages into.

A :class:`Summarizer` takes ``(role, content)`` pairs, a token budget and the
buffer's token counter, and returns one text within the budget. The default,
:class:`ExtractiveSummarizer`, is offline and deterministic: it keeps the
sentences whose words recur most across the messages, in their original
order. :class:`ChatSummarizer` asks an OpenAI-compatible chat completions API
instead. The Hive clips whatever a summarizer returns to the budget, so a
chatty model cannot overrun a buffer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import httpx

from hivemem.errors import ConfigError, EmbedderUnavailable
from hivemem.tokens import TokenCounter

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be but by for from has have i if in is it its me my no not of on or our so that the "
    "their them then there these they this to was we were what when which who will with you your".split()
)


@runtime_checkable
class Summarizer(Protocol):
    """Turns messages into one text of at most ``max_tokens`` tokens by ``counter``."""

    name: str

    def summarize(self, messages: Sequence[tuple[str, str]], *, max_tokens: int, counter: TokenCounter) -> str:
        """One text standing for ``messages`` (``(role, content)`` pairs, oldest first)."""
        ...


class ExtractiveSummarizer:
    """Keeps the most central sentences, in order: offline, deterministic, no model.

    Each sentence scores the mean corpus frequency of its content words (stop
    words left out); the best sentences that fit the budget are kept and
    printed in their original order, each prefixed by its speaker's role
    (except sentences of an earlier summary, which carry theirs already).
    """

    name = "extractive"

    def summarize(self, messages: Sequence[tuple[str, str]], *, max_tokens: int, counter: TokenCounter) -> str:
        """See :class:`Summarizer`."""
        sentences: list[tuple[int, str, str]] = []
        for role, content in messages:
            for match in _SENTENCE.finditer(content):
                text = " ".join(match.group().split())
                if text:
                    sentences.append((len(sentences), role, text))
        if not sentences or max_tokens <= 0:
            return ""
        frequency = Counter(w for _, _, text in sentences for w in _words(text))

        def score(item: tuple[int, str, str]) -> tuple[float, int]:
            words = _words(item[2])
            return (sum(frequency[w] for w in words) / len(words) if words else 0.0, -item[0])

        chosen: list[tuple[int, str, str]] = []
        used = counter.count("Summary:")
        for item in sorted(sentences, key=score, reverse=True):
            cost = counter.count(f"{item[1]}: {item[2]}")
            if used + cost <= max_tokens:
                chosen.append(item)
                used += cost
        if not chosen:
            first = sentences[0]
            return clip(f"Summary: {first[1]}: {first[2]}", max_tokens, counter)
        lines = [text if role == "summary" else f"{role}: {text}" for _, role, text in sorted(chosen)]
        return clip("Summary: " + " ".join(lines), max_tokens, counter)


class ChatSummarizer:
    """Summarises through an OpenAI-compatible ``/chat/completions`` API.

    Args:
        model: The model name sent in the request.
        base_url: The API root, e.g. ``https://api.openai.com/v1`` or a local server.
        api_key: Sent as a bearer token, if given.
        timeout: Seconds per request.
    """

    def __init__(self, model: str, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        if not base_url:
            raise ConfigError("a chat summarizer needs a base_url (an OpenAI-compatible API root)")
        self.name = f"openai:{model}"
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def summarize(self, messages: Sequence[tuple[str, str]], *, max_tokens: int, counter: TokenCounter) -> str:
        """See :class:`Summarizer`.

        Raises:
            EmbedderUnavailable: The API failed or answered something else than a chat completion.
        """
        transcript = "\n".join(f"{role}: {content}" for role, content in messages)
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "system",
                    "content": "Summarise this conversation for the assistant's working memory. Keep facts, "
                    f"decisions, names and numbers. At most {max_tokens} tokens.",
                },
                {"role": "user", "content": transcript},
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        try:
            answer = self._http.post(self.url, json=body)
            answer.raise_for_status()
            text = answer.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise EmbedderUnavailable(f"the chat summarizer at {self.url} failed: {exc}") from exc
        if not isinstance(text, str):
            raise EmbedderUnavailable(f"the chat summarizer at {self.url} answered no text")
        return clip("Summary: " + " ".join(text.split()), max_tokens, counter)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


def make_summarizer(spec: str | None, *, base_url: str | None = None, api_key: str | None = None) -> Summarizer:
    """A summarizer from a spec: ``extractive`` (default) or ``openai:<model>`` (needs ``base_url``).

    Raises:
        ConfigError: An unknown spec, or a chat summarizer without a URL.
    """
    if spec in (None, "", "extractive"):
        return ExtractiveSummarizer()
    if spec.startswith("openai:") and len(spec) > len("openai:"):
        return ChatSummarizer(spec[len("openai:") :], base_url or "", api_key)
    raise ConfigError(f"unknown summarizer {spec!r}: use extractive or openai:<model>")


def clip(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """``text`` cut at a word boundary so that it counts at most ``max_tokens`` tokens."""
    if counter.count(text) <= max_tokens:
        return text
    words = text.split()
    low, high = 0, len(words)
    while low < high:  # the longest prefix of words that fits
        middle = (low + high + 1) // 2
        if counter.count(" ".join(words[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]
