"""The six interfaces every Forge backend implements, and the records they exchange."""

from ._common import Availability
from ._executor import Executor, Outcome, OutcomeStatus, TaskRun, attempt_env
from ._image_store import Image, ImageStore, StoreUsage
from ._queue import ItemState, Lease, NewItem, Queue, QueueItem, QueueStats
from ._router import Route, Router, RouterHealth, RouteSet
from ._runtime import (
    ContainerSpec,
    ExitStatus,
    Handle,
    PortMapping,
    Resources,
    Runtime,
    Stats,
    Volume,
)
from ._scheduler import Scheduler, Trigger

__all__ = [
    "Availability",
    "ContainerSpec",
    "Executor",
    "ExitStatus",
    "Handle",
    "Image",
    "ImageStore",
    "ItemState",
    "Lease",
    "NewItem",
    "Outcome",
    "OutcomeStatus",
    "PortMapping",
    "Queue",
    "QueueItem",
    "QueueStats",
    "Resources",
    "Route",
    "RouteSet",
    "Router",
    "RouterHealth",
    "Runtime",
    "Scheduler",
    "Stats",
    "StoreUsage",
    "TaskRun",
    "Trigger",
    "Volume",
    "attempt_env",
]
