"""Runtimes shipped with Forge core: ``process``, a plain child process with rlimits; and the
anyio streams over pipe fds that any runtime's ``attach()`` can hand out."""

from ._spawn import own_descriptors, own_process
from ._streams import FdReceiveStream, FdSendStream
from .process import ProcessRuntime

__all__ = ["FdReceiveStream", "FdSendStream", "ProcessRuntime", "own_descriptors", "own_process"]
