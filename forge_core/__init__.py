"""Forge: workflows, daemonless containers, earned deployments and a durable agent queue.

The public API is what this module and :mod:`forge_core.abc` export.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
