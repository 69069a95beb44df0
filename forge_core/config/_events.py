"""YAML straight from libyaml's parse events into plain data, without a node tree.

What ``yaml.safe_load`` returns, for the documents Forge's users write (string keys, the
standard scalar types, anchors and aliases), about four times faster: most of a safe load's
time goes to building a node per scalar and resolving each one's tag. Anything else — a
duplicate key, a ``<<`` merge, a non-string key, an explicit or unknown tag, several
documents — raises :class:`Unusual` so the caller takes the node-building path, which
explains it with a line number. Either way, nesting beyond :data:`MAX_DEPTH` is an error.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "BaseLoader", "Unusual", "check_depth", "load_events", "positions"]

#: libyaml's safe loader when PyYAML was built with it, else the pure-Python one
BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"
#: scalar tags built by SafeConstructor whose values are immutable, so one value is shared
_SCALARS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "timestamp"))
_COLLECTIONS = frozenset((None, "!", _TAG + "seq", _TAG + "map"))
_NO_KEY: Any = object()
#: deeper documents are refused: libyaml's node composer recurses in C and crashes the
#: interpreter (no exception) around 100,000 levels; no config needs a tenth of this limit
MAX_DEPTH = 500


def _too_deep(event: Any) -> yaml.MarkedYAMLError:
    return yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                       event.start_mark)


def check_depth(text: str) -> None:
    """Raise a ``yaml.YAMLError`` when ``text`` nests deeper than :data:`MAX_DEPTH`; run it
    before composing ``text`` into nodes."""
    loader = BaseLoader(text)
    try:
        depth = 0
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(event)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


class Unusual(Exception):
    """The document needs the node-building path (it may still be valid YAML)."""


class _Scalars:
    """Tags and values of plain scalars, remembered: a big workflow repeats the same words
    thousands of times, and resolving a tag is a run of regular expressions."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._tags: dict[str, str] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def value(self, event: Any) -> Any:
        text: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:  # quoted or block text is always a string
                return text
            tag = self._tags.get(text)
            if tag is None:
                tag = self._tags[text] = self._loader.resolve(yaml.ScalarNode, text,
                                                              event.implicit)
        if tag == _STR:
            return text
        if tag not in _SCALARS:
            raise Unusual(f"tag {tag}")
        key = (tag, text)
        if key not in self._values:
            node = yaml.ScalarNode(tag, text, event.start_mark, event.end_mark, style=event.style)
            self._values[key] = self._loader.yaml_constructors[tag](self._loader, node)
        return self._values[key]


def load_events(text: str) -> Any:
    """The single document in ``text`` as plain data (``None`` when empty).

    Raises :class:`Unusual` for what this path leaves to the node-building one, and
    ``yaml.YAMLError`` for text that is not YAML.
    """
    loader = BaseLoader(text)
    try:
        return _build(loader)
    finally:
        loader.dispose()


def _build(loader: Any) -> Any:
    get = loader.get_event
    scalars = _Scalars(loader)
    stack: list[Any] = []  # open lists and mappings, innermost last
    keys: list[Any] = []  # per open mapping: the key waiting for its value
    anchors: dict[str, Any] = {}
    root: Any = None
    get()  # StreamStartEvent
    if isinstance(get(), yaml.StreamEndEvent):
        return None
    while True:
        event = get()
        cls = event.__class__
        if cls is yaml.ScalarEvent:
            value, opened = scalars.value(event), False
        elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
            if event.tag not in _COLLECTIONS:
                raise Unusual(f"tag {event.tag}")
            value, opened = ({} if cls is yaml.MappingStartEvent else []), True
        elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
            stack.pop()
            keys.pop()
            continue
        elif cls is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise Unusual("undefined alias")
            value, opened = anchors[event.anchor], False
        else:  # DocumentEndEvent: one document, then the end of the stream
            if not isinstance(get(), yaml.StreamEndEvent):
                raise Unusual("several documents")
            return root
        if cls is not yaml.AliasEvent and event.anchor is not None:
            if event.anchor in anchors:
                raise Unusual("duplicate anchor")
            anchors[event.anchor] = value
        if not stack:
            root = value
        elif stack[-1].__class__ is list:
            stack[-1].append(value)
        elif keys[-1] is _NO_KEY:
            if value.__class__ is not str or value in stack[-1]:
                raise Unusual("a duplicate or non-string key")
            keys[-1] = value
        else:
            stack[-1][keys[-1]] = value
            keys[-1] = _NO_KEY
        if opened:
            stack.append(value)
            keys.append(_NO_KEY)
            if len(stack) > MAX_DEPTH:
                raise _too_deep(event)


def positions(text: str) -> Any:
    """Where each part of ``text`` (parsed once already) was written, from its events alone:
    a mapping becomes ``{key: (line of the key, positions of the value)}``, a list
    ``[(first line of the item, positions of the item), …]``, a scalar ``None``."""
    loader = BaseLoader(text)
    try:
        return _positions(loader)
    finally:
        loader.dispose()


def _positions(loader: Any) -> Any:
    stack: list[Any] = []
    keys: list[Any] = []  # per open mapping: (key, line) waiting for its value, or _NO_KEY
    anchors: dict[str, Any] = {}
    root: Any = None
    while loader.check_event():
        event = loader.get_event()
        cls = event.__class__
        if cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
            stack.pop()
            keys.pop()
            continue
        opened = cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent
        if opened:
            value: Any = {} if cls is yaml.MappingStartEvent else []
        elif cls is yaml.AliasEvent:
            value = anchors.get(event.anchor)
        elif cls is yaml.ScalarEvent:
            value = None
        else:  # stream and document boundaries
            continue
        if cls is not yaml.AliasEvent and event.anchor is not None:
            anchors[event.anchor] = value
        line = event.start_mark.line + 1
        if not stack:
            root = value
        elif stack[-1].__class__ is list:
            stack[-1].append((line, value))
        elif keys[-1] is _NO_KEY:  # a key: only plain text keys can be looked up
            keys[-1] = (event.value if cls is yaml.ScalarEvent else None, line)
        else:
            key, key_line = keys[-1]
            if key is not None:
                stack[-1][key] = (key_line, value)
            keys[-1] = _NO_KEY
        if opened:
            stack.append(value)
            keys.append(_NO_KEY)
    return root
