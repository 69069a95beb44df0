"""Reading a config file into plain data plus a way to find the line of any field in it.

YAML is loaded with safe-load semantics straight from libyaml's events (no node tree); the
positions that give line numbers are read from the kept text only when a problem must be
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
from ._events import BaseLoader, Unusual, check_depth, load_events, positions

__all__ = ["Document", "Lines", "read_document"]


class _Loader(BaseLoader):  # type: ignore[misc]
    """The safe loader, remembering each plain scalar's resolved tag (a big workflow repeats
    the same words thousands of times), for documents the fast path leaves alone."""

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
    """Line numbers of a YAML document, from a tree of positions (see :func:`positions`) worked
    out only when a line is asked for (an error is being reported): loading a valid file
    never pays for them."""

    def __init__(self, text: str | None = None, tree: Any = None) -> None:
        self._text = text
        self._tree = tree

    @property
    def tree(self) -> Any:
        """The positions tree (``None`` for TOML or an empty document)."""
        if self._text is not None:
            text, self._text = self._text, None
            self._tree = positions(text)
        return self._tree

    def line(self, path: Path) -> int | None:
        """1-based line of the deepest part of ``path`` found in the file (a mapping key's
        line for a field, an item's first line for a list entry)."""
        tree, line = self.tree, None
        for part in path:
            entry = _entry(tree, part)
            if entry is None:
                break
            line, tree = entry
        return line

    def keys(self, path: Path) -> dict[str, int]:
        """Each key of the mapping at ``path`` and its line (empty when there is none)."""
        return _keys(self._at(path))

    def entries(self, path: Path) -> list[dict[str, int]]:
        """For each item of the list (or value of the mapping) at ``path``: its keys' lines,
        and its own line under ``""``."""
        tree = self._at(path)
        pairs = tree if isinstance(tree, list) else list(tree.values()) if isinstance(
            tree, dict) else []
        return [{"": line, **_keys(sub)} for line, sub in pairs]

    def _at(self, path: Path) -> Any:
        tree = self.tree
        for part in path:
            entry = _entry(tree, part)
            if entry is None:
                return None
            tree = entry[1]
        return tree


def _entry(tree: Any, part: str | int) -> tuple[int, Any] | None:
    if isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree):
        found: tuple[int, Any] = tree[part]
        return found
    if isinstance(tree, dict):
        return tree.get(str(part))
    return None


def _keys(tree: Any) -> dict[str, int]:
    return {key: line for key, (line, _sub) in tree.items()} if isinstance(tree, dict) else {}


def _node_positions(root: yaml.Node | None) -> Any:
    """The positions tree of a composed (and constructed: ``<<`` merges flattened) node tree."""
    memo: dict[int, Any] = {}

    def walk(node: yaml.Node) -> Any:
        if id(node) in memo:
            return memo[id(node)]
        if isinstance(node, yaml.MappingNode):
            mapping: dict[str, Any] = memo.setdefault(id(node), {})
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    mapping[str(key.value)] = (key.start_mark.line + 1, walk(value))
            return mapping
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = memo.setdefault(id(node), [])
            items.extend((item.start_mark.line + 1, walk(item)) for item in node.value)
            return items
        return None

    return None if root is None else walk(root)


class Document:
    """Parsed data, the keys given twice, and the :class:`Lines` of the text it came from."""

    def __init__(self, data: Any, lines: Lines | None = None) -> None:
        self.data = data
        self.lines = lines or Lines()
        self.duplicates: list[tuple[Path, int, int]] = []

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
            doc = Document(None)
            doc.duplicates = list(_duplicate_keys(root))
            doc.data = loader.construct_document(root) if root is not None else None
            doc.lines = Lines(tree=_node_positions(root))
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
