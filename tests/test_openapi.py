"""The OpenAPI document: typed requests and answers read from the Hive's own signatures and docstrings."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from hivemem.hive import Hive
from hivemem.openapi import PROBLEM, Operation, docstring_sections
from hivemem.records import RememberOptions
from hivemem.server import create_app
from hivemem.wire import ROUTES, ROUTES_BY_NAME


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(auth=True).openapi()
    return document


def operation(spec: dict[str, Any], name: str) -> dict[str, Any]:
    route = ROUTES_BY_NAME[name]
    found: dict[str, Any] = spec["paths"][route.path][route.method.lower()]
    return found


def body(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = operation(spec, name)["requestBody"]["content"]["application/json"]["schema"]
    return schema


def parameters(spec: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation(spec, name)["parameters"]}


def test_a_body_names_every_argument_with_its_type_default_and_description(spec: dict[str, Any]) -> None:
    remember = body(spec, "remember")
    assert remember["required"] == ["namespace", "content"]
    assert remember["additionalProperties"] is False
    properties = remember["properties"]
    assert set(properties) == {"namespace", "content"} | RememberOptions.__optional_keys__
    assert properties["namespace"]["type"] == "string"
    assert properties["namespace"]["description"].startswith("Where to write")
    assert properties["importance"] == {"type": "number", "description": "0..1 (default 0.5)."}
    assert properties["tags"]["type"] == "array" and properties["tags"]["items"] == {"type": "string"}
    assert properties["occurred_at"]["anyOf"] == [{"type": "string", "format": "date-time"}, {"type": "null"}]
    assert properties["ttl"]["anyOf"] == [{"type": "number"}, {"type": "null"}]  # seconds, or a timedelta in Python
    recall = body(spec, "recall")["properties"]
    assert recall["k"] == {"type": "integer", "default": 10, "description": "How many hits, 1..1000."}
    assert recall["tags"]["default"] == []
    assert recall["where"]["anyOf"][0] == {"type": "object"}


def test_helpers_offer_only_the_options_they_do_not_set_themselves(spec: dict[str, Any]) -> None:
    episode = set(body(spec, "remember_episode")["properties"])
    entity = set(body(spec, "upsert_entity")["properties"])
    assert "key" in episode and not {"kind", "data"} & episode
    assert not {"kind", "data", "key"} & entity
    assert body(spec, "remember_episode")["required"] == ["namespace", "context", "action", "outcome", "success"]


def test_path_query_and_header_parameters(spec: dict[str, Any]) -> None:
    assert parameters(spec, "get")["memory_id"] == {
        "name": "memory_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    forget = parameters(spec, "forget")
    assert forget["memory_id"]["in"] == "path" and forget["memory_id"]["required"] is True
    assert forget["cascade"]["in"] == "query"
    assert forget["cascade"]["schema"] == {"type": "boolean", "default": False}
    keyed = parameters(spec, "get_by_key")
    assert keyed["namespace"]["required"] and keyed["key"]["required"]
    related = parameters(spec, "related")
    assert related["type"]["schema"] == {"type": "string"}  # leaving it out is how a query says None
    assert "Idempotency-Key" in parameters(spec, "remember")
    assert "Idempotency-Key" not in parameters(spec, "recall")
    update = body(spec, "update")
    assert "memory_id" not in update["properties"]  # the path names the target
    assert "required" not in update


def test_answers_are_typed_records_and_failures_problem_json(spec: dict[str, Any]) -> None:
    created = operation(spec, "remember")["responses"]
    assert created["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Memory"}
    listed = operation(spec, "list")["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/Page"}
    recalled = operation(spec, "recall")["responses"]["200"]["content"]["application/json"]["schema"]
    assert recalled == {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}
    update = operation(spec, "update")["responses"]
    assert {"401", "403", "404", "409", "413", "422", "503"} <= set(update)
    conflict = update["409"]["content"][PROBLEM]["schema"]["allOf"]
    assert conflict[1]["properties"]["code"] == {"enum": ["version_conflict", "stale_fencing_token"]}
    assert "409" not in operation(spec, "stats")["responses"]
    schemas = spec["components"]["schemas"]
    memory = schemas["Memory"]
    assert set(memory["required"]) == set(memory["properties"]) >= {"id", "version", "data", "created_at"}
    assert memory["properties"]["created_at"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert schemas["MemoryRecord"]["required"] == ["id", "namespace", "content"]
    assert schemas["Problem"]["required"] == ["type", "title", "status", "detail", "code", "details"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    export = spec["paths"]["/v1/export"]["get"]["responses"]
    assert "application/x-ndjson" in export["200"]["content"]
    assert PROBLEM in export["422"]["content"]


def test_every_route_is_documented_from_its_hive_method(spec: dict[str, Any]) -> None:
    for route in ROUTES:
        documented = operation(spec, route.name)
        method = getattr(Hive, route.name)
        assert documented["summary"] == inspect.cleandoc(method.__doc__).splitlines()[0]
        names = {p for p in inspect.signature(method).parameters if p not in ("self", "options")}
        given = set(parameters(spec, route.name)) - {"Idempotency-Key"}
        if "requestBody" in documented:
            given |= set(documented["requestBody"]["content"]["application/json"]["schema"]["properties"])
        assert names <= given, route.name


def test_without_auth_the_document_asks_for_no_key() -> None:
    document = create_app(auth=False).openapi()
    assert "securitySchemes" not in document["components"]
    assert "401" not in document["paths"]["/v1/memories"]["post"]["responses"]


def test_docstring_sections() -> None:
    doc = inspect.cleandoc(
        """Summary line.

        Args:
            name: First line
                and its continuation.
            **options: Forwarded.

        Returns:
            Prose about the result
            over two lines.

        Raises:
            NotFound: Missing.
        """
    )
    assert docstring_sections(doc) == {
        "Args": {"name": "First line and its continuation.", "options": "Forwarded."},
        "Returns": {"": "Prose about the result over two lines."},
        "Raises": {"NotFound": "Missing."},
    }


def test_an_operation_reads_its_hive_method_once() -> None:
    update = Operation.of(ROUTES_BY_NAME["update"])
    assert update.required == ("memory_id",)
    assert not update.takes_options
    assert {"content", "data", "expected_version"} <= update.known
    forget = Operation.of(ROUTES_BY_NAME["forget"])
    assert forget.flags == frozenset({"cascade"})
    assert Operation.of(ROUTES_BY_NAME["remember"]).takes_options


def test_plans_and_agents_answer_typed_records(spec: dict[str, Any]) -> None:
    def answer(name: str) -> Any:
        route = ROUTES_BY_NAME[name]
        return operation(spec, name)["responses"][str(route.status)]["content"]["application/json"]["schema"]

    assert answer("create_plan") == {"$ref": "#/components/schemas/Plan"}
    assert answer("transition_task") == {"$ref": "#/components/schemas/Task"}
    assert answer("select_agent") == {"type": "array", "items": {"$ref": "#/components/schemas/AgentScore"}}
    assert answer("context_for") == {"$ref": "#/components/schemas/ExperienceContext"}
    schemas = spec["components"]["schemas"]
    assert schemas["Plan"]["properties"]["levels"] == {
        "type": "array",
        "items": {"type": "array", "items": {"type": "string"}},
        "description": "Task ids in parallel levels: each level depends only on earlier ones.",
    }
    assert {"Task", "PlanProgress", "AgentProfile", "Outcome"} <= set(schemas)
    moved = operation(spec, "transition_task")["responses"]["409"]["content"][PROBLEM]["schema"]["allOf"]
    assert set(moved[1]["properties"]["code"]["enum"]) == {"version_conflict", "invalid_transition"}
    assert "Idempotency-Key" in parameters(spec, "assign_task")
    assert "Idempotency-Key" not in parameters(spec, "select_agent")
