"""Forge's configuration: files (YAML, TOML) and Python modules into validated specs.

One pipeline — safe YAML, ``${VAR}`` substitution, workflow ``defaults`` and top-level
``hooks`` merged, one strict cattrs converter, semantic checks — and one error type,
:class:`~forge_core.exceptions.ConfigError`, whose problems name file, line and field.
"""

from __future__ import annotations

from ._convert import converter, parse_duration, parse_size
from ._loader import CONFIG_NAMES, find_config, load_project, structure_options
from ._python import load_any, load_python
from ._validate import hook_warnings, raise_problems, schedule_problems, validate_workflow

__all__ = [
    "CONFIG_NAMES",
    "converter",
    "find_config",
    "hook_warnings",
    "load_any",
    "load_project",
    "load_python",
    "parse_duration",
    "parse_size",
    "raise_problems",
    "schedule_problems",
    "structure_options",
    "validate_workflow",
]
