"""Runtimes shipped with Forge core: ``process``, a plain child process with rlimits."""

from .process import ProcessRuntime

__all__ = ["ProcessRuntime"]
