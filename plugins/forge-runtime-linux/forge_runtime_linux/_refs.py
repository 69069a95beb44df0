"""Image references resolved on disk without the store object: ``NAME[:TAG]`` or an id prefix
to the content directory and its metadata. Lean (no attrs) for the fast CLI path; the
``snapshot`` store uses the same functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forge_core.exceptions import ConfigError, NotFound

__all__ = ["lookup", "parse_ref", "read_refs"]


def parse_ref(ref: str) -> str:
    """``NAME[:TAG]`` with the tag defaulting to ``latest``."""
    name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    if not name or any(c.isspace() for c in ref):
        raise ConfigError(f"bad image name {ref!r}; use NAME[:TAG]")
    return f"{name}:{tag or 'latest'}"


def read_refs(root: Path) -> dict[str, str]:
    try:
        with open(root / "refs.json") as fh:
            data: Any = json.load(fh)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ConfigError(f"{root / 'refs.json'} is corrupt; fix or delete it") from None
    return {str(k): str(v) for k, v in data.items()}


def digest_of(root: Path, ref: str, refs: dict[str, str]) -> str:
    """The content id ``ref`` names: a ``NAME[:TAG]`` in ``refs`` or a unique id prefix."""
    if not ref.startswith("sha256:"):
        try:
            digest = refs.get(parse_ref(ref))
        except ConfigError:
            digest = None
        if digest is not None:
            return digest
    hexpart = ref.removeprefix("sha256:")
    if len(hexpart) < 4 or any(c not in "0123456789abcdef" for c in hexpart):
        raise NotFound(f"no image named {ref!r}; see: forge image list")
    content = root / "content"
    found = [p.name for p in content.iterdir() if p.name.startswith(hexpart)] if content.exists() else []
    if len(found) != 1:
        what = "no image" if not found else "more than one image"
        raise NotFound(f"{what} matches {ref!r}; see: forge image list")
    return "sha256:" + found[0]


def meta(root: Path, digest: str) -> dict[str, Any]:
    """``meta.json`` of one content directory."""
    try:
        with open(root / "content" / digest.removeprefix("sha256:") / "meta.json") as fh:
            data: dict[str, Any] = json.load(fh)
    except (OSError, ValueError):
        raise NotFound(f"image {digest} is not in the store") from None
    return data


def lookup(root: Path, ref: str) -> dict[str, Any]:
    """``{"id", "rootfs", "config"}`` of the image ``ref`` names in the store at ``root``."""
    digest = digest_of(root, ref, read_refs(root))
    data = meta(root, digest)
    return {
        "id": digest,
        "rootfs": str(root / "content" / digest.removeprefix("sha256:") / "rootfs"),
        "config": dict(data.get("config") or {}),
    }
