"""Image references resolved on disk without the store object: ``NAME[:TAG]`` or an id prefix
to the content directory and its metadata. Lean (no attrs) for the fast CLI path; the
``snapshot`` store uses the same functions. Paths are ``str`` or ``os.PathLike`` and joined
with :mod:`os.path` (importing :mod:`pathlib` would cost the fast path ~3 ms)."""

from __future__ import annotations

import json
import os

from forge_core.exceptions import ConfigError, NotFound

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    from typing import Any

    StrPath = str | os.PathLike[str]

__all__ = ["lookup", "parse_ref", "read_refs"]


def parse_ref(ref: str) -> str:
    """``NAME[:TAG]`` with the tag defaulting to ``latest``."""
    name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    if not name or any(c.isspace() for c in ref):
        raise ConfigError(f"bad image name {ref!r}; use NAME[:TAG]")
    return f"{name}:{tag or 'latest'}"


def read_refs(root: StrPath) -> dict[str, str]:
    path = os.path.join(root, "refs.json")
    try:
        with open(path) as fh:
            data: Any = json.load(fh)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ConfigError(f"{path} is corrupt; fix or delete it") from None
    return {str(k): str(v) for k, v in data.items()}


def digest_of(root: StrPath, ref: str, refs: dict[str, str]) -> str:
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
    try:
        found = [name for name in os.listdir(os.path.join(root, "content")) if name.startswith(hexpart)]
    except FileNotFoundError:
        found = []
    if len(found) != 1:
        what = "no image" if not found else "more than one image"
        raise NotFound(f"{what} matches {ref!r}; see: forge image list")
    return "sha256:" + found[0]


def meta(root: StrPath, digest: str) -> dict[str, Any]:
    """``meta.json`` of one content directory."""
    try:
        with open(os.path.join(root, "content", digest.removeprefix("sha256:"), "meta.json")) as fh:
            data: dict[str, Any] = json.load(fh)
    except (OSError, ValueError):
        raise NotFound(f"image {digest} is not in the store") from None
    return data


def lookup(root: StrPath, ref: str) -> dict[str, Any]:
    """``{"id", "rootfs", "config"}`` of the image ``ref`` names in the store at ``root``."""
    digest = digest_of(root, ref, read_refs(root))
    data = meta(root, digest)
    return {
        "id": digest,
        "rootfs": os.path.join(root, "content", digest.removeprefix("sha256:"), "rootfs"),
        "config": dict(data.get("config") or {}),
    }
