"""Finds, validates and builds plugins: the only module that imports stevedore.

A plugin is a class registered under one of the ``forge.*`` entry-point groups. Loading
checks it subclasses the group's interface, rejects a name two distributions claim,
structures its options into the class's own attrs ``Config`` (when it has one), checks
``available()`` and instantiates it. Everything else in Forge receives instances.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import attrs

from .exceptions import PluginError

__all__ = [
    "GROUPS",
    "PluginInfo",
    "create",
    "distribution_for",
    "list_plugins",
    "load_class",
    "register",
]

T = TypeVar("T")

#: short group name -> (entry-point namespace, interface "module:Class" or None for the CLI's
#: groups: ``cli`` holds Typer sub-apps, ``cli_fast`` callables ``main(argv) -> int | None``
#: that ``forge NOUN`` tries before the Typer app is imported; see forge_core.cli._fast)
GROUPS: dict[str, tuple[str, str | None]] = {
    "runtime": ("forge.runtime", "forge_core.abc:Runtime"),
    "image_store": ("forge.image_store", "forge_core.abc:ImageStore"),
    "router": ("forge.router", "forge_core.abc:Router"),
    "queue": ("forge.queue", "forge_core.abc:Queue"),
    "executor": ("forge.executor", "forge_core.abc:Executor"),
    "scheduler": ("forge.scheduler", "forge_core.abc:Scheduler"),
    "cli": ("forge.cli", None),
    "cli_fast": ("forge.cli_fast", None),
}

#: where the plugins Forge's authors ship live, for "install it with" messages
_KNOWN: dict[tuple[str, str], str] = {
    ("runtime", "linux"): "forge-runtime-linux",
    ("image_store", "snapshot"): "forge-runtime-linux",
    ("runtime", "windows"): "forge-runtime-windows",
    ("router", "caddy"): "forge-router-caddy",
    ("queue", "redis"): "forge-queue-redis",
    ("executor", "grpc"): "forge-worker-grpc",
    ("cli", "worker"): "forge-worker-grpc",
    ("cli", "container"): "forge-runtime-linux",
    ("cli", "image"): "forge-runtime-linux",
    ("cli_fast", "container"): "forge-runtime-linux",
}

# test registrations: (group, name) -> object, consulted before entry points
_registered: dict[tuple[str, str], Any] = {}

# what load_class found, per (group, name, sys.path): a run, a daemon, a benchmark load the
# same few plugins again and again, and each look costs two scans of every installed
# distribution (10-30 ms); installs during a process show up under a changed sys.path
_loaded: dict[tuple[str, str, tuple[str, ...]], Any] = {}


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One entry point as ``forge plugins list`` shows it."""

    group: str
    name: str
    distribution: str
    version: str
    usable: bool
    reason: str = ""
    error: str = ""


def distribution_for(group: str, name: str) -> str | None:
    """The distribution Forge's authors ship ``name`` in, if any."""
    return _KNOWN.get((group, name))


def _namespace(group: str) -> str:
    try:
        return GROUPS[group][0]
    except KeyError:
        raise PluginError(f"unknown plugin group {group!r}; groups: {', '.join(GROUPS)}") from None


def _interface(group: str) -> type | None:
    target = GROUPS[group][1]
    if target is None:
        return None
    module, _, attr = target.partition(":")
    return cast(type, getattr(importlib.import_module(module), attr))


def _entry_points(group: str) -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=_namespace(group)))


def _dist_of(ep: Any) -> tuple[str, str]:
    """(distribution, version) of an entry point; stevedore's cached ones carry no dist."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        from importlib.metadata import entry_points

        match = next((e for e in entry_points(group=ep.group)
                      if e.name == ep.name and e.value == ep.value), None)
        dist = getattr(match, "dist", None)
    if dist is None:
        return ("an unknown distribution", "?")
    return (dist.metadata["Name"], dist.version)


def _check(group: str, name: str, obj: Any, dist: str) -> Any:
    if group == "cli_fast" and not callable(obj):
        raise PluginError(f"plugin {name!r} in {_namespace(group)} from {dist} is not callable",
                          group=group, name=name)
    iface = _interface(group)
    if iface is not None and not (isinstance(obj, type) and issubclass(obj, iface)):
        raise PluginError(
            f"plugin {name!r} in {_namespace(group)} from {dist} is not a {iface.__name__}",
            group=group,
            name=name,
        )
    return obj


def load_class(group: str, name: str) -> Any:
    """The class (or, for ``cli``, the Typer app) registered as ``name`` in ``group``.

    Raises :class:`PluginError` naming the distribution to install when it is missing, both
    distributions when two claim the name, and the import error when it is broken. What
    loaded is remembered for the process (per ``sys.path``); a failure is looked up again.
    """
    namespace = _namespace(group)
    if (group, name) in _registered:
        return _check(group, name, _registered[(group, name)], "a test registration")
    key = (group, name, tuple(sys.path))
    found = _loaded.get(key)
    if found is None:
        found = _loaded[key] = _load_class(group, namespace, name)
    return found


def _load_class(group: str, namespace: str, name: str) -> Any:
    import stevedore

    failures: list[str] = []

    def on_failure(_mgr: object, ep: Any, exc: BaseException) -> None:
        failures.append(f"{_dist_of(ep)[0]}: {type(exc).__name__}: {exc}")

    # stevedore keeps one of several same-named entry points; a clash must be an error
    claimants = [ep for ep in _entry_points(group) if ep.name == name]
    mgr: Any = stevedore.NamedExtensionManager(
        namespace, names=[name], on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=lambda _missing: None,  # we say it better below
    )
    exts = list(mgr)
    if failures:
        raise PluginError(
            f"{namespace} plugin {name!r} failed to load: {failures[0]}", group=group, name=name
        )
    if len(claimants) > 1:
        dists = ", ".join(sorted(_dist_of(ep)[0] for ep in claimants))
        raise PluginError(
            f"{namespace} plugin {name!r} is provided by more than one distribution: {dists}",
            group=group,
            name=name,
        )
    if not exts:
        hint = distribution_for(group, name)
        known = sorted({ep.name for ep in _entry_points(group)})
        msg = f"no {namespace} plugin named {name!r}"
        if hint:
            msg += f"; install it with: pip install {hint}"
        elif known:
            msg += f"; installed: {', '.join(known)}"
        raise PluginError(msg, group=group, name=name)
    return _check(group, name, exts[0].plugin, _dist_of(exts[0].entry_point)[0])


def create(group: str, name: str, options: Mapping[str, Any] | None = None, **services: Any) -> Any:
    """Load, check availability, structure ``options`` into ``cls.Config``, instantiate.

    ``services`` (a runtime, a queue, a state directory…) go to the constructor as keywords.
    """
    cls = load_class(group, name)
    avail = cls.available()
    if not avail.ok:
        raise PluginError(f"{_namespace(group)} plugin {name!r} is not usable here: {avail.reason}",
                          group=group, name=name)
    config_cls = getattr(cls, "Config", None)
    if config_cls is not None and attrs.has(config_cls):
        from .config import structure_options

        services["config"] = structure_options(config_cls, dict(options or {}), f"{group}.{name}")
    elif options:
        raise PluginError(f"{_namespace(group)} plugin {name!r} takes no options", group=group, name=name)
    return cls(**services)


def list_plugins() -> list[PluginInfo]:
    """Every entry point of every group, with whether it loads and is usable here."""
    infos: list[PluginInfo] = []
    for group in GROUPS:
        seen: dict[str, int] = {}
        for ep in _entry_points(group):
            seen[ep.name] = seen.get(ep.name, 0) + 1
        for ep in _entry_points(group):
            dist, version = _dist_of(ep)
            infos.append(_inspect(group, ep, dist, version, duplicate=seen[ep.name] > 1))
    return sorted(infos, key=lambda i: (list(GROUPS).index(i.group), i.name, i.distribution))


def _inspect(group: str, ep: Any, dist: str, version: str, *, duplicate: bool) -> PluginInfo:
    base = {"group": group, "name": ep.name, "distribution": dist, "version": version}
    try:
        obj = _check(group, ep.name, ep.load(), dist)
    except Exception as exc:  # a broken plugin is reported, never fatal
        return PluginInfo(**base, usable=False, reason="failed to load",
                          error=f"{type(exc).__name__}: {exc}")
    if duplicate:
        return PluginInfo(**base, usable=False, reason="name claimed by more than one distribution")
    if GROUPS[group][1] is None:  # CLI entries have no available(): loading is the test
        return PluginInfo(**base, usable=True)
    try:
        avail = obj.available()
    except Exception as exc:
        return PluginInfo(**base, usable=False, reason=f"available() failed: {exc}")
    return PluginInfo(**base, usable=avail.ok, reason=avail.reason)


@contextmanager
def register(group: str, name: str, obj: Any) -> Iterator[None]:
    """Make ``obj`` loadable as ``name`` in ``group`` without installing it (tests)."""
    _namespace(group)
    key = (group, name)
    old = _registered.get(key)
    _registered[key] = obj
    try:
        yield
    finally:
        if old is None:
            _registered.pop(key, None)
        else:
            _registered[key] = old

