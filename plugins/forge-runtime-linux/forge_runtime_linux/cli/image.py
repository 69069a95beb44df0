"""``forge image``: import, build, list, inspect, delete and prune snapshot images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ._common import emit_json, guarded, human_size, table

if TYPE_CHECKING:
    from ..images import SnapshotImageStore

app = typer.Typer(
    help="Snapshot images (root filesystems) for containers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _store() -> SnapshotImageStore:
    from ..images import SnapshotImageStore

    return SnapshotImageStore()


def _image_dict(img: Any) -> dict[str, Any]:
    return {
        "id": img.id,
        "names": list(img.names),
        "size": img.size,
        "created": img.created,
        "rootfs": str(img.rootfs),
        "config": img.config,
    }


@app.command("import")
@guarded
def import_(file: Path, name: str = typer.Option(..., "--name", help="NAME[:TAG]")) -> None:
    """Import a rootfs tarball (.tar/.tar.gz/.tar.zst), an OCI layout or a docker save archive."""
    img = _store().import_sync(file, name)
    typer.echo(img.id)


@app.command()
@guarded
def build(directory: Path, name: str = typer.Option(..., "--name", help="NAME[:TAG]")) -> None:
    """Snapshot a directory as an image."""
    if not directory.is_dir():
        from forge_core.exceptions import ConfigError

        raise ConfigError(f"{directory} is not a directory")
    typer.echo(_store().import_sync(directory, name).id)


@app.command("list")
@guarded
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every image in the store."""
    images = _store().list_sync()
    if as_json:
        emit_json([_image_dict(i) for i in images])
        return
    rows = [
        (
            ", ".join(i.names) or "<none>",
            i.id[7:19],
            human_size(i.size),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(i.created)),
        )
        for i in images
    ]
    table(rows, ["NAME", "ID", "SIZE", "CREATED"])


@app.command()
@guarded
def inspect(ref: str) -> None:
    """Everything known about one image, as JSON."""
    emit_json(_image_dict(_store().get_sync(ref)))


@app.command()
@guarded
def delete(refs: list[str]) -> None:
    """Drop names; content goes once no name and no container uses it."""
    store = _store()
    for ref in refs:
        store.remove_sync(ref)
        typer.echo(ref)


@app.command()
@guarded
def prune() -> None:
    """Delete content no name and no container uses."""
    typer.echo(f"freed {human_size(_store().prune_sync())}")


@app.command()
@guarded
def usage(as_json: bool = typer.Option(False, "--json")) -> None:
    """How much the store holds."""
    import anyio

    u = anyio.run(_store().usage)
    if as_json:
        emit_json({"images": u.images, "bytes": u.bytes, "reclaimable": u.reclaimable})
    else:
        typer.echo(f"{u.images} images, {human_size(u.bytes)}, {human_size(u.reclaimable)} reclaimable")


@app.command()
@guarded
def pull(ref: str) -> None:
    """Not available: no registry is reachable from Forge; import an archive instead."""
    from forge_core.exceptions import Unsupported

    raise Unsupported(
        f"cannot pull {ref!r}: no registry is reachable here; "
        "use `docker save` or an OCI layout and `forge image import FILE --name N`"
    )
