"""Reading a config file into plain data plus a way to find the line of any field in it.

YAML is loaded with safe-load semantics straight from libyaml's events (no node tree); the
tree that gives line numbers is built from the kept text only when a problem must be
reported. TOML has no line numbers.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import yaml

from ..exceptions import ConfigError, ConfigProblem
from ._convert import Path
from ._events import BaseLoader, Unusual, check_depth, load_events

__all__ = ["Document", "Lines", "read_document"]


class _Loader(BaseLoader):  # type: ignore[misc]
    """The safe loader, remembering each plain scalar's resolved tag (a big workflow repeats
    the same words thousands of times): builds the node tree that gives line numbers."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._tags: dict[tuple[str, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)
        return tag


class Lines:
    """Line numbers of a YAML text, from a node tree built only when a line is asked for (an
    error is being reported): loading a valid file never pays for node positions."""

    def __init__(self, text: str | None = None, root: yaml.Node | None = None) -> None:
        self._text = text
        self._root = root
        self._keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    @property
    def root(self) -> yaml.Node | None:
        """The document's node tree (``None`` for TOML or an empty document)."""
        if self._text is not None:
            text, self._text = self._text, None
            loader = _Loader(text)
            try:
                self._root = loader.get_single_node()
            except yaml.YAMLError:  # cannot happen: the same text was parsed once already
                self._root = None
            finally:
                loader.dispose()
        return self._root

    def node(self, path: Path) -> yaml.Node | None:
        """The node at ``path``, or ``None`` when the path is not in the file."""
        node = self.root
        for part in path:
            node = self._child(node, part)[1] if node is not None else None
        return node

    def line(self, path: Path) -> int | None:
        """1-based line of the deepest part of ``path`` found in the file (a mapping key's
        line for a field, an item's first line for a list entry)."""
        node, line = self.root, None
        for part in path:
            key, child = self._child(node, part)
            if key is None or child is None:
                break
            line, node = key.start_mark.line + 1, child
        return line

    def _child(self, node: yaml.Node | None, part: str | int) -> tuple[Any, Any]:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                return node.value[part], node.value[part]
        elif isinstance(node, yaml.MappingNode):
            keys = self._keys.get(id(node))
            if keys is None:
                keys = self._keys[id(node)] = {
                    str(k.value): (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)
                }
            return keys.get(str(part), (None, None))
        return None, None


class Document:
    """Parsed data, the keys given twice, and the :class:`Lines` of the text it came from."""

    def __init__(self, data: Any, lines: Lines | None = None) -> None:
        self.data = data
        self.lines = lines or Lines()
        self.duplicates: list[tuple[Path, int, int]] = []

    def node(self, path: Path) -> yaml.Node | None:
        return self.lines.node(path)

    def line(self, path: Path) -> int | None:
        return self.lines.line(path)


def _duplicate_keys(root: yaml.Node | None) -> Iterator[tuple[Path, int, int]]:
    """``(path, line, first line)`` for every key given twice in one mapping, which
    ``safe_load`` would otherwise let the last one silently win. Run it before the tree is
    constructed: construction flattens ``<<`` merge keys into the mappings."""
    stack: list[tuple[yaml.Node, Path]] = [(root, ())] if root is not None else []
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            firsts: dict[str, yaml.Node] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    first = firsts.setdefault(key.value, key)
                    if first is not key:
                        yield ((*path, key.value), key.start_mark.line + 1,
                               first.start_mark.line + 1)
                    stack.append((value, (*path, key.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))


def read_document(path: FsPath) -> Document:
    """Read and parse ``path`` (YAML, or TOML by suffix); :class:`ConfigError` on failure."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigProblem(f"cannot read the file: {reason}", file=file)]) from None
    if path.suffix == ".toml":
        try:
            return Document(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([ConfigProblem(f"invalid TOML: {exc}", file=file)]) from None
    return _parse_yaml(text, file)


def _parse_yaml(text: str, file: str) -> Document:
    """The fast path (:func:`load_events`) first; a document it leaves alone is composed into
    nodes and constructed by PyYAML's ``SafeConstructor``, as ``yaml.safe_load`` would."""
    try:
        try:
            return Document(load_events(text), Lines(text))
        except Unusual:
            check_depth(text)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            doc = Document(None, Lines(root=root))
            doc.duplicates = list(_duplicate_keys(root))
            doc.data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigProblem(f"invalid YAML: {what}", file=file, line=line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(f"invalid YAML: {exc}", file=file)]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem("invalid YAML: nested too deeply", file=file)]) from None
    return doc
