"""The DAG: a pure dependency graph (:mod:`._graph`) and the engine that runs workflows on it."""

from __future__ import annotations

from ._graph import Graph

__all__ = ["Graph"]
