"""The one cattrs converter that turns plain config data into Forge's attrs records.

Strict scalars (no ``bool("false")`` surprises), durations and memory sizes, a command as a
string or a list, unknown keys refused. Failures come back as ``(path, message)`` pairs.
"""

from __future__ import annotations

import difflib
import enum
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from ..spec import HookSpec, ProjectSpec, ResourcesSpec, TaskSpec, TriggerRule, WorkflowSpec

__all__ = [
    "Invalid",
    "Path",
    "converter",
    "errors_of",
    "fast_converter",
    "format_path",
    "kind",
    "parse_duration",
    "parse_size",
    "suggest",
    "unknown_field",
]

Path = tuple[str | int, ...]


class Invalid(ValueError):
    """A value of the wrong shape; the message says what was expected."""


def kind(value: object) -> str:
    """How a YAML user would name the type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) < 40 else "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def format_path(path: Path) -> str:
    """``("workflows", "etl", "tasks", 1, "timeout")`` -> ``workflows.etl.tasks[1].timeout``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def suggest(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for a close match, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_field(key: object, allowed: Sequence[str]) -> str:
    return f"unknown field {str(key)!r}{suggest(str(key), allowed)}"


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kmgt]?)(?:i?b)?")


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"500ms"``, ``"2d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            number = float(text)
        except ValueError:
            if _DURATION.fullmatch(text):
                return sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            if math.isfinite(number):
                return number
    raise Invalid(
        f"expected a duration like 30s, 5m, 1h30m, 500ms or a number of seconds, got {kind(value)}"
    )


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"512m"``, ``"1g"``, ``"100MiB"``, ``"1.5GB"`` (k/m/g/t are
    powers of 1024, as Docker reads them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip().lower().replace(" ", ""))
        if m:
            return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
    raise Invalid(f"expected a size like 512m, 1g, 100MiB or a number of bytes, got {kind(value)}")


def _optional(fn: Callable[[object], Any]) -> Callable[[Any, Any], Any]:
    return lambda v, _t: None if v is None else fn(v)


@functools.lru_cache(maxsize=256)
def _duration_text(text: str) -> float:
    """:func:`parse_duration` of a string, remembered: defaults repeat one value per task."""
    return parse_duration(text)


_DURATION_HOOK = _optional(lambda v: _duration_text(v) if type(v) is str else parse_duration(v))
_SIZE_HOOK = _optional(parse_size)

#: per record: field -> special hook; fields named here and omitted ones never come from files
_FIELD_HOOKS: dict[type, dict[str, Any]] = {
    TaskSpec: {f: _DURATION_HOOK for f in ("timeout", "grace", "retry_delay",
                                           "max_retry_delay", "sla")} | {"func": "omit"},
    WorkflowSpec: {"catchup": _DURATION_HOOK, "source": "omit"},
    HookSpec: {"timeout": _DURATION_HOOK},
    ResourcesSpec: {"memory": _SIZE_HOOK, "cpu_time": _DURATION_HOOK},
    ProjectSpec: {"source": "omit", "settings": "rename:forge"},
}
#: attrs field metadata a plugin's Config can use: ``metadata={"forge": "duration"}``
_METADATA_HOOKS = {"duration": _DURATION_HOOK, "size": _SIZE_HOOK}

#: per record: the keys a file may use (filled as hooks are generated), and field renames
ALLOWED: dict[type, list[str]] = {}
RENAMED: dict[type, dict[str, str]] = {}


def _str(value: object, _t: Any = str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise Invalid(f"expected a string, got {kind(value)}")


def _int(value: object, _t: Any = int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise Invalid(f"expected a whole number, got {kind(value)}")


def _float(value: object, _t: Any = float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise Invalid(f"expected a number, got {kind(value)}")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _bool(value: object, _t: Any = bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Invalid(f"expected true or false, got {kind(value)}")


def _choice(value: object, choices: Sequence[str]) -> str:
    if isinstance(value, str) and value in choices:
        return value
    hint = suggest(value, choices) if isinstance(value, str) else ""
    raise Invalid(f"expected one of {', '.join(choices)}, got {kind(value)}{hint}")


def _enum_hook(t: type[enum.Enum]) -> Callable[[Any, Any], Any]:
    values = [str(m.value) for m in t]

    def hook(value: object, _t: Any) -> Any:
        return value if isinstance(value, t) else t(_choice(value, values))

    return hook


def _literal_hook(t: Any) -> Callable[[Any, Any], Any]:
    choices = [str(a) for a in get_args(t)]
    return lambda value, _t: _choice(value, choices)


def _items(pairs: Iterator[tuple[str | int, Any]], fn: Callable[[Any], Any], t: Any) -> list[Any]:
    """Structure each item, attaching its index/key to failures the way cattrs does."""
    out: list[Any] = []
    errors: list[Exception] = []
    for index, item in pairs:
        try:
            out.append(fn(item))
        except Exception as exc:
            exc.__notes__ = [*getattr(exc, "__notes__", []),
                             IterableValidationNote(f"@ {index!r}", index, t)]
            errors.append(exc)
    if errors:
        raise IterableValidationError("invalid items", errors, t)
    return out


def _str_tuple(value: object, t: Any = tuple) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(_items(enumerate(value), _str, t))
    raise Invalid(f"expected a list of strings, got {kind(value)}")


def _command(value: object, t: Any) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return _str_tuple(value, t)
    raise Invalid(f"expected a command as a string or a list of arguments, got {kind(value)}")


def _is_tuple_of(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_hook(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    item = get_args(t)[0]
    if item is str:
        return _str_tuple

    def hook(value: object, _t: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise Invalid(f"expected a list, got {kind(value)}")
        return tuple(_items(enumerate(value), lambda v: conv.structure(v, item), t))

    return hook


def _is_mapping(t: Any) -> bool:
    return get_origin(t) in (Mapping, dict) or t in (Mapping, dict)


def _mapping_hook(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    args = get_args(t)
    value_type = args[1] if len(args) == 2 else Any

    def hook(value: object, _t: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise Invalid(f"expected a mapping, got {kind(value)}")
        if value_type is Any:
            return {_str(k): v for k, v in value.items()}
        values = _items(iter(value.items()), lambda v: conv.structure(v, value_type), t)
        return {_str(k): v for k, v in zip(value, values, strict=True)}

    return hook


def _record_hook(cl: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    overrides: dict[str, Any] = {}
    renames: dict[str, str] = {}
    special = _FIELD_HOOKS.get(cl, {})
    for a in attrs.fields(cl):
        how = special.get(a.name) or _METADATA_HOOKS.get(str(a.metadata.get("forge", "")))
        if how == "omit":
            overrides[a.name] = override(omit=True)
        elif isinstance(how, str) and how.startswith("rename:"):
            renames[a.name] = how.partition(":")[2]
            overrides[a.name] = override(rename=renames[a.name])
        elif how is not None:
            overrides[a.name] = override(struct_hook=how)
    ALLOWED[cl] = [renames.get(a.name, a.name) for a in attrs.fields(cl)
                   if special.get(a.name) != "omit" and a.init]
    RENAMED[cl] = renames
    fn: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cl, conv, _cattrs_forbid_extra_keys=True, **overrides)

    def hook(value: object, _t: Any) -> Any:
        if isinstance(value, cl):
            return value
        if not isinstance(value, Mapping):
            raise Invalid(f"expected a mapping of {cl.__name__} fields, got {kind(value)}")
        return fn(value, cl)

    return hook


def _make_converter(*, detailed: bool) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=detailed)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(bool, _bool)
    # singledispatch would send a str-based enum to the str hook: name them explicitly
    conv.register_structure_hook(enum.Enum, lambda v, t: _enum_hook(t)(v, t))
    conv.register_structure_hook(TriggerRule, _enum_hook(TriggerRule))
    conv.register_structure_hook(Union[str, tuple[str, ...], None], _command)  # noqa: UP007
    conv.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", None) is Literal, _literal_hook)
    conv.register_structure_hook_factory(_is_tuple_of, lambda t: _tuple_hook(t, conv))
    conv.register_structure_hook_factory(_is_mapping, lambda t: _mapping_hook(t, conv))
    conv.register_structure_hook_factory(attrs.has, lambda t: _record_hook(t, conv))
    return conv


#: The converter: strict hooks, unknown keys refused, every failure explained with its path.
converter = _make_converter(detailed=True)
#: The same converter without cattrs' detailed validation: tried first, since a valid file
#: (the common case) then structures about twice as fast; failures are redone by ``converter``.
fast_converter = _make_converter(detailed=False)


def errors_of(exc: BaseException, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Flatten a structuring failure into ``(path, message)`` pairs, one per problem."""
    if isinstance(exc, ClassValidationError):
        renames = RENAMED.get(exc.cl, {})
        with_notes, others = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _leaf_or_nested(sub, (*path, renames.get(note.name, note.name)))
        for sub in others:
            yield from errors_of(sub, path)
    elif isinstance(exc, IterableValidationError):
        items, others = exc.group_exceptions()
        for sub, inote in items:
            yield from errors_of(sub, (*path, inote.index))
        for sub in others:
            yield from errors_of(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        allowed = ALLOWED.get(exc.cl, [])
        for key in sorted(map(str, exc.extra_fields)):
            yield (*path, key), unknown_field(key, allowed)
    elif isinstance(exc, Invalid):
        yield path, str(exc)
    else:
        yield path, f"invalid value: {exc}"


def _leaf_or_nested(exc: BaseException, path: Path) -> Iterator[tuple[Path, str]]:
    notes = getattr(exc, "__notes__", [])
    if isinstance(exc, KeyError) and any(isinstance(n, AttributeValidationNote) for n in notes):
        yield path, f"required field {str(path[-1])!r} is missing"
    else:
        yield from errors_of(exc, path)
