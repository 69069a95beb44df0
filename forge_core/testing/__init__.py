"""Public test helpers: conformance suites every backend subclasses, and their probes."""

from .executor import ExecutorConformance
from .image_store import ImageStoreConformance
from .queue import QueueConformance
from .runtime import FifoProbe, RuntimeConformance

__all__ = [
    "ExecutorConformance",
    "FifoProbe",
    "ImageStoreConformance",
    "QueueConformance",
    "RuntimeConformance",
]
