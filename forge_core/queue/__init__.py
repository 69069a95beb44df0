"""Durable queues: the embedded ``sqlite`` backend, queue URLs, and the ``queue`` executor.

Other backends (``redis``) are plugins found through the ``forge.queue`` entry points.
"""

from __future__ import annotations

from ._combine import PutCombiner
from ._common import backoff, dumps, forge_home, new_id
from .url import default_url, open_queue

__all__ = ["PutCombiner", "backoff", "default_url", "dumps", "forge_home", "new_id", "open_queue"]
