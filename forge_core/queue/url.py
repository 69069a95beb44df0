"""Turn a queue URL (``sqlite:///path`` or ``redis://host:port/db``) into a Queue instance.

Backends are found through the ``forge.queue`` plugins, never imported by name, so a URL
scheme names the plugin and the rest of the URL becomes its options.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .. import plugins
from ..abc import Queue
from ..exceptions import ConfigError
from ._common import forge_home

__all__ = ["default_url", "open_queue", "url_options"]


def default_url() -> str:
    """``$FORGE_QUEUE`` if set, else the sqlite file under ``$FORGE_HOME``."""
    return os.environ.get("FORGE_QUEUE") or f"sqlite:///{forge_home() / 'queue.db'}"


def url_options(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``url`` into (plugin name, options). Query parameters become extra options.

    ``sqlite:///abs/path`` (or ``sqlite:////abs/path``) names an absolute file,
    ``sqlite://rel/path`` one relative to the working directory."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(f"queue URL {url!r} has no scheme; use sqlite:///path or "
                          "redis://host:port/db")
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        # sqlite:///abs/path and sqlite:////abs/path are absolute; sqlite://rel/path is relative
        path = parts.netloc + parts.path if parts.netloc else "/" + parts.path.lstrip("/")
        if path.strip("/"):
            options["path"] = path
    elif scheme in ("redis", "rediss"):
        options["url"] = url.split("?", 1)[0]
    else:
        if parts.netloc or parts.path:
            options["url"] = url.split("?", 1)[0]
    return ("redis" if scheme == "rediss" else scheme), options


def open_queue(url: str | None = None) -> Queue:
    """The Queue ``url`` names (default :func:`default_url`), built by its plugin."""
    name, options = url_options(url or default_url())
    queue: Queue = plugins.create("queue", name, options)
    return queue
