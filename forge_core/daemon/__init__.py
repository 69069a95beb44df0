"""``forge daemon``: one anyio process that starts scheduled runs, owns runs through
heartbeat leases (resuming any whose owner died), and serves health, metrics and a JSON API."""

from __future__ import annotations

from ._core import Clock, Daemon, DaemonOptions

__all__ = ["Clock", "Daemon", "DaemonOptions"]
