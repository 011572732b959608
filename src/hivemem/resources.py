"""Memory resources: named, declarative settings for working-memory buffers.

A resource says how one kind of buffer behaves: where it lives (a key
template such as ``support:{user_id}``), how big it may grow (tokens or
messages), what it evicts first, when it flushes, how long it lives, how its
tokens are counted and what is redacted before anything is stored. Resources
come from a YAML file (or a mapping) loaded into a :class:`ResourceRegistry`::

    defaults:                 # every resource starts from these
      flush_threshold: 0.8
    resources:
      support:                # the resource id
        key_template: "support:{user_id}"
        type: token_based
        max_tokens: 4000
        strategy: fifo
    agents:                   # per-agent overrides of a resource's fields
      agent-a:
        support: {max_tokens: 2000}

Precedence, highest first: the caller's overrides to
:meth:`ResourceRegistry.resolve`, then the agent's section, then the
resource's own fields, then ``defaults:``, then the field defaults of
:class:`MemoryResource`. Loading checks everything (every resource and every
agent override) and reports every error at once, one line each, naming the
file, the resource and the field.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hivemem import validation
from hivemem.errors import ConfigError, InvalidInput, NotFound
from hivemem.redaction import Redactor
from hivemem.working import SETTING_CHECKS, STRATEGIES

__all__ = ["RESOURCE_TYPES", "STRATEGIES", "MemoryResource", "ResourceRegistry"]

#: ``token_based`` buffers are bounded by ``max_tokens``, ``message_count`` ones by ``max_messages``.
RESOURCE_TYPES: Final = ("token_based", "message_count")
_ID: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
# A value substituted into a key template: one namespace segment's characters, never "/".
_KEY_VALUE: Final = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


def _placeholders(template: str, field_name: str = "key_template") -> tuple[str, ...]:
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidInput(field_name, f"is not a valid template: {exc}", value=template) from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise InvalidInput(field_name, f"placeholder {{{name}}} must be a plain name such as {{user_id}}")
        if name not in names:
            names.append(name)
    return tuple(names)


def _key_template(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field_name, "must be a non-empty template such as 'support:{user_id}'")
    names = _placeholders(value, field_name)
    try:
        validation.namespace(value.format(**dict.fromkeys(names, "x")), field_name)
    except InvalidInput as exc:
        raise InvalidInput(field_name, f"does not make a valid namespace: {exc.message}", value=value) from None
    return value


def _resource_id(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(field_name, "must be 1-64 letters, digits and _ . - (starting with a letter or digit)")
    return value


# One check per field: it returns the normalised value or raises InvalidInput naming the field.
_CHECKS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "id": _resource_id,
    "key_template": _key_template,
    "type": lambda value, field_name: validation.one_of(value, field_name, RESOURCE_TYPES),
    **SETTING_CHECKS,  # a buffer's settings, checked as the buffer checks them
}


@dataclass(frozen=True)
class MemoryResource:
    """How one kind of working-memory buffer behaves.

    Attributes:
        id: The resource's name, e.g. ``"support"``.
        key_template: Where a buffer lives: a namespace with ``{name}``
            placeholders, e.g. ``"support:{user_id}"`` or ``"tasks/{agent}/{task}"``.
        type: ``"token_based"`` (bounded by ``max_tokens``; ``max_messages``
            may cap it too) or ``"message_count"`` (bounded by ``max_messages``).
        max_tokens: Most tokens the buffer holds, counted by ``counter``.
        max_messages: Most messages the buffer holds.
        strategy: What a full buffer evicts first: ``fifo``, ``lru``, ``lfu``
            or ``priority``.
        flush_threshold: Fill ratio (above 0, at most 1) at which the buffer flushes.
        archive: Whether evicted messages are archived to long-term memory.
        ttl: Seconds a buffer lives after its last write; None keeps it.
            Files may also write durations such as ``30m``, ``12h`` or ``7d``.
        counter: A :func:`hivemem.tokens.counter_for` name; None means ``minilm``.
        redact_patterns: The user's regular expressions to redact, on top of
            the built-in ones.
        builtin_redaction: Whether the built-in patterns (e-mails, phones,
            keys...) apply.
        never_persist_roles: Message roles (e.g. ``"system"``) never written
            to the store.

    Raises:
        InvalidInput: A field is invalid (``details["field"]`` names it), or
            the type's limit is missing.
    """

    id: str
    key_template: str
    type: str = "token_based"
    max_tokens: int | None = None
    max_messages: int | None = None
    strategy: str = "fifo"
    flush_threshold: float = 0.8
    archive: bool = False
    ttl: float | None = None
    counter: str | None = None
    redact_patterns: tuple[str, ...] = ()
    builtin_redaction: bool = True
    never_persist_roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(getattr(self, name), name))
        if self.type == "token_based" and self.max_tokens is None:
            raise InvalidInput("max_tokens", "is required for a token_based resource")
        if self.type == "message_count" and self.max_messages is None:
            raise InvalidInput("max_messages", "is required for a message_count resource")

    @property
    def variables(self) -> tuple[str, ...]:
        """The placeholder names of ``key_template``, in order."""
        return _placeholders(self.key_template)

    def key(self, **variables: str | int) -> str:
        """The buffer's namespace for these values, e.g. ``key(user_id="u-42") == "support:u-42"``.

        Values are strings or integers of 1-64 letters, digits and ``_ . : @ -``;
        no ``/``, so a value can never reach another namespace. Variables the
        template does not use are ignored.

        Raises:
            InvalidInput: A variable is missing (the field names it) or its
                value is not allowed.
        """
        values: dict[str, str] = {}
        for name in self.variables:
            if name not in variables:
                raise InvalidInput(name, f"missing: resource {self.id!r} builds its key from {self.key_template!r}")
            value = variables[name]
            if isinstance(value, bool) or not isinstance(value, str | int) or not _KEY_VALUE.match(str(value)):
                raise InvalidInput(name, "must be 1-64 letters, digits and _ . : @ - (no '/')", value=repr(value))
            values[name] = str(value)
        return validation.namespace(self.key_template.format(**values), "key")

    def redactor(self) -> Redactor:
        """The redactor for this resource's patterns and built-in setting."""
        return Redactor(self.redact_patterns, builtins=self.builtin_redaction)


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(MemoryResource) if f.name != "id")
_SECTIONS: Final = ("defaults", "resources", "agents")


class _Errors:
    """Collects one line per problem, each naming the file and where in it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{self.source}: {where}{message}")

    def fields(self, values: object, where: str) -> dict[str, Any]:
        """The valid fields of one section; a line for each bad or unknown one."""
        if not isinstance(values, Mapping):
            self.add(where, "must be a mapping of field: value")
            return {}
        valid: dict[str, Any] = {}
        for name, value in values.items():
            if name not in _FIELDS:
                self.add(where, f"{name}: unknown field (known: {', '.join(_FIELDS)})")
                continue
            try:
                valid[name] = _CHECKS[name](value, name)
            except InvalidInput as exc:
                self.add(where, exc.message)
        return valid

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("\n".join(self.lines), source=self.source, errors=self.lines)


def _mapping(value: object, errors: _Errors, where: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(where, "must be a mapping")
        return {}
    return value


class ResourceRegistry:
    """The resources of one file (or mapping), with per-agent overrides.

    Attributes:
        source: Where the resources came from (the path, or a name given to
            :meth:`from_mapping`); errors start with it.
    """

    def __init__(
        self, resources: Mapping[str, MemoryResource], agents: Mapping[str, Mapping[str, Any]], source: str
    ) -> None:
        """Use :meth:`load` or :meth:`from_mapping`; this takes already checked parts."""
        self.source = source
        self._resources = dict(resources)
        # agent -> resource id -> the agent's fields for it (checked)
        self._agents = {agent: dict(overrides) for agent, overrides in agents.items()}

    def __repr__(self) -> str:
        """Name the source and the resource ids."""
        return f"ResourceRegistry(source={self.source!r}, ids={self.ids()!r})"

    @classmethod
    def load(cls, path: str | Path) -> ResourceRegistry:
        """Read and check a YAML resources file.

        Raises:
            ConfigError: The file cannot be read or parsed, or holds invalid
                resources; the message has one line per error.
        """
        import yaml

        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read: {exc}", source=source) from None
        try:
            mapping = yaml.load(text, Loader=_strict_loader())  # a SafeLoader: builds no arbitrary objects
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f"line {mark.line + 1}, column {mark.column + 1}: "
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{source}: {where}not valid YAML: {problem}", source=source) from None
        return cls.from_mapping(mapping, source=source)

    @classmethod
    def from_mapping(cls, mapping: object, source: str = "<mapping>") -> ResourceRegistry:
        """Check a parsed resources document (``defaults``, ``resources``, ``agents``).

        Args:
            mapping: The document, as :func:`yaml.safe_load` returns it.
            source: A name for error messages.

        Raises:
            ConfigError: Anything is invalid; one line per error.
        """
        errors = _Errors(source)
        document = _mapping(mapping, errors, "")
        for section in document:
            if section not in _SECTIONS:
                errors.add("", f"{section}: unknown section (known: {', '.join(_SECTIONS)})")
        defaults = errors.fields(_mapping(document.get("defaults"), errors, "defaults: "), "defaults: ")
        declared: dict[str, dict[str, Any]] = {}
        resources: dict[str, MemoryResource] = {}
        for rid, values in _mapping(document.get("resources"), errors, "resources: ").items():
            where = f"resource {rid!r}: "
            try:
                _resource_id(rid, "id")
            except InvalidInput as exc:
                errors.add(where, exc.message)
                continue
            count = len(errors.lines)
            declared[rid] = errors.fields(values, where)
            if len(errors.lines) == count:
                resource = _build(errors, where, {**defaults, **declared[rid], "id": rid})
                if resource is not None:
                    resources[rid] = resource
        if not declared and not errors.lines:
            errors.add("", "no resources: add a 'resources:' section")
        agents: dict[str, dict[str, Any]] = {}
        for agent, sections in _mapping(document.get("agents"), errors, "agents: ").items():
            agents[str(agent)] = {}
            for rid, values in _mapping(sections, errors, f"agent {agent!r}: ").items():
                where = f"agent {agent!r}: resource {rid!r}: "
                if rid not in declared:
                    errors.add(where, "no such resource in 'resources:'")
                    continue
                count = len(errors.lines)
                overrides = errors.fields(values, where)
                if len(errors.lines) == count and rid in resources:
                    _build(errors, where, {**defaults, **declared[rid], **overrides, "id": rid})
                agents[str(agent)][rid] = overrides
        errors.raise_if_any()
        return cls(resources, agents, source)

    def ids(self) -> list[str]:
        """The resource ids, in file order."""
        return list(self._resources)

    def get(self, resource_id: str) -> MemoryResource:
        """A resource as declared (``defaults:`` applied, no agent overrides).

        Raises:
            NotFound: No resource has this id.
        """
        try:
            return self._resources[resource_id]
        except KeyError:
            raise NotFound(
                f"no resource {resource_id!r} in {self.source} (there are: {', '.join(self._resources)})",
                resource=resource_id,
            ) from None

    def resolve(self, resource_id: str, *, agent: str | None = None, **overrides: Any) -> MemoryResource:
        """The resource as one agent and one call see it.

        Args:
            resource_id: The resource.
            agent: An agent id; its section of ``agents:`` applies, if any.
            **overrides: Field values for this call only; they win over everything.

        Raises:
            NotFound: No resource has this id.
            InvalidInput: An override names an unknown field or is invalid.
        """
        resource = self.get(resource_id)
        for name in overrides:
            if name not in _FIELDS:
                raise InvalidInput(name, f"unknown resource field (known: {', '.join(_FIELDS)})")
        agent_fields = self._agents.get(agent, {}).get(resource_id, {}) if agent is not None else {}
        if not agent_fields and not overrides:
            return resource
        return dataclasses.replace(resource, **{**agent_fields, **overrides})


def _strict_loader() -> type[Any]:
    """A YAML safe loader that refuses a key written twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is written twice in one mapping", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _build(errors: _Errors, where: str, values: dict[str, Any]) -> MemoryResource | None:
    try:
        return MemoryResource(**values)
    except InvalidInput as exc:
        errors.add(where, exc.message)
        return None
