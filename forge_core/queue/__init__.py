"""Durable queues: the embedded ``sqlite`` backend, queue URLs, and the ``queue`` executor.

Other backends (``redis``) are plugins found through the ``forge.queue`` entry points.
"""

from __future__ import annotations

from ._common import backoff, forge_home
from .url import default_url, open_queue

__all__ = ["backoff", "default_url", "forge_home", "open_queue"]
