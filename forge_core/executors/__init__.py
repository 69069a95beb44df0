"""The executors shipped with Forge core: ``local`` (one task at a time), ``thread`` (Python
tasks in worker threads) and ``process`` (every task in a child process)."""

from ._base import BaseExecutor
from ._process import ProcessExecutor
from ._thread import LocalExecutor, ThreadExecutor

__all__ = ["BaseExecutor", "LocalExecutor", "ProcessExecutor", "ThreadExecutor"]
