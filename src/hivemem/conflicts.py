"""Versioned writes that meet a newer version: conflict strategies and their defaults by namespace.

``Hive.update(..., expected_version=n)`` says "I read version n". When the
stored version is newer, the update has met a conflict, and this module
decides what happens, inside the update's own write transaction (so no other
write can slip between the read of the stored version and the write):

* ``reject`` (the default): VersionConflict with the stored record; nothing is written.
* ``last_writer_wins``: the caller's changes are applied to the stored version.
* ``merge``: a three-way merge of the version the caller read (base), the
  caller's version (ours) and the stored one (theirs); see :func:`merged`.
* a function ``(base, ours, theirs) -> Memory or dict``: the caller's own merge.

The strategy comes from the call, else from the namespace's default (the
longest prefix that has one), else ``reject``. Named defaults live in the
store, so every process and server sees them; a function default lives in one
Hive object. A resolved conflict is written as the memory's next version and
recorded as a :class:`~hivemem.models.Conflict` in the same transaction.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from hivemem.clock import new_id, to_datetime, utc
from hivemem.config import HiveConfig
from hivemem.errors import InvalidInput, VersionConflict
from hivemem.models import Conflict, Memory
from hivemem.records import UPDATE_FIELDS, update_changes
from hivemem.storage.base import StoreTx

REJECT = "reject"
LAST_WRITER_WINS = "last_writer_wins"
MERGE = "merge"
#: The strategies that have a name (and so can be stored and sent over HTTP), the default first.
STRATEGIES = (REJECT, LAST_WRITER_WINS, MERGE)
#: The strategy a :class:`~hivemem.models.Conflict` record names when a function resolved it.
CUSTOM = "custom"
#: The setting that holds a namespace's default strategy.
SETTING = "conflict_strategy"

#: A caller's merge: ``(base, ours, theirs)`` to the resolved memory, or to a dict of the
#: fields that differ from ``theirs`` (any of content, data, tags, importance, tier).
ConflictResolver: TypeAlias = Callable[[Memory, Memory, Memory], "Memory | Mapping[str, Any]"]
Strategy: TypeAlias = "str | ConflictResolver"

_MISSING: Any = object()


def checked_strategy(value: object, field: str = "on_conflict") -> Strategy:
    """A strategy name or a function, as given.

    Raises:
        InvalidInput: Neither a known name nor callable.
    """
    if callable(value):
        return value
    if not isinstance(value, str) or value not in STRATEGIES:
        raise InvalidInput(
            field, f"must be one of {', '.join(STRATEGIES)}, or a function (base, ours, theirs)", value=repr(value)
        )
    return value


def strategy_name(strategy: Strategy) -> str:
    """How a strategy is named in records: its name, or ``custom`` for a function."""
    return strategy if isinstance(strategy, str) else CUSTOM


def prefixes_of(namespace: str) -> list[str]:
    """``namespace`` and every prefix of it, shortest first: ``a``, ``a/b``, ``a/b/c``."""
    segments = namespace.split("/")
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]


class ConflictPolicy:
    """Which strategy each namespace uses, and the resolution of one conflict in a transaction.

    One per Hive, shared by its :meth:`~hivemem.Hive.as_principal` views.
    Named defaults are read from the store in the transaction that needs
    them; function defaults are held here, for this process only.

    Args:
        config: Size limits, applied to what a merge or a function produces.
    """

    def __init__(self, config: HiveConfig) -> None:
        self.config = config
        self._functions: dict[str, ConflictResolver] = {}
        self._lock = threading.Lock()

    def set_function(self, prefix: str, function: ConflictResolver | None) -> None:
        """Make ``function`` this process's default under ``prefix`` (None removes it)."""
        with self._lock:
            if function is None:
                self._functions.pop(prefix, None)
            else:
                self._functions[prefix] = function

    def strategy_for(self, tx: StoreTx, namespace: str) -> Strategy:
        """The default of the longest prefix of ``namespace`` that has one; ``reject`` if none has.

        On a prefix with both a stored name and a function of this process, the function wins.
        """
        prefixes = prefixes_of(namespace)
        named = tx.settings(prefixes, SETTING)
        with self._lock:
            functions = {p: self._functions[p] for p in prefixes if p in self._functions}
        longest = max([*named, *functions], key=len, default=None)
        if longest is None:
            return REJECT
        return functions.get(longest) or checked_strategy(named[longest], SETTING)

    def resolve(
        self,
        tx: StoreTx,
        current: Memory,
        changes: Mapping[str, Any],
        expected_version: int,
        chosen: Strategy | None,
        now: float,
        principal: str,
    ) -> tuple[dict[str, Any], Conflict]:
        """What an update of version ``expected_version`` writes over ``current``, and its record.

        Args:
            tx: The update's write transaction.
            current: The version stored now (theirs); newer than ``expected_version``.
            changes: The update's checked changes.
            expected_version: The version the caller read (base).
            chosen: The call's strategy, or None for the namespace's default.
            now: The write's time.
            principal: Who writes.

        Returns:
            The changes to apply to ``current`` for the next version, and the conflict record.

        Raises:
            VersionConflict: The strategy is ``reject``, or the version the caller
                read is not in the memory's history (nothing to merge from).
            InvalidInput: A merge or a function produced a bad value.
            PayloadTooLarge: A merge or a function produced content or data over its limit.
        """
        strategy = chosen if chosen is not None else self.strategy_for(tx, current.namespace)
        base = None
        if strategy != REJECT and expected_version < current.version:
            base = tx.past_version(current, expected_version)
        if base is None:
            reason = "" if strategy == REJECT else f", and its history has no version {expected_version} to merge from"
            raise VersionConflict(
                f"memory {current.id} is at version {current.version}, not {expected_version}{reason}",
                id=current.id,
                current_version=current.version,
                expected_version=expected_version,
                current=current.to_dict(),
            )
        ours = dataclasses.replace(base, **changes, version=base.version + 1, updated_at=to_datetime(now))
        if strategy == LAST_WRITER_WINS:
            resolved = dict(changes)
        elif callable(strategy):
            resolved = update_changes(_call(strategy, base, ours, current), self.config, "on_conflict.")
        else:
            resolved = update_changes(merged(base, ours, current), self.config, "on_conflict.")
        record = Conflict(
            id=new_id(),
            memory_id=current.id,
            namespace=current.namespace,
            created_at=utc(now),
            principal=principal,
            strategy=strategy_name(strategy),
            base=base,
            ours=ours,
            theirs=current,
            result_version=current.version + 1,
        )
        return resolved, record


def _call(function: ConflictResolver, base: Memory, ours: Memory, theirs: Memory) -> dict[str, Any]:
    """A function's resolution as a dict of :data:`UPDATE_FIELDS`."""
    # Copies: the memories' data are plain dicts, and the records must keep what really met.
    produced = function(copy.deepcopy(base), copy.deepcopy(ours), copy.deepcopy(theirs))
    if isinstance(produced, Memory):
        return {name: getattr(produced, name) for name in UPDATE_FIELDS}
    if isinstance(produced, Mapping):
        return dict(produced)
    raise InvalidInput(
        "on_conflict", f"the function must return a Memory or a dict of fields, not {type(produced).__name__}"
    )


def merged(base: Memory, ours: Memory, theirs: Memory) -> dict[str, Any]:
    """The ``merge`` strategy: each field three-way, from the version both sides started at.

    A field only one side changed takes that side's value. A field both changed
    takes: for ``data``, a deep merge (the same rule key by key in objects;
    any other value, a list included, from ours); for ``tags``, every tag either
    side added and none that either side removed; for ``importance``, the
    higher; for ``content`` and ``tier``, ours (the newer write).

    Returns:
        The resolved content, data, tags, importance and tier.
    """
    return {
        "content": _three_way(base.content, ours.content, theirs.content, _ours),
        "data": _merged_json(base.data, ours.data, theirs.data),
        "tags": _three_way(base.tags, ours.tags, theirs.tags, _merged_tags),
        "importance": _three_way(base.importance, ours.importance, theirs.importance, lambda _, o, t: max(o, t)),
        "tier": _three_way(base.tier, ours.tier, theirs.tier, _ours),
    }


def _three_way(base: Any, ours: Any, theirs: Any, both_changed: Callable[[Any, Any, Any], Any]) -> Any:
    if _same(ours, base):
        return theirs
    if _same(theirs, base) or _same(ours, theirs):
        return ours
    return both_changed(base, ours, theirs)


def _ours(base: Any, ours: Any, theirs: Any) -> Any:
    return ours


def _merged_json(base: Any, ours: Any, theirs: Any) -> Any:
    """Three-way merge of JSON values; ``_MISSING`` stands for an absent key, in and out."""
    return _three_way(base, ours, theirs, _merged_objects)


def _merged_objects(base: Any, ours: Any, theirs: Any) -> Any:
    if not (isinstance(ours, Mapping) and isinstance(theirs, Mapping)):
        return ours
    # A key both sides added as objects merges from nothing, so disjoint additions inside it survive.
    common = base if isinstance(base, Mapping) else {}
    out: dict[str, Any] = {}
    for key in dict.fromkeys([*theirs, *ours]):
        value = _merged_json(common.get(key, _MISSING), ours.get(key, _MISSING), theirs.get(key, _MISSING))
        if value is not _MISSING:
            out[key] = value
    return out


def _merged_tags(base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]) -> tuple[str, ...]:
    removed = (set(base) - set(ours)) | (set(base) - set(theirs))
    return tuple(tag for tag in dict.fromkeys([*theirs, *ours]) if tag not in removed)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: unlike ``==``, ``true`` is not ``1``."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)
