"""Daemonless Linux containers for Forge: the ``linux`` Runtime and the ``snapshot`` ImageStore.

Import the submodules you need (``forge_runtime_linux.runtime``, ``.images``); this package
module stays empty so the CLI starts fast.
"""

__all__: list[str] = []
