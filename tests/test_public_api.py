"""The public surface: ``__all__`` is complete and errors keep one shape."""

from __future__ import annotations

import inspect

import pytest

import hivemem
from hivemem import errors


def test_all_lists_every_public_name_and_only_real_ones() -> None:
    public = {
        name
        for name, value in vars(hivemem).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", "hivemem").startswith("hivemem")
        and name != "annotations"
    }
    assert public <= set(hivemem.__all__)
    assert all(hasattr(hivemem, name) for name in hivemem.__all__)


def test_every_error_class_is_exported_and_has_a_unique_code() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.HiveError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    assert {c.__name__ for c in classes} <= set(hivemem.__all__)
    assert set(errors.ERRORS_BY_CODE.values()) == set(classes)


@pytest.mark.parametrize("cls", list(errors.ERRORS_BY_CODE.values()))
def test_error_shape_round_trips_to_the_same_class(cls: type[errors.HiveError]) -> None:
    if cls is errors.InvalidInput:
        original: errors.HiveError = errors.InvalidInput("importance", "must be between 0 and 1", value=2)
    else:
        original = cls("something failed", id="m-1", current_version=3)
    shape = original.to_dict()
    assert set(shape) == {"code", "status", "message", "details"}
    rebuilt = errors.HiveError.from_dict(shape)
    assert type(rebuilt) is cls
    assert rebuilt.to_dict() == shape


def test_open_refuses_unknown_options_and_schemes(tmp_path: object) -> None:
    with pytest.raises(hivemem.ConfigError, match="unknown option"):
        hivemem.open(":memory:", embedder=None, no_such_option=1)
    with pytest.raises(hivemem.ConfigError, match="no backend"):
        hivemem.open("mysql://localhost/db", embedder=None)
    with pytest.raises(hivemem.ConfigError, match="unknown option 'colour'"):
        hivemem.open("http://127.0.0.1:1", colour="red")  # a server URL takes the client's options only


def test_the_http_client_answers_every_public_hive_method() -> None:
    from hivemem.client import RemoteHive
    from hivemem.hive import Hive

    inherited_on_purpose = {
        "export",
        "acquire_all",
        "subscribe",
        "inbox",
        "workflow",
        "step",
        "recover",
        "__enter__",
        "__exit__",
        "working",
        "load_resources",
    }  # built on routed ones (working memory: the resources live in the client's process)
    public = [n for n, v in vars(Hive).items() if callable(v) and (not n.startswith("_") or n in inherited_on_purpose)]
    for name in public:
        if name in inherited_on_purpose:
            continue
        assert vars(RemoteHive).get(name) is not None, f"RemoteHive does not answer {name}"
        remote, local = getattr(RemoteHive, name), getattr(Hive, name)
        assert inspect.signature(remote) == inspect.signature(local), name


def test_the_async_client_answers_every_routed_hive_method_as_a_coroutine() -> None:
    from hivemem.hive import Hive
    from hivemem.wire import ROUTES

    for route in ROUTES:
        remote, local = vars(hivemem.AsyncRemoteHive).get(route.name), getattr(Hive, route.name)
        assert remote is not None, f"AsyncRemoteHive does not answer {route.name}"
        assert inspect.iscoroutinefunction(remote), route.name
        assert inspect.signature(remote) == inspect.signature(local), route.name
        if route.name != "import_memories":  # its docstring says how it batches requests
            assert remote.__doc__ == local.__doc__, route.name
    for name in ("close", "__aenter__", "__aexit__"):
        assert inspect.iscoroutinefunction(getattr(hivemem.AsyncRemoteHive, name)), name
    public = {n for n in vars(hivemem.AsyncRemoteHive) if not n.startswith("_")}
    assert public == {route.name for route in ROUTES} | {"close"}
