"""``python -m forge_core.daemon``: the daemon process itself. ``forge daemon`` checks the
config, then replaces itself with this lean process, so no CLI framework (Typer brings
Click and pydantic, ~8 MiB) stays resident for the daemon's lifetime."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "serve"]


def serve(config: Path, host: str | None, port: int | None, token: str | None,
          grace: float) -> None:
    """Load ``config`` and serve until SIGTERM/SIGINT; the PID file names this process."""
    import anyio

    from ..config import load_any
    from ..state import forge_home, open_store
    from . import Daemon, DaemonOptions

    project = load_any(config)
    settings = project.settings
    home = forge_home(settings.home)
    store = open_store(home)
    options = DaemonOptions(host=host or settings.daemon_host, port=port or settings.daemon_port,
                            token=token or settings.daemon_token, grace=grace)
    daemon = Daemon(project=project, home=home, store=store, options=options)
    handler = logging.StreamHandler()
    handler.addFilter(daemon.redactor.logging_filter())
    logging.basicConfig(level=logging.INFO, handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    pid_file = home / "daemon.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()} {options.host}:{options.port}\n")
    try:
        logging.getLogger("forge.daemon").info(
            "serving %d workflows on http://%s:%d", len(project.workflows), options.host,
            options.port)
        anyio.run(daemon.serve)
    finally:
        if pid_file.read_text().split()[0] == str(os.getpid()):
            pid_file.unlink(missing_ok=True)
        store.close()


def main(argv: list[str] | None = None) -> int:
    """Parse the flags ``forge daemon`` passes on (the token comes in FORGE_DAEMON_TOKEN, never
    on the command line) and serve."""
    from ..exceptions import ConfigError, ForgeError

    parser = argparse.ArgumentParser(prog="python -m forge_core.daemon")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    from ..runtime import own_process

    own_process()  # this process is Forge's: its tasks inherit none of its descriptors,
    # and its terminal is not theirs
    try:
        serve(args.config, args.host, args.port, os.environ.get("FORGE_DAEMON_TOKEN"), args.grace)
    except ForgeError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
