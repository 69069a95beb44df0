"""``forge container run``: its flags (one table that both the Typer command and the fast path
read), their conversion into the engine's request, and the run itself.

Nothing here imports typer, click, anyio or attrs: ``forge container run`` goes through
:mod:`.fast` before any of them loads.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FLAGS", "Flag", "describe", "execute", "parse_env", "parse_size", "request"]


class Flag:
    """One option of ``run``: its keyword, spellings, kind (``str``, ``float``, ``int``,
    ``multi`` (repeatable), ``bool``, ``toggle`` (``--x/--no-x``)), default and help."""

    __slots__ = ("default", "dest", "help", "kind", "names")

    def __init__(self, dest: str, names: tuple[str, ...], kind: str, default: Any, help: str) -> None:
        self.dest, self.names, self.kind, self.default, self.help = dest, names, kind, default, help


FLAGS: tuple[Flag, ...] = (
    Flag("name", ("--name",), "str", None, "a name for the container"),
    Flag("env", ("-e", "--env"), "multi", (), "KEY=VALUE, or KEY to pass this environment's value"),
    Flag("env_file", ("--env-file",), "multi", (), "file of KEY=VALUE lines"),
    Flag("volume", ("-v", "--volume"), "multi", (), "HOST:CTR[:ro] bind mount"),
    Flag("tmpfs", ("--tmpfs",), "multi", (), "a tmpfs at this container path"),
    Flag("publish", ("-p", "--publish"), "multi", (), "[IP:]HOST:CTR[/tcp|/udp]"),
    Flag("memory", ("-m", "--memory"), "str", None, "memory limit, e.g. 64m or 1g"),
    Flag("cpus", ("--cpus",), "float", None, "CPU quota in cores"),
    Flag("pids_limit", ("--pids-limit",), "int", None, "most processes at once"),
    Flag("workdir", ("-w", "--workdir"), "str", None, "working directory inside"),
    Flag("user", ("-u", "--user"), "str", None, "USER[:GROUP] inside"),
    Flag("hostname", ("--hostname",), "str", None, "hostname inside"),
    Flag("network", ("--network",), "str", "private", "private (loopback only), none or host"),
    Flag("rm", ("--rm",), "bool", False, "delete the container when it exits"),
    Flag("detach", ("-d", "--detach"), "bool", False, "run in the background and print its id"),
    Flag("timeout", ("--timeout",), "float", None, "stop the container after this many seconds"),
    Flag("init", ("--init",), "toggle", True, "reaping init shim as PID 1"),
    Flag(
        "userns",
        ("--userns",),
        "str",
        "private",
        "private: container root is an unprivileged host uid (default); host: host ids (root only)",
    ),
)


def parse_size(text: str) -> int:
    """Docker-style sizes: ``512``, ``64k``, ``128m``, ``1g`` (binary multiples)."""
    from forge_core.exceptions import ConfigError

    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    raw = text.strip().lower()
    if raw.endswith(("kb", "mb", "gb")):
        raw = raw[:-1]
    mult = units.get(raw[-1:])
    try:
        return int(float(raw[:-1] if mult else raw) * (mult or 1))
    except ValueError:
        raise ConfigError(f"bad size {text!r}; use e.g. 64m or 1g") from None


def parse_env(pairs: list[str] | tuple[str, ...], files: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``-e`` entries over ``--env-file`` lines; a bare ``KEY`` takes this environment's value."""
    from forge_core.exceptions import ConfigError

    lines: list[str] = []
    for path in files:
        with open(path) as fh:
            lines += [ln for ln in fh.read().splitlines() if ln.strip() and not ln.startswith("#")]
    env: dict[str, str] = {}
    for item in [*lines, *pairs]:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError(f"bad environment entry {item!r}; use KEY=VALUE")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


def _volumes(specs: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    from forge_core.exceptions import ConfigError

    out = []
    for v in specs:
        parts = v.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ConfigError(f"bad volume {v!r}; use HOST:CTR[:ro]")
        out.append(
            {"source": os.path.abspath(parts[0]), "target": parts[1], "read_only": parts[2:] == ["ro"]}
        )
    return out


def _ports(specs: tuple[str, ...] | list[str]) -> list[list[Any]]:
    from forge_core.exceptions import ConfigError

    out: list[list[Any]] = []
    for p in specs:
        mapping, _, proto = p.partition("/")
        bits = mapping.split(":")
        if (
            len(bits) not in (2, 3)
            or not all(b.isdigit() for b in bits[-2:])
            or proto not in ("", "tcp", "udp")
        ):
            raise ConfigError(f"bad port {p!r}; use [IP:]HOST:CTR[/tcp|/udp]")
        out.append([bits[0] if len(bits) == 3 else "127.0.0.1", int(bits[-2]), int(bits[-1]), proto or "tcp"])
    return out


def request(image: str, command: list[str], opts: dict[str, Any]) -> dict[str, Any]:
    """The engine's request (ContainerSpec's fields as plain data) from parsed flags."""
    from forge_core.exceptions import ConfigError

    if opts["network"] not in ("private", "none", "host"):
        raise ConfigError("--network must be private, none or host")
    if opts["userns"] not in ("private", "host"):
        raise ConfigError("--userns must be private or host")
    limits = {
        "memory": parse_size(opts["memory"]) if opts["memory"] else None,
        "cpus": opts["cpus"],
        "pids": opts["pids_limit"],
    }
    return {
        "command": list(command) or ["/bin/sh"],
        "name": opts["name"],
        "image": image,
        "env": parse_env(opts["env"], opts["env_file"]),
        "hostname": opts["hostname"],
        "workdir": opts["workdir"],
        "user": opts["user"],
        "network": opts["network"],
        "detach": opts["detach"],
        "tmpfs": list(opts["tmpfs"]),
        "labels": {},
        "volumes": _volumes(opts["volume"]),
        "ports": _ports(opts["publish"]),
        "resources": {k: v for k, v in limits.items() if v is not None},
        "log_path": None,
    }


def describe(exc: BaseException) -> str:
    """One line for the user: a flag's problem needs no ``<config>:`` locator."""
    from forge_core.exceptions import ConfigError

    if isinstance(exc, ConfigError):
        return "; ".join(p.message if p.file is None and not p.field else str(p) for p in exc.problems)
    return str(exc)


def execute(image: str, command: list[str], opts: dict[str, Any]) -> int:
    """Run the container the flags describe; the exit code for the shell. Errors print one line."""
    from forge_core.exceptions import ConfigError, ForgeError, Unsupported

    try:
        return _execute(image, command, opts)
    except KeyboardInterrupt:
        return 130
    except (ConfigError, Unsupported) as exc:
        sys.stderr.write(f"error: {describe(exc)}\n")
        return 2
    except ForgeError as exc:
        sys.stderr.write(f"error: {describe(exc)}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}\n")
        return 1
    except Exception as exc:  # a container may already have run: never let the CLI run it again
        sys.stderr.write(f"error: internal error: {type(exc).__name__}: {exc}\n")
        return 1


def _execute(image: str, command: list[str], opts: dict[str, Any]) -> int:
    from forge_core.home import forge_home_str

    from .. import _launch, _refs
    from .._engine import Engine

    req = request(image, command, opts)
    home = forge_home_str()
    engine = Engine(home, userns=opts["userns"] == "private", init=opts["init"])
    _launch.check_request(engine, req)
    found = _refs.lookup(os.path.join(home, "images"), image)
    if opts["detach"]:
        plan = _launch.start_blocking(engine, req, found, None)
        sys.stdout.write(plan["id"] + "\n")
        return 0
    plan = _launch.start_blocking(engine, req, found, (0, 1, 2))
    try:
        info = _wait(engine, plan, opts["timeout"])
    finally:
        engine.kill(engine.state(plan["id"]), 9)
        if opts["rm"]:
            engine.remove(plan["id"])
    if info.get("oom_killed"):
        sys.stderr.write("error: the container was killed: out of memory\n")
    if info.get("exit_code") is not None:
        return int(info["exit_code"])
    return 128 + int(info.get("signal") or 0)


def _wait(engine: Any, plan: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """Block until the container ends (its supervisor is our child); past ``timeout``, SIGTERM,
    then SIGKILL two seconds later."""
    if timeout is None:
        os.waitpid(plan["sup_pid"], 0)
        engine.children.discard(plan["sup_pid"])
        return engine.exit_info(engine.state(plan["id"])) or {}
    import select

    fd = os.pidfd_open(plan["sup_pid"])
    try:
        if not select.select([fd], [], [], timeout)[0]:
            sys.stderr.write(f"error: timed out after {timeout}s\n")
            engine.kill(engine.state(plan["id"]), 15)
            if not select.select([fd], [], [], 2.0)[0]:
                engine.kill(engine.state(plan["id"]), 9)
                select.select([fd], [], [])
    finally:
        os.close(fd)
    engine.reap(plan["sup_pid"])
    info: dict[str, Any] = engine.exit_info(engine.state(plan["id"])) or {}
    return info
