"""``forge plugins list`` and ``forge system usage|prune``: what is installed, what Forge
keeps on disk, and keeping it bounded."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from ._common import JsonOption, emit_json, guard, open_home

plugins_app = typer.Typer(help="Installed plugins and whether they work here.", no_args_is_help=True,
                          rich_markup_mode=None)
system_app = typer.Typer(help="Forge's own data: usage and pruning.", no_args_is_help=True,
                         rich_markup_mode=None)


@plugins_app.command("list")
def plugins_list(as_json: bool = JsonOption) -> None:
    """Every plugin of every group: distribution, version, usable here or why not."""
    from .. import plugins

    with guard():
        infos = plugins.list_plugins()
        if as_json:
            emit_json(infos)
            return
        current = None
        for info in infos:
            if info.group != current:
                current = info.group
                typer.echo(f"{plugins.GROUPS[info.group][0]}:")
            status = "usable" if info.usable else f"not usable: {info.reason}"
            typer.echo(f"  {info.name:<12} {info.distribution} {info.version:<8} {status}")
            if info.error:
                typer.echo(f"      error: {info.error}")


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@system_app.command("usage")
def system_usage(as_json: bool = JsonOption) -> None:
    """Disk used under $FORGE_HOME: state database, task logs, queue, images."""
    with guard():
        home, store = open_home()
        parts = {
            "state": sum(_size(home / f"state.db{s}") for s in ("", "-wal", "-shm")),
            "logs": _size(home / "logs"),
            "queue": sum(_size(home / f"queue.db{s}") for s in ("", "-wal", "-shm")),
            "images": _size(home / "images"),
            "containers": _size(home / "containers"),
        }
        counts = store.counts()
        if as_json:
            emit_json({"home": str(home), "bytes": parts, "rows": counts})
            return
        typer.echo(f"FORGE_HOME {home}")
        for name, size in parts.items():
            typer.echo(f"  {name:<11} {size / 1e6:10.2f} MB")
        typer.echo("  rows: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@system_app.command("prune")
def system_prune(
    keep: int = typer.Option(100, "--keep", min=0, help="Finished runs to keep per workflow."),
    as_json: bool = JsonOption,
) -> None:
    """Delete finished runs beyond the newest KEEP per workflow, with their logs."""
    with guard():
        home, store = open_home()
        victims = store.prune(keep)
        for run in victims:
            shutil.rmtree(home / "logs" / run.run_id, ignore_errors=True)
        store.vacuum()
        if as_json:
            emit_json({"deleted_runs": [r.run_id for r in victims]})
        else:
            typer.echo(f"deleted {len(victims)} run(s)")


@system_app.command("gc")
def system_gc(as_json: bool = JsonOption) -> None:
    """Reconcile what crashed Forge processes left behind (containers, cgroups, mounts) and
    drop orphaned task logs."""
    from .. import plugins
    from ..exceptions import PluginError

    with guard():
        home, store = open_home()
        removed: list[str] = []
        try:
            runtime = plugins.create("runtime", "linux")
        except PluginError:
            runtime = None  # no container runtime installed or usable: nothing of it to collect
        collect = getattr(runtime, "gc", None)
        if collect is not None:
            removed.extend(collect())
        logs = home / "logs"
        if logs.is_dir():
            known = {r.run_id for r in store.list_runs(limit=1_000_000)}
            for folder in logs.iterdir():
                if folder.name not in known:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(f"logs/{folder.name}")
        if as_json:
            emit_json({"removed": removed})
        else:
            typer.echo(f"removed {len(removed)} leftover(s)")
            for item in removed:
                typer.echo(f"  {item}")
