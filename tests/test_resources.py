"""Memory resources: loading, checking, precedence and keys."""

from __future__ import annotations

import importlib.resources
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivemem.errors import ConfigError, InvalidInput, NotFound
from hivemem.resources import MemoryResource, ResourceRegistry


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resources.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


SUPPORT = {"key_template": "support:{user_id}", "max_tokens": 4000}


def errors_of(mapping: object) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        ResourceRegistry.from_mapping(mapping, source="resources.yaml")
    lines: list[str] = raised.value.details["errors"]
    assert raised.value.message == "\n".join(lines)
    return lines


def test_the_shipped_example_loads() -> None:
    path = importlib.resources.files("hivemem.data").joinpath("resources.yaml")
    registry = ResourceRegistry.load(str(path))
    assert registry.ids() == ["support", "scratchpad", "team-channel"]
    support = registry.get("support")
    assert (support.type, support.max_tokens, support.strategy, support.ttl) == ("token_based", 4000, "fifo", 7 * 86400)
    assert support.counter == "minilm"  # from defaults
    assert support.key(user_id="u-42") == "support/u-42"
    assert registry.resolve("support", agent="triage-bot").max_tokens == 2000
    redacted = support.redactor().redact("card 4111 1111 1111 1111, ACCT-12345678, mail ana@example.org")
    assert redacted == "card [REDACTED:custom], [REDACTED:custom], mail [REDACTED:email]"
    assert registry.get("team-channel").max_messages == 50


def test_precedence_call_over_agent_over_resource_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults: {flush_threshold: 0.5, strategy: lru, ttl: 30m}
        resources:
          support: {key_template: "support:{user_id}", max_tokens: 4000, strategy: fifo}
        agents:
          agent-a:
            support: {max_tokens: 2000, archive: true}
        """,
    )
    registry = ResourceRegistry.load(path)
    base = registry.get("support")
    assert (base.max_tokens, base.strategy, base.flush_threshold, base.ttl, base.archive) == (
        4000,
        "fifo",
        0.5,
        1800,
        False,
    )
    agent = registry.resolve("support", agent="agent-a")
    assert (agent.max_tokens, agent.archive, agent.strategy) == (2000, True, "fifo")
    call = registry.resolve("support", agent="agent-a", max_tokens=500)
    assert (call.max_tokens, call.archive) == (500, True)
    assert registry.resolve("support", agent="someone-else") == base
    assert registry.resolve("support") is base


def test_every_error_is_reported_with_file_resource_and_field() -> None:
    lines = errors_of(
        {
            "resources": {
                "support": {"key_template": "support:{user_id}", "max_tokens": -5, "strategy": "random"},
                "chat": {"key_template": "chat:{id}", "type": "message_count"},
                "scratch": {"key_template": "x", "max_token": 10},
            },
            "agents": {"agent-a": {"support": {"flush_threshold": 1.5}, "nope": {}}},
            "extra": 1,
        }
    )
    assert lines == [
        "resources.yaml: extra: unknown section (known: defaults, resources, agents)",
        "resources.yaml: resource 'support': max_tokens: must be a whole number from 1 to 10000000, or null",
        "resources.yaml: resource 'support': strategy: must be one of fifo, lru, lfu, priority",
        "resources.yaml: resource 'chat': max_messages: is required for a message_count resource",
        "resources.yaml: resource 'scratch': max_token: unknown field (known: key_template, type, max_tokens,"
        " max_messages, strategy, flush_threshold, archive, ttl, counter, redact_patterns, builtin_redaction,"
        " never_persist_roles)",
        "resources.yaml: agent 'agent-a': resource 'support': flush_threshold: must be a number above 0 and at most 1",
        "resources.yaml: agent 'agent-a': resource 'nope': no such resource in 'resources:'",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_tokens": None}, "max_tokens: is required for a token_based resource"),
        ({"max_tokens": True}, "max_tokens: must be a whole number from 1 to 10000000, or null"),
        ({"type": "tokens"}, "type: must be one of token_based, message_count"),
        ({"flush_threshold": 0}, "flush_threshold: must be a number above 0 and at most 1"),
        ({"archive": "yes"}, "archive: must be true or false"),
        ({"ttl": "soon"}, "ttl: must be a positive number of seconds or a duration"),
        ({"ttl": -1}, "ttl: must be a positive number"),
        ({"counter": "gpt"}, "counter: unknown token counter 'gpt'"),
        ({"counter": "tiktoken:p99k"}, "counter: unknown tiktoken encoding 'p99k'"),
        ({"redact_patterns": ["ok", "(bad"]}, "redact_patterns[1]: not a valid regular expression"),
        ({"redact_patterns": "ACCT-\\d+"}, "redact_patterns: must be a list of strings"),
        ({"never_persist_roles": [""]}, "never_persist_roles: each role must be non-empty"),
        # What a buffer would refuse is refused when the file loads, not when a buffer is first used.
        ({"max_tokens": 10_000_001}, "max_tokens: must be a whole number from 1 to 10000000"),
        ({"never_persist_roles": [f"r{i}" for i in range(101)]}, "never_persist_roles: must hold at most 100"),
        ({"key_template": "support {user}"}, "key_template: does not make a valid namespace"),
        ({"key_template": "s:{user.name}"}, "key_template: placeholder {user.name} must be a plain name"),
        ({"key_template": "s:{}"}, "key_template: placeholder {} must be a plain name"),
        ({"key_template": "s:{user"}, "key_template: is not a valid template"),
    ],
)
def test_each_field_is_checked(fields: dict[str, Any], message: str) -> None:
    lines = errors_of({"resources": {"support": {**SUPPORT, **fields}}})
    assert len(lines) == 1
    assert lines[0].startswith(f"resources.yaml: resource 'support': {message}")


def test_defaults_errors_are_reported_once_under_defaults() -> None:
    lines = errors_of({"defaults": {"strategy": "random", "colour": 1}, "resources": {"a": SUPPORT, "b": SUPPORT}})
    assert lines[0] == "resources.yaml: defaults: strategy: must be one of fifo, lru, lfu, priority"
    assert lines[1].startswith("resources.yaml: defaults: colour: unknown field")
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "resources.yaml: must be a mapping"),
        ({}, "resources.yaml: no resources: add a 'resources:' section"),
        ({"resources": {"bad id!": SUPPORT}}, "resources.yaml: resource 'bad id!': id: must be 1-64 letters"),
        ({"resources": {"a": "not a mapping"}}, "resources.yaml: resource 'a': must be a mapping of field: value"),
        ({"resources": {"a": {**SUPPORT, "id": "b"}}}, "resources.yaml: resource 'a': id: unknown field"),
    ],
)
def test_document_shape_errors(document: object, message: str) -> None:
    assert errors_of(document)[0].startswith(message)


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "resources:\n  support: [unclosed\n")
    with pytest.raises(ConfigError, match=r"resources.yaml: line \d+, column \d+: not valid YAML"):
        ResourceRegistry.load(path)
    path = write(tmp_path, "resources:\n  a: {key_template: x, max_tokens: 5}\n  a: {key_template: y, max_tokens: 6}\n")
    with pytest.raises(ConfigError, match=r"line 3, column 3: not valid YAML: 'a' is written twice"):
        ResourceRegistry.load(path)
    path = write(tmp_path, "resources:\n  a: !!python/object:os.system {}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ResourceRegistry.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        ResourceRegistry.load(tmp_path / "missing.yaml")


def test_unknown_resource_and_bad_overrides() -> None:
    registry = ResourceRegistry.from_mapping({"resources": {"support": SUPPORT}})
    with pytest.raises(NotFound, match="no resource 'chat' in <mapping>"):
        registry.resolve("chat")
    with pytest.raises(InvalidInput, match="colour: unknown resource field") as raised:
        registry.resolve("support", colour="red")
    assert raised.value.field == "colour"
    with pytest.raises(InvalidInput) as raised:
        registry.resolve("support", max_tokens=0)
    assert raised.value.field == "max_tokens"


def test_key_fills_the_template_and_refuses_unsafe_values() -> None:
    resource = MemoryResource(id="scratch", key_template="tasks/{agent}/{task}", max_tokens=100)
    assert resource.variables == ("agent", "task")
    assert resource.key(agent="agent-a", task=7, unused="x") == "tasks/agent-a/7"
    with pytest.raises(InvalidInput, match="task: missing") as raised:
        resource.key(agent="agent-a")
    assert raised.value.field == "task"
    for bad in ("../other", "a/b", "", "has space", "x" * 65, True, 1.5, None):
        with pytest.raises(InvalidInput) as raised:
            resource.key(agent="agent-a", task=bad)  # type: ignore[arg-type]
        assert raised.value.field == "task"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=64))
def test_a_key_never_escapes_its_prefix(value: str) -> None:
    resource = MemoryResource(id="support", key_template="support/{user_id}/chat", max_tokens=100)
    try:
        key = resource.key(user_id=value)
    except InvalidInput:
        return
    assert key == f"support/{value}/chat"
    assert key.count("/") == 2


def test_resources_are_frozen_and_normalised() -> None:
    resource = MemoryResource(
        id="chat",
        key_template="chat",
        type="message_count",
        max_messages=10,
        ttl="12h",  # type: ignore[arg-type]
        redact_patterns=["ACCT-\\d+"],  # type: ignore[arg-type]
        never_persist_roles=["system"],  # type: ignore[arg-type]
    )
    assert (resource.ttl, resource.redact_patterns, resource.never_persist_roles) == (
        43200.0,
        ("ACCT-\\d+",),
        ("system",),
    )
    assert resource.key() == "chat"
    with pytest.raises(AttributeError):
        resource.max_messages = 5  # type: ignore[misc]
    assert resource.redactor().redact("ACCT-99 ana@example.org") == "[REDACTED:custom] [REDACTED:email]"
    no_builtins = MemoryResource(id="x", key_template="x", max_tokens=1, builtin_redaction=False)
    assert no_builtins.redactor().redact("ana@example.org") == "ana@example.org"


# --- hivemem resources check ---


def test_cli_check_lists_resources_as_json() -> None:
    from click.testing import CliRunner

    from hivemem.cli import main

    example = str(importlib.resources.files("hivemem.data").joinpath("resources.yaml"))
    result = CliRunner().invoke(main, ["resources", "check", example, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["id"], r["type"], r["max_tokens"], r["max_messages"], r["strategy"]) for r in rows] == [
        ("support", "token_based", 4000, None, "fifo"),
        ("scratchpad", "token_based", 8000, 200, "priority"),
        ("team-channel", "message_count", None, 50, "lru"),
    ]
    table = CliRunner().invoke(main, ["resources", "check", example], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert "8000 tokens, 200 messages" in table.stdout


def test_cli_check_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hivemem.cli import main

    path = write(tmp_path, "resources:\n  a: {key_template: x, max_tokens: 0, strategy: z}\n")
    result = CliRunner().invoke(main, ["resources", "check", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: resource 'a': max_tokens: must be a whole number from 1 to 10000000, or null",
        f"error: {path}: resource 'a': strategy: must be one of fifo, lru, lfu, priority",
    ]
    as_json = CliRunner().invoke(main, ["--json", "resources", "check", str(tmp_path / "missing.yaml")])
    assert as_json.exit_code == 2
    assert json.loads(as_json.stderr)["error"]["code"] == "config_error"
