"""Summarizers: the extractive default and the OpenAI-compatible chat one, against a fake API on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import hivemem
from hivemem import ConfigError, EmbedderUnavailable
from hivemem.summarize import ChatSummarizer, ExtractiveSummarizer, make_summarizer
from hivemem.tokens import counter_for


class _FakeChat(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with a fixed summary; remembers the requests."""

    requests: ClassVar[list[dict[str, Any]]] = []
    answer = "The user deploys after the migration. " * 40
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": self.answer}}]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def chat_api() -> Iterator[str]:
    _FakeChat.requests = []
    _FakeChat.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def test_extractive_keeps_the_central_sentences_in_order() -> None:
    counter = counter_for("estimate")
    messages = [
        ("user", "The deploy failed. The migration must run before the deploy."),
        ("assistant", "I like turtles."),
        ("user", "Run the migration, then deploy again."),
    ]
    central = [
        "user: The deploy failed.",
        "user: The migration must run before the deploy.",
        messages[2][0] + ": " + messages[2][1],
    ]
    budget = counter.count("Summary:") + sum(counter.count(s) for s in central)
    summary = ExtractiveSummarizer().summarize(messages, max_tokens=budget, counter=counter)
    assert summary.startswith("Summary:") and counter.count(summary) <= budget
    assert "turtles" not in summary
    assert summary == ExtractiveSummarizer().summarize(messages, max_tokens=budget, counter=counter)  # deterministic
    assert summary.index("must run") < summary.index("then deploy")  # original order kept


def test_chat_summarizer_posts_the_transcript_and_clips_the_answer(chat_api: str) -> None:
    counter = counter_for("estimate")
    summarizer = ChatSummarizer("tiny", chat_api, api_key="k-1")
    try:
        text = summarizer.summarize([("user", "deploy after the migration")], max_tokens=20, counter=counter)
    finally:
        summarizer.close()
    assert text.startswith("Summary: The user deploys") and counter.count(text) <= 20
    (request,) = _FakeChat.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k-1"
    assert request["body"]["model"] == "tiny" and request["body"]["max_tokens"] == 20
    assert "user: deploy after the migration" in request["body"]["messages"][-1]["content"]


def test_chat_summarizer_failures_are_hive_errors(chat_api: str) -> None:
    _FakeChat.status = 500
    summarizer = make_summarizer("openai:tiny", base_url=chat_api)
    with pytest.raises(EmbedderUnavailable):
        summarizer.summarize([("user", "x")], max_tokens=5, counter=counter_for("estimate"))
    with pytest.raises(ConfigError):
        make_summarizer("openai:tiny")
    with pytest.raises(ConfigError):
        make_summarizer("magic")


def test_a_hive_flushes_through_the_chat_api_after_the_append(chat_api: str, tmp_path: Path) -> None:
    with hivemem.open(str(tmp_path / "h.db"), embedder=None, summarizer="openai:tiny", summarizer_url=chat_api) as hive:
        w = hive.working("team/s", max_tokens=100, flush_threshold=0.5, counter="estimate")
        for i in range(12):
            assert w.append("user", f"step {i} of the deploy needs the migration first").tokens <= 100
        got = w.messages()
    assert _FakeChat.requests and got[0].role == "summary"
    assert got[0].content.startswith("Summary: The user deploys")
    assert sum(m.tokens for m in got) <= 100
