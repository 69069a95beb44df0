"""Forge: workflows, daemonless containers, earned deployments and a durable agent queue.

The public API is what this module and :mod:`forge_core.abc` export. Heavier pieces are
imported on first use so that ``import forge_core`` (and the CLI) stays fast.
"""

from __future__ import annotations

# not typing.TYPE_CHECKING: importing typing costs ~3 ms; mypy treats any TYPE_CHECKING as true
TYPE_CHECKING = False

__version__ = "0.1.0"

__all__ = [
    "EventBus",
    "ProjectSpec",
    "StateStore",
    "TaskSpec",
    "Workflow",
    "WorkflowSpec",
    "__version__",
    "forge_home",
    "load_any",
    "resume_run",
    "run_workflow",
]

_LAZY = {
    "EventBus": "forge_core.events",
    "ProjectSpec": "forge_core.spec",
    "TaskSpec": "forge_core.spec",
    "WorkflowSpec": "forge_core.spec",
    "StateStore": "forge_core.state",
    "forge_home": "forge_core.home",
    "Workflow": "forge_core.flow",
    "load_any": "forge_core.config",
    "run_workflow": "forge_core.runner",
    "resume_run": "forge_core.runner",
}

if TYPE_CHECKING:
    from typing import Any

    from .config import load_any
    from .events import EventBus
    from .flow import Workflow
    from .home import forge_home
    from .runner import resume_run, run_workflow
    from .spec import ProjectSpec, TaskSpec, WorkflowSpec
    from .state import StateStore


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forge_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
