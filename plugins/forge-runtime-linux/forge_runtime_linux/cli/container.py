"""``forge container``: run, list, logs, stop, kill, delete, prune, stats, exec, inspect."""

from __future__ import annotations

import inspect as _inspect
import signal as _signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ._common import emit_json, guarded, human_size, table
from ._run import FLAGS, parse_env

if TYPE_CHECKING:
    from ..runtime import LinuxRuntime

app = typer.Typer(help="Daemonless Linux containers.", no_args_is_help=True, pretty_exceptions_enable=False)


def _runtime() -> LinuxRuntime:
    from ..runtime import LinuxRuntime

    return LinuxRuntime()


def _run(image: str, command: list[str], **opts: Any) -> None:
    """Run COMMAND in a new container from IMAGE; exits with the container's exit code."""
    from ._run import execute

    raise typer.Exit(execute(image, command or [], opts))


def _run_signature() -> tuple[_inspect.Signature, dict[str, Any]]:
    """``run``'s parameters for Typer, made from the flag table the fast path parses with."""
    kinds: dict[str, Any] = {
        "str": str,
        "float": float,
        "int": int,
        "multi": list[str],
        "bool": bool,
        "toggle": bool,
    }
    param = _inspect.Parameter
    params = [
        param("image", param.POSITIONAL_OR_KEYWORD, annotation=str),
        param("command", param.POSITIONAL_OR_KEYWORD, default=typer.Argument(None), annotation=list[str]),
    ]
    for flag in FLAGS:
        decls = (f"{flag.names[0]}/--no-{flag.names[0][2:]}",) if flag.kind == "toggle" else flag.names
        default = list(flag.default) if flag.kind == "multi" else flag.default
        params.append(
            param(
                flag.dest,
                param.POSITIONAL_OR_KEYWORD,
                annotation=kinds[flag.kind],
                default=typer.Option(default, *decls, help=flag.help),
            )
        )
    return _inspect.Signature(params), {p.name: p.annotation for p in params}


_run.__signature__, _run.__annotations__ = _run_signature()  # type: ignore[attr-defined]
app.command("run", context_settings={"allow_interspersed_args": False})(_run)


def _status_text(rt: LinuxRuntime, data: dict[str, Any]) -> str:
    st = rt._status(data)
    return "running" if st is None else ("exited: " + st.describe())


@app.command("list")
@guarded
def list_(
    as_json: bool = typer.Option(False, "--json"), all_: bool = typer.Option(True, "-a", "--all")
) -> None:
    """Containers (running and stopped)."""
    rt = _runtime()
    states = rt.list_states()
    if as_json:
        emit_json(
            [
                {
                    "id": d["id"],
                    "name": d.get("name"),
                    "image": d.get("image"),
                    "status": _status_text(rt, d),
                    "command": d.get("command"),
                    "created": d.get("created"),
                }
                for d in states
            ]
        )
        return
    rows = [
        (
            d["id"],
            d.get("name") or "",
            d.get("image"),
            _status_text(rt, d),
            " ".join(d.get("command", []))[:40],
        )
        for d in states
    ]
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
    from forge_core.tail import follow as follow_file

    follow_file(path, (lambda: not rt.is_running(rt.state(data["id"]))) if follow else None, 0.1)


@app.command()
@guarded
def stop(refs: list[str], time_: float = typer.Option(10.0, "-t", "--time", min=0)) -> None:
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
        signum = (
            int(signal)
            if signal.isdigit()
            else int(_signal.Signals["SIG" + signal.upper().removeprefix("SIG")])
        )
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
    states = (
        [rt.state(rt.resolve(r)) for r in refs] if refs else [d for d in rt.list_states() if rt.is_running(d)]
    )
    out = []
    for d in states:
        s = anyio.run(rt.stats, rt.handle(d))
        out.append(
            {
                "id": d["id"],
                "name": d.get("name"),
                "cpu_seconds": s.cpu_seconds,
                "memory_bytes": s.memory_bytes,
                "pids": s.pids,
            }
        )
    if as_json:
        emit_json(out)
        return
    table(
        [
            (o["id"], o["name"] or "", f"{o['cpu_seconds']:.2f}s", human_size(o["memory_bytes"]), o["pids"])
            for o in out
        ],
        ["ID", "NAME", "CPU", "MEMORY", "PIDS"],
    )


@app.command("exec", context_settings={"allow_interspersed_args": False})
@guarded
def exec_(
    ref: str,
    command: list[str],
    env: list[str] = typer.Option([], "-e", "--env"),
    user: str = typer.Option(None, "-u", "--user"),
    workdir: str = typer.Option(None, "-w", "--workdir"),
) -> None:
    """Run another command inside a running container."""
    from .._exec import exec_in

    rt = _runtime()
    data = rt.state(rt.resolve(ref))
    raise typer.Exit(exec_in(data, rt.cgroup(data), command, user, workdir, parse_env(env, [])))


@app.command()
@guarded
def inspect(ref: str) -> None:
    """Everything Forge recorded about a container, as JSON."""
    rt = _runtime()
    data = rt.state(rt.resolve(ref))
    data["status"] = _status_text(rt, data)
    emit_json(data)
