"""The HTTP API's typed description, read from the Hive's own signatures, and its OpenAPI document.

An :class:`Operation` is one route's Hive method worked out once: every
argument (name, type resolved with :func:`typing.get_type_hints`, default,
whether it is required, and its line of the docstring's Args section), the
options a ``**options: Unpack[...]`` parameter takes, where each travels
(path, query string or JSON body) and what the call returns. The server binds
requests with it and publishes it as OpenAPI request and response schemas.

The schemas describe; they do not judge. The Hive still checks every value
(a namespace's segments, a number's range), so a request the schema allows
may still get 422, and nothing the Hive accepts is refused by the schema.
Every failure is described as ``application/problem+json`` with the stable
codes of the :class:`~hivemem.errors.HiveError` classes that status carries.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hivemem.errors import (
    ERRORS_BY_CODE,
    EmbedderUnavailable,
    Forbidden,
    HiveError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
    Unauthenticated,
)
from hivemem.hive import Hive
from hivemem.models import Memory
from hivemem.records import RememberOptions
from hivemem.wire import Route

PROBLEM = "application/problem+json"
_REF = "#/components/schemas/"
#: What any call may meet: a bad argument, a body over the limit, missing grants, a failing store or model.
_ALWAYS: tuple[type[HiveError], ...] = (
    InvalidInput,
    PayloadTooLarge,
    Forbidden,
    StorageUnavailable,
    EmbedderUnavailable,
)
_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    datetime: {"type": "string", "format": "date-time"},
    timedelta: {"type": "number"},  # seconds
}
#: Lists whose Python item type says less than the wire carries: remember_many's items are
#: remember() calls; import_memories' memories are exported records, which need not be complete.
_ITEMS_OF = {"items": "RememberItem", "memories": "MemoryRecord"}
_SECTION = re.compile(r"^(\w+):\s*$")
_ENTRY = re.compile(r"^(?:\*\*)?(\w+)(?: \(.*?\))?:\s*(.*)$")
_BEARER = {"type": "http", "scheme": "bearer", "description": "An API key: Authorization: Bearer <key>"}
_API_KEY = {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key"}


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a routed Hive method.

    Attributes:
        name: The parameter's name, on the wire as in Python.
        type: Its annotation, resolved.
        required: Whether a call must give it.
        default: Its default (``inspect.Parameter.empty`` for none, or an unset marker).
        description: Its line of the docstring (Args, or RememberOptions for an option).
    """

    name: str
    type: Any
    required: bool
    default: Any
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    """A route's Hive method, read once: its arguments, result and documented failures.

    Attributes:
        route: The route.
        arguments: Every argument the method names, options included.
        takes_options: The method has ``**options``: the Hive, not the binding, refuses unknown names.
        returns: The method's return annotation.
        summary: The docstring's first line.
        description: The whole docstring.
        raises: The errors its docstring names (Raises section).
        returns_doc: The docstring's Returns section, if any.
    """

    route: Route
    arguments: tuple[Argument, ...]
    takes_options: bool
    returns: Any
    summary: str
    description: str
    raises: tuple[type[HiveError], ...]
    returns_doc: str

    @classmethod
    def of(cls, route: Route) -> Operation:
        """Read ``route``'s Hive method: its signature, type hints and docstring."""
        method: Callable[..., Any] = getattr(Hive, route.name)
        hints = typing.get_type_hints(method)
        doc = inspect.cleandoc(method.__doc__ or route.name)
        sections = docstring_sections(doc)
        documented = sections.get("Args", {})
        arguments: list[Argument] = []
        takes_options = False
        for p in inspect.signature(method).parameters.values():
            if p.name == "self":
                continue
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                takes_options = True
                arguments += _options(hints[p.name])
                continue
            required = p.default is inspect.Parameter.empty
            arguments.append(Argument(p.name, hints[p.name], required, p.default, documented.get(p.name, "")))
        named = {c.__name__: c for c in ERRORS_BY_CODE.values()}
        return cls(
            route=route,
            arguments=tuple(arguments),
            takes_options=takes_options,
            returns=hints.get("return"),
            summary=doc.splitlines()[0],
            description=doc,
            raises=tuple(named[n] for n in sections.get("Raises", {}) if n in named),
            returns_doc=" ".join(sections.get("Returns", {}).values()),
        )

    @property
    def required(self) -> tuple[str, ...]:
        """Names a call must give."""
        return tuple(a.name for a in self.arguments if a.required)

    @property
    def known(self) -> frozenset[str]:
        """Every name the method takes."""
        return frozenset(a.name for a in self.arguments)

    @property
    def flags(self) -> frozenset[str]:
        """Boolean arguments: ``true``/``false`` in a query string."""
        return frozenset(a.name for a in self.arguments if a.type is bool)

    def openapi(self) -> dict[str, Any]:
        """The operation's parameters, request body and responses (FastAPI's ``openapi_extra``)."""
        route = self.route
        parameters = [_parameter(a, "path") for a in self.arguments if a.name in route.path_params]
        rest = [a for a in self.arguments if a.name not in route.path_params]
        out: dict[str, Any] = {"parameters": parameters}
        if route.in_query:
            parameters += [_parameter(a, "query") for a in rest]
        else:
            schema = object_schema(rest)
            for name in _ITEMS_OF.keys() & schema["properties"].keys():
                schema["properties"][name]["items"] = {"$ref": f"{_REF}{_ITEMS_OF[name]}"}
            body = {"application/json": {"schema": schema}}
            out["requestBody"] = {"required": any(a.required for a in rest), "content": body}
        if route.once:
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Makes a retried write apply once: a repeat gets the first answer back.",
                }
            )
        success = {
            "description": self.returns_doc or "Success",
            "content": {"application/json": {"schema": json_schema(self.returns)}},
        }
        failures = (*_ALWAYS, *self.raises, *((NotFound,) if route.path_params else ()))
        out["responses"] = {str(route.status): success, **problem_responses(failures)}
        return out


def _options(unpacked: Any) -> list[Argument]:
    """The arguments in ``**options: Unpack[SomeOptions]``, described by RememberOptions' docstring."""
    (options,) = typing.get_args(unpacked)
    documented = docstring_sections(inspect.cleandoc(RememberOptions.__doc__ or "")).get("Attributes", {})
    hints = typing.get_type_hints(options)
    return [
        Argument(name, hint, name in options.__required_keys__, inspect.Parameter.empty, documented.get(name, ""))
        for name, hint in hints.items()
    ]


def _parameter(argument: Argument, where: str) -> dict[str, Any]:
    # Leaving a query parameter out is how a caller says None; the text "null" would be a value.
    schema = _without_null(json_schema(argument.type))
    _add_default(schema, argument.default)
    parameter = {"name": argument.name, "in": where, "required": where == "path" or argument.required}
    if argument.description:
        parameter["description"] = argument.description
    return {**parameter, "schema": schema}


def object_schema(arguments: Sequence[Argument]) -> dict[str, Any]:
    """A JSON object of ``arguments`` by name; no other names are taken."""
    properties: dict[str, Any] = {}
    for argument in arguments:
        schema = json_schema(argument.type)
        _add_default(schema, argument.default)
        if argument.description:
            schema["description"] = argument.description
        properties[argument.name] = schema
    required = [a.name for a in arguments if a.required]
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _add_default(schema: dict[str, Any], default: Any) -> None:
    if default is inspect.Parameter.empty:
        return
    if default is None or isinstance(default, bool | int | float | str):
        schema["default"] = default
    elif isinstance(default, tuple):
        schema["default"] = list(default)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" not in schema:
        return schema
    rest = [s for s in schema["anyOf"] if s != {"type": "null"}]
    return rest[0] if len(rest) == 1 else {"anyOf": rest}


def json_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of values of Python type ``tp`` as they travel in JSON.

    Records (dataclasses) are references to ``#/components/schemas/<Name>``
    (see :func:`record_schema`); datetimes are ISO 8601 text; a timedelta is seconds.
    """
    if tp is Any:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return {"$ref": f"{_REF}{tp.__name__}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        choices: list[dict[str, Any]] = []
        # A function (a conflict resolver) cannot travel: over HTTP only the other choices exist.
        for schema in map(json_schema, [a for a in args if typing.get_origin(a) is not Callable]):
            if schema not in choices:  # float | timedelta are both numbers on the wire
                choices.append(schema)
        return {"anyOf": choices}
    if origin in (Mapping, dict):
        values = json_schema(args[1]) if args else {}
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    if origin in (Iterable, Sequence, list, tuple):
        return {"type": "array", "items": json_schema(args[0]) if args else {}}
    raise TypeError(f"no JSON schema for {tp!r}")


def record_schema(record: type[Any], *, complete: bool = True) -> dict[str, Any]:
    """The JSON Schema of a record's ``to_dict()``: every field, or (``complete`` False) those without defaults."""
    hints = _record_hints(record)
    # A field marked local (a lease's Hive) stays in the process: to_dict() leaves it out.
    fields = [f for f in dataclasses.fields(record) if not f.metadata.get("local")]
    required = [
        f.name
        for f in fields
        if complete or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    ]
    documented = docstring_sections(inspect.cleandoc(record.__doc__ or "")).get("Attributes", {})
    properties = {f.name: json_schema(hints[f.name]) for f in fields}
    for name, text in documented.items():
        properties[name]["description"] = text
    summary = inspect.cleandoc(record.__doc__ or record.__name__).splitlines()[0]
    return {"type": "object", "description": summary, "properties": properties, "required": required}


def problem_responses(errors: Iterable[type[HiveError]]) -> dict[int | str, Any]:
    """The error responses of ``errors``, one per status, each naming the ``code`` values it carries."""
    by_status: dict[int, list[type[HiveError]]] = {}
    for error in errors:
        if error not in by_status.setdefault(error.status, []):
            by_status[error.status].append(error)
    out: dict[int | str, Any] = {}
    for status, classes in sorted(by_status.items()):
        codes = [c.code for c in classes]
        lines = [f"``{c.code}``: {inspect.cleandoc(c.__doc__ or c.__name__).splitlines()[0]}" for c in classes]
        schema = {
            "allOf": [
                {"$ref": f"{_REF}Problem"},
                {"properties": {"status": {"const": status}, "code": {"enum": codes}}},
            ]
        }
        out[str(status)] = {"description": " ".join(lines), "content": {PROBLEM: {"schema": schema}}}
    return out


def document(spec: dict[str, Any], operations: Sequence[Operation], *, auth: bool) -> dict[str, Any]:
    """Complete FastAPI's ``spec`` with the record and problem schemas, and the API key schemes if ``auth``."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    records: dict[str, type[Any]] = {}
    for op in operations:
        _records(op.returns, records)
        for argument in op.arguments:
            _records(argument.type, records)
    for name, record in sorted(records.items()):
        schemas[name] = record_schema(record)
    schemas["MemoryRecord"] = {
        **record_schema(Memory, complete=False),
        "description": "A memory as exported (Memory.to_dict()); keys it does not know are ignored",
    }
    remember = next(op for op in operations if op.route.name == "remember")
    schemas["RememberItem"] = object_schema(remember.arguments)
    schemas["Problem"] = _PROBLEM_SCHEMA
    if auth:
        spec["components"]["securitySchemes"] = {"bearer": _BEARER, "apiKey": _API_KEY}
        spec["security"] = [{"bearer": []}, {"apiKey": []}]
        unauthenticated = problem_responses([Unauthenticated])
        for path in spec["paths"].values():
            for operation in path.values():
                operation["responses"].update(unauthenticated)
    return spec


def _record_hints(record: type[Any]) -> dict[str, Any]:
    # A lease names its Hive only for type checkers (an import cycle otherwise).
    return typing.get_type_hints(record, localns={"Hive": Hive})


def _records(tp: Any, found: dict[str, type[Any]]) -> None:
    """Add to ``found`` every record ``tp`` holds, at any depth (a Hit holds a Memory)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp.__name__ not in found:
            found[tp.__name__] = tp
            hints = _record_hints(tp)
            for f in dataclasses.fields(tp):
                if not f.metadata.get("local"):
                    _records(hints[f.name], found)
        return
    for arg in typing.get_args(tp):
        _records(arg, found)


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "The one error shape (RFC 9457), with the stable code of a HiveError",
    "required": ["type", "title", "status", "detail", "code", "details"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "details": {"type": "object", "description": "Structured fields: the bad field, the id, the stored version..."},
    },
}


def docstring_sections(doc: str) -> dict[str, dict[str, str]]:
    """The Google-style sections of a docstring: ``{"Args": {name: text}, "Raises": {...}, ...}``.

    An entry is a ``name: text`` line one level in; deeper lines continue it.
    Prose such as a Returns section is kept under the name ``""``.
    """
    sections: dict[str, dict[str, str]] = {}
    entries: dict[str, str] | None = None
    last = ""
    for line in doc.splitlines():
        text = line.strip()
        if _SECTION.match(line):
            entries, last = sections.setdefault(text[:-1], {}), ""
        elif entries is not None and text:
            entry = _ENTRY.match(text)
            if line == text:
                entries = None  # back at the docstring's own level: the section ended
            elif entry and len(line) - len(text) <= 4:
                last = entry.group(1)
                entries[last] = entry.group(2)
            else:
                entries[last] = f"{entries.get(last, '')} {text}".strip()
    return sections
