"""``forge container``: run, list, logs, stop, kill, delete, prune, stats, exec, inspect."""

from __future__ import annotations

import os
import signal as _signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ._common import emit_json, guarded, human_size, parse_size, table

if TYPE_CHECKING:
    from forge_core.abc import ContainerSpec

    from ..runtime import LinuxRuntime

app = typer.Typer(help="Daemonless Linux containers.", no_args_is_help=True, pretty_exceptions_enable=False)


def _runtime(init: bool = True, userns: str = "private") -> LinuxRuntime:
    from forge_core.exceptions import ConfigError

    from ..runtime import LinuxRuntime

    if userns not in ("private", "host"):
        raise ConfigError("--userns must be private or host")
    return LinuxRuntime(LinuxRuntime.Config(init=init, userns=userns == "private"))


def _env(pairs: list[str], files: list[Path]) -> dict[str, str]:
    from forge_core.exceptions import ConfigError

    env: dict[str, str] = {}
    lines = [ln for f in files for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for item in [*lines, *pairs]:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError(f"bad environment entry {item!r}; use KEY=VALUE")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


def _spec(image: str, command: list[str], opts: dict[str, Any]) -> ContainerSpec:
    from forge_core.abc import ContainerSpec, PortMapping, Resources, Volume
    from forge_core.exceptions import ConfigError

    volumes = []
    for v in opts["volume"]:
        parts = v.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ConfigError(f"bad volume {v!r}; use HOST:CTR[:ro]")
        volumes.append(Volume(source=os.path.abspath(parts[0]), target=parts[1], read_only=parts[2:] == ["ro"]))
    ports = []
    for p in opts["publish"]:
        mapping, _, proto = p.partition("/")
        bits = mapping.split(":")
        if len(bits) not in (2, 3) or not all(b.isdigit() for b in bits[-2:]) or proto not in ("", "tcp", "udp"):
            raise ConfigError(f"bad port {p!r}; use [IP:]HOST:CTR[/tcp|/udp]")
        ip = bits[0] if len(bits) == 3 else "127.0.0.1"
        ports.append(PortMapping(host_port=int(bits[-2]), container_port=int(bits[-1]), host_ip=ip,
                                 protocol="udp" if proto == "udp" else "tcp"))
    if opts["network"] not in ("private", "none", "host"):
        raise ConfigError("--network must be private, none or host")
    return ContainerSpec(
        command=tuple(command) or ("/bin/sh",), name=opts["name"], image=image,
        env=_env(opts["env"], opts["env_file"]), workdir=opts["workdir"], user=opts["user"],
        hostname=opts["hostname"], network=opts["network"],
        resources=Resources(memory=parse_size(opts["memory"]) if opts["memory"] else None,
                            cpus=opts["cpus"], pids=opts["pids_limit"]),
        volumes=tuple(volumes), tmpfs=tuple(opts["tmpfs"]), ports=tuple(ports), detach=opts["detach"],
    )


@app.command(context_settings={"allow_interspersed_args": False})
@guarded
def run(
    image: str,
    command: list[str] = typer.Argument(None),
    name: str = typer.Option(None, "--name"),
    env: list[str] = typer.Option([], "-e", "--env"),
    env_file: list[Path] = typer.Option([], "--env-file"),
    volume: list[str] = typer.Option([], "-v", "--volume"),
    tmpfs: list[str] = typer.Option([], "--tmpfs"),
    publish: list[str] = typer.Option([], "-p", "--publish"),
    memory: str = typer.Option(None, "--memory", "-m"),
    cpus: float = typer.Option(None, "--cpus"),
    pids_limit: int = typer.Option(None, "--pids-limit"),
    workdir: str = typer.Option(None, "-w", "--workdir"),
    user: str = typer.Option(None, "-u", "--user"),
    hostname: str = typer.Option(None, "--hostname"),
    network: str = typer.Option("private", "--network"),
    rm: bool = typer.Option(False, "--rm"),
    detach: bool = typer.Option(False, "-d", "--detach"),
    timeout: float = typer.Option(None, "--timeout"),
    init: bool = typer.Option(True, "--init/--no-init", help="reaping init shim as PID 1"),
    userns: str = typer.Option("private", "--userns", help="private: container root is an unprivileged "
                               "host uid (default); host: container ids are host ids (root only)"),
) -> None:
    """Run COMMAND in a new container from IMAGE; exits with the container's exit code."""
    import anyio

    opts = dict(locals())
    spec = _spec(image, command or [], opts)
    rt = _runtime(init, userns)
    if detach:
        handle = anyio.run(rt.start, spec)
        typer.echo(handle.id)
        return
    raise typer.Exit(anyio.run(_foreground, rt, spec, timeout, rm))


async def _foreground(rt: LinuxRuntime, spec: ContainerSpec, timeout: float | None, rm: bool) -> int:
    import anyio

    handle = await rt.start(spec, stdio=(0, 1, 2))
    try:
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            status = await rt.wait(handle)
        if scope.cancelled_caught:
            status = await rt.stop(handle, grace=2)
            typer.echo(f"error: timed out after {timeout}s", err=True)
    finally:
        with anyio.CancelScope(shield=True):
            await rt.signal(handle, _signal.SIGKILL)
            if rm:
                await rt.remove(handle)
    if status.oom_killed:
        typer.echo("error: the container was killed: out of memory", err=True)
    if status.exit_code is not None:
        return status.exit_code
    return 128 + (status.signal or 0)


def _status_text(rt: LinuxRuntime, data: dict[str, Any]) -> str:
    st = rt._status(data)
    return "running" if st is None else ("exited: " + st.describe())


@app.command("list")
@guarded
def list_(as_json: bool = typer.Option(False, "--json"), all_: bool = typer.Option(True, "-a", "--all")) -> None:
    """Containers (running and stopped)."""
    rt = _runtime()
    states = rt.list_states()
    if as_json:
        emit_json([{"id": d["id"], "name": d.get("name"), "image": d.get("image"), "status": _status_text(rt, d),
                    "command": d.get("command"), "created": d.get("created")} for d in states])
        return
    rows = [(d["id"], d.get("name") or "", d.get("image"), _status_text(rt, d), " ".join(d.get("command", []))[:40])
            for d in states]
    table(rows, ["ID", "NAME", "IMAGE", "STATUS", "COMMAND"])


@app.command()
@guarded
def logs(ref: str, follow: bool = typer.Option(False, "-f", "--follow")) -> None:
    """Print a container's output (containers run with -d or a log path)."""
    rt = _runtime()
    data = rt.state(rt.resolve(ref))
    path = Path(data["log"]) if data.get("log") else None
    if path is None:
        from forge_core.exceptions import Unsupported

        raise Unsupported("this container ran in the foreground; its output went to the terminal")
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not follow or not rt.is_running(rt.state(data["id"])):
                return
            time.sleep(0.1)


@app.command()
@guarded
def stop(refs: list[str], time_: float = typer.Option(10.0, "-t", "--time")) -> None:
    """SIGTERM, then SIGKILL after the grace time."""
    import anyio

    rt = _runtime()
    for ref in refs:
        anyio.run(rt.stop, rt.handle(rt.state(rt.resolve(ref))), time_)
        typer.echo(ref)


@app.command()
@guarded
def kill(refs: list[str], signal: str = typer.Option("KILL", "-s", "--signal")) -> None:
    """Send a signal (default KILL) to every process of the container."""
    import anyio

    from forge_core.exceptions import ConfigError

    try:
        signum = int(signal) if signal.isdigit() else int(_signal.Signals("SIG" + signal.upper().removeprefix("SIG")))
    except (KeyError, ValueError):
        raise ConfigError(f"unknown signal {signal!r}") from None
    rt = _runtime()
    for ref in refs:
        anyio.run(rt.signal, rt.handle(rt.state(rt.resolve(ref))), signum)
        typer.echo(ref)


@app.command()
@guarded
def delete(refs: list[str], force: bool = typer.Option(False, "-f", "--force")) -> None:
    """Delete containers (a running one only with --force)."""
    from forge_core.exceptions import Unsupported

    rt = _runtime()
    for ref in refs:
        cid = rt.resolve(ref)
        if rt.is_running(rt.state(cid)) and not force:
            raise Unsupported(f"container {ref} is running; stop it or use --force")
        rt.remove_sync(cid)
        typer.echo(ref)


@app.command()
@guarded
def prune() -> None:
    """Delete every stopped container and whatever an interrupted run left behind."""
    import anyio

    rt = _runtime()
    gone = anyio.run(rt.prune) + rt.gc()
    typer.echo(f"removed {len(gone)}")


@app.command()
@guarded
def stats(refs: list[str] = typer.Argument(None), as_json: bool = typer.Option(False, "--json")) -> None:
    """CPU seconds, memory and process count of running containers."""
    import anyio

    rt = _runtime()
    states = [rt.state(rt.resolve(r)) for r in refs] if refs else [d for d in rt.list_states() if rt.is_running(d)]
    out = []
    for d in states:
        s = anyio.run(rt.stats, rt.handle(d))
        out.append({"id": d["id"], "name": d.get("name"), "cpu_seconds": s.cpu_seconds,
                    "memory_bytes": s.memory_bytes, "pids": s.pids})
    if as_json:
        emit_json(out)
        return
    table([(o["id"], o["name"] or "", f"{o['cpu_seconds']:.2f}s", human_size(o["memory_bytes"]), o["pids"])
           for o in out], ["ID", "NAME", "CPU", "MEMORY", "PIDS"])


@app.command("exec", context_settings={"allow_interspersed_args": False})
@guarded
def exec_(
    ref: str, command: list[str],
    env: list[str] = typer.Option([], "-e", "--env"),
    user: str = typer.Option(None, "-u", "--user"),
    workdir: str = typer.Option(None, "-w", "--workdir"),
) -> None:
    """Run another command inside a running container."""
    from .._exec import exec_in

    rt = _runtime()
    data = rt.state(rt.resolve(ref))
    raise typer.Exit(exec_in(data, rt.cgroup(data), command, user, workdir, _env(env, [])))


@app.command()
@guarded
def inspect(ref: str) -> None:
    """Everything Forge recorded about a container, as JSON."""
    rt = _runtime()
    data = rt.state(rt.resolve(ref))
    data["status"] = _status_text(rt, data)
    emit_json(data)
