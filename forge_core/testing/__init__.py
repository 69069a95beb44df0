"""Public test helpers: conformance suites every backend subclasses, and their probes."""

from .executor import ExecutorConformance
from .runtime import FifoProbe, RuntimeConformance

__all__ = ["ExecutorConformance", "FifoProbe", "RuntimeConformance"]
