"""A pure dependency graph of task names: cycles, order, parallel layers, reachability.

No I/O and no async: the config validator and the engine's ``--dry-run`` plan both build a
:class:`Graph` from ``{task: dependencies}``. Every walk is iterative, so a 10,000-task chain
does not hit the recursion limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from ..exceptions import ConfigError, ConfigProblem, CycleError

__all__ = ["Graph"]


class Graph:
    """An immutable DAG built from ``{name: names it depends on}``, in declaration order.

    Dependencies on names that are not nodes are kept aside (:meth:`unknown`) and ignored by
    every other method, so one typo does not hide the rest of a report.
    """

    __slots__ = ("_deps", "_index", "_names", "_order", "_rdeps", "_unknown")

    def __init__(self, dependencies: Mapping[str, Iterable[str]]) -> None:
        self._names: tuple[str, ...] = tuple(dependencies)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._rdeps: dict[str, list[str]] = {name: [] for name in self._names}
        self._unknown: list[tuple[str, str]] = []
        self._order: tuple[str, ...] | None = None
        for name, deps in dependencies.items():
            known: list[str] = []
            for dep in dict.fromkeys(deps):
                if dep in self._index:
                    known.append(dep)
                    self._rdeps[dep].append(name)
                else:
                    self._unknown.append((name, dep))
            self._deps[name] = tuple(known)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every task name, in declaration order."""
        return self._names

    @property
    def roots(self) -> tuple[str, ...]:
        """Tasks that depend on nothing: the ones a run starts with."""
        return tuple(n for n in self._names if not self._deps[n])

    @property
    def leaves(self) -> tuple[str, ...]:
        """Tasks nothing depends on: the ones a run ends with."""
        return tuple(n for n in self._names if not self._rdeps[n])

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._names)

    def dependencies(self, name: str) -> tuple[str, ...]:
        """The known tasks ``name`` depends on directly."""
        return self._deps[name]

    def dependents(self, name: str) -> tuple[str, ...]:
        """The tasks that depend directly on ``name``."""
        return tuple(self._rdeps[name])

    def unknown(self) -> list[tuple[str, str]]:
        """``(task, missing dependency)`` for every dependency on a name that is not a node."""
        return list(self._unknown)

    def upstream(self, name: str) -> set[str]:
        """Every task ``name`` depends on, directly or through others."""
        return self._reach(name, self._deps)

    def downstream(self, name: str) -> set[str]:
        """Every task that depends on ``name``, directly or through others."""
        return self._reach(name, self._rdeps)

    def is_upstream(self, candidate: str, of: str) -> bool:
        """Whether ``of`` depends on ``candidate``, directly or through others (early exit)."""
        deps = self._deps.get(of, ())
        if candidate in deps:
            return True
        if candidate not in self._index:
            return False
        seen = {of}
        stack = list(deps)
        while stack:
            node = stack.pop()
            if node == candidate:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(self._deps[node])
        return False

    @staticmethod
    def _reach(name: str, edges: Mapping[str, Iterable[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(edges[name])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(edges[node])
        return seen

    def find_cycle(self) -> list[str] | None:
        """One dependency cycle in run order (``a -> b`` means b depends on a), the first
        name repeated at the end and the earliest-declared task first; ``None`` if acyclic."""
        state = dict.fromkeys(self._names, 0)  # 0 new, 1 on the current path, 2 done
        for start in self._names:
            if state[start]:
                continue
            path = [start]
            iters = [iter(self._deps[start])]
            state[start] = 1
            while iters:
                dep = next(iters[-1], None)
                if dep is None:
                    state[path.pop()] = 2
                    iters.pop()
                elif state[dep] == 1:
                    return self._cycle_from(path[path.index(dep):])
                elif state[dep] == 0:
                    state[dep] = 1
                    path.append(dep)
                    iters.append(iter(self._deps[dep]))
        return None

    def _cycle_from(self, dependency_path: list[str]) -> list[str]:
        # the path runs task -> its dependency; a run goes the other way
        cycle = dependency_path[::-1]
        first = min(range(len(cycle)), key=lambda i: self._index[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        return [*cycle, cycle[0]]

    def validate(self) -> None:
        """Raise :class:`CycleError` for a cycle, else :class:`ConfigError` for unknown
        dependencies; the config loader reports these with file lines, this is the bare check."""
        cycle = self.find_cycle()
        if cycle is not None:
            raise CycleError(cycle)
        if self._unknown:
            raise ConfigError([ConfigProblem(f"task {t!r} depends on unknown task {d!r}")
                               for t, d in self._unknown])

    def topological_order(self) -> list[str]:
        """Every task after all of its dependencies, ties broken by declaration order."""
        return [name for layer in self.layers() for name in layer]

    @property
    def order(self) -> tuple[str, ...]:
        """:meth:`topological_order`, computed once (the engine scans it repeatedly)."""
        if self._order is None:
            self._order = tuple(self.topological_order())
        return self._order

    def layers(self) -> list[list[str]]:
        """Tasks grouped into waves that could run in parallel: each layer depends only on
        earlier ones. Raises :class:`CycleError` when there is a cycle."""
        waiting = {name: len(self._deps[name]) for name in self._names}
        layer = [name for name in self._names if not waiting[name]]
        layers: list[list[str]] = []
        done = 0
        while layer:
            layers.append(layer)
            done += len(layer)
            ready: deque[str] = deque()
            for name in layer:
                for child in self._rdeps[name]:
                    waiting[child] -= 1
                    if not waiting[child]:
                        ready.append(child)
            layer = sorted(ready, key=self._index.__getitem__)
        if done != len(self._names):
            cycle = self.find_cycle()
            raise CycleError(cycle or [])
        return layers
