"""The pure dependency graph: cycles, order, layers, reachability."""

from __future__ import annotations

import pytest

from forge_core.dag import Graph
from forge_core.exceptions import ConfigError, CycleError


class TestGraph:
    def test_roots_and_leaves_follow_declaration_order(self) -> None:
        """Roots depend on nothing, leaves have no dependents, both in declaration order."""
        g = Graph({"a": [], "b": [], "c": ["a", "b"], "d": ["c"], "e": ["a"]})
        assert g.roots == ("a", "b")
        assert g.leaves == ("d", "e")

    def test_layers_group_tasks_that_can_run_together(self) -> None:
        """Each layer depends only on earlier layers."""
        g = Graph({"a": [], "b": [], "c": ["a", "b"], "d": ["c"], "e": ["a"]})
        assert g.layers() == [["a", "b"], ["c", "e"], ["d"]]
        assert g.topological_order() == ["a", "b", "c", "e", "d"]
        assert g.order == ("a", "b", "c", "e", "d")

    def test_upstream_and_downstream_are_transitive(self) -> None:
        """upstream/downstream follow edges through intermediate tasks."""
        g = Graph({"a": [], "b": ["a"], "c": ["b"], "x": []})
        assert g.upstream("c") == {"a", "b"}
        assert g.downstream("a") == {"b", "c"}
        assert g.is_upstream("a", of="c")
        assert not g.is_upstream("c", of="a")
        assert not g.is_upstream("x", of="c")

    def test_cycle_is_reported_in_run_order(self) -> None:
        """A cycle lists tasks so that each runs before the next, first task repeated."""
        g = Graph({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
        assert g.find_cycle() == ["a", "b", "c", "a"]
        with pytest.raises(CycleError) as info:
            g.validate()
        assert info.value.cycle == ["a", "b", "c", "a"]
        assert "a -> b -> c -> a" in str(info.value)
        with pytest.raises(CycleError):
            g.layers()

    def test_self_dependency_is_a_cycle(self) -> None:
        """A task depending on itself is the shortest cycle."""
        assert Graph({"a": ["a"]}).find_cycle() == ["a", "a"]

    def test_unknown_dependencies_are_kept_aside(self) -> None:
        """Dependencies on missing names are listed and ignored by the other methods."""
        g = Graph({"a": ["ghost"], "b": ["a"]})
        assert g.unknown() == [("a", "ghost")]
        assert g.roots == ("a",)
        with pytest.raises(ConfigError, match="unknown task 'ghost'"):
            g.validate()

    def test_a_long_chain_needs_no_recursion(self) -> None:
        """A 20,000-task chain is ordered and checked without hitting the recursion limit."""
        n = 20_000
        g = Graph({f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)})
        assert g.find_cycle() is None
        assert len(g.layers()) == n
        assert g.is_upstream("t0", of=f"t{n - 1}")
