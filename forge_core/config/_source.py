"""Reading a config file into plain data plus a way to find the line of any field in it.

YAML is parsed once into a node tree (libyaml's composer when available) and constructed
from that tree by PyYAML's ``SafeConstructor`` — exactly what ``yaml.safe_load`` does — so
the node tree that gives line numbers costs no second parse. TOML has no line numbers.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import yaml

from ..exceptions import ConfigError, ConfigProblem
from ._convert import Path

__all__ = ["Document", "read_document"]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader, remembering each plain scalar's resolved tag: a big workflow repeats
    the same words thousands of times and resolving is most of the parse time."""

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


class Document:
    """Parsed data and its node tree; :meth:`line` answers for paths into the file."""

    def __init__(self, data: Any, root: yaml.Node | None) -> None:
        self.data = data
        self.root = root
        self.duplicates: list[tuple[Path, int, int]] = []
        self._keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

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

    def duplicate_keys(self) -> Iterator[tuple[Path, int, int]]:
        """``(path, line, first line)`` for every key given twice in one mapping, which
        ``safe_load`` would otherwise let the last one silently win. Run it before the tree is
        constructed: construction flattens ``<<`` merge keys into the mappings."""
        stack: list[tuple[yaml.Node, Path]] = [(self.root, ())] if self.root is not None else []
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
            return Document(tomllib.loads(text), None)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([ConfigProblem(f"invalid TOML: {exc}", file=file)]) from None
    return _parse_yaml(text, file)


def _parse_yaml(text: str, file: str) -> Document:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        doc = Document(None, root)
        doc.duplicates = list(doc.duplicate_keys())
        doc.data = _construct(loader, root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigProblem(f"invalid YAML: {what}", file=file, line=line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(f"invalid YAML: {exc}", file=file)]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem("invalid YAML: nested too deeply", file=file)]) from None
    finally:
        loader.dispose()
    return doc


_STR, _SEQ, _MAP, _MERGE = (f"tag:yaml.org,2002:{t}" for t in ("str", "seq", "map", "merge"))


def _construct(loader: Any, root: yaml.Node) -> Any:
    """What ``construct_document`` returns, faster: plain strings, lists and mappings are built
    here; every other tag (numbers, booleans, null, timestamps, ``<<`` merges) goes to the
    loader's own ``SafeConstructor``."""
    memo: dict[int, Any] = {}

    def build(node: yaml.Node) -> Any:
        if id(node) in memo:
            return memo[id(node)]
        tag = node.tag
        if tag == _STR and isinstance(node, yaml.ScalarNode):
            return node.value
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            memo[id(node)] = items
            items.extend(build(item) for item in node.value)
            return items
        if (tag == _MAP and isinstance(node, yaml.MappingNode)
                and all(k.tag != _MERGE for k, _v in node.value)):
            mapping: dict[Any, Any] = {}
            memo[id(node)] = mapping
            for key_node, value_node in node.value:
                key = build(key_node)
                try:
                    mapping[key] = build(value_node)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found an unhashable key", key_node.start_mark) from None
            return mapping
        return loader.construct_object(node, deep=True)

    return build(root)
