"""Starting one container: journal first, then cgroup and overlay dirs, then the fork.

The fork happens on the calling (event-loop) thread so ``PR_SET_PDEATHSIG`` ties a
non-detached container to this process. The parent reads the child's reports from a
close-on-exec pipe: end of file without an error means the command was exec'd.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from forge_core.abc import ContainerSpec, Handle, Image
from forge_core.exceptions import BackendUnavailable, NotFound, Unsupported

from . import _cgroups
from .runtime import _alive, _resolv, _start_time, listener

if TYPE_CHECKING:
    from .runtime import LinuxRuntime


def _plan(rt: LinuxRuntime, cid: str, spec: ContainerSpec, image: Image, cdir: Path) -> dict[str, Any]:
    cfg = image.config
    env = {}
    for item in cfg.get("Env") or []:  # type: ignore[attr-defined]
        key, _, value = str(item).partition("=")
        env[key] = value
    env.update(spec.env)
    hostname = spec.hostname or cid
    return {
        "id": cid, "name": spec.name, "image": spec.image, "image_id": image.id,
        "command": list(spec.command), "env": env, "hostname": hostname,
        "workdir": spec.workdir or cfg.get("WorkingDir") or "/", "user": spec.user or cfg.get("User") or None,
        "network": spec.network, "detach": spec.detach, "init": rt._config.init,
        "userns": rt.rootless or rt._config.userns, "rootless": rt.rootless,
        "volumes": [{"source": v.source, "target": v.target, "read_only": v.read_only} for v in spec.volumes],
        "tmpfs": list(spec.tmpfs), "ports": [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in spec.ports],
        "resources": {k: getattr(spec.resources, k) for k in spec.resources.asked()},
        "labels": dict(spec.labels), "cgroup": f"{rt.tag}/{cid}", "dir": str(cdir),
        "lower": str(image.rootfs), "upper": str(cdir / "upper"), "work": str(cdir / "work"),
        "merged": str(cdir / "merged"), "overlay": True, "resolv": _resolv(spec.network),
        "log": str(spec.log_path) if spec.log_path else (str(cdir / "log") if spec.detach else None),
        "status": "creating", "created": time.time(), "parent": os.getpid(),
        "creator": os.getpid(), "creator_start": _start_time(os.getpid()),
    }


def _stdio_fds(plan: dict[str, Any], stdio: tuple[int, int, int] | None) -> list[int]:
    if stdio is not None:
        return list(stdio)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if plan["log"]:
        out = os.open(plan["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        return [devnull, out, out]
    return [devnull, devnull, devnull]


def _prepare_dirs(plan: dict[str, Any], shift: int) -> None:
    for key in ("upper", "work", "merged"):
        os.mkdir(plan[key], 0o755)
        if shift:
            os.chown(plan[key], shift, shift)


def _id_base(plan: dict[str, Any], image: Image) -> int:
    """The host uid container root maps to: as root, the owner the image's files were shifted to."""
    if not plan["userns"] or plan["rootless"]:
        return 0
    base = os.stat(image.rootfs).st_uid
    if base == 0:
        raise Unsupported(
            f"image {plan['image']} keeps host root as its files' owner (imported with uid_shift=0), "
            "so container root in a user namespace could not use them; re-import it with the default "
            "uid shift, or run with --userns host (userns=False)"
        )
    return base


async def launch(rt: LinuxRuntime, cid: str, spec: ContainerSpec, image: Image, stdio: tuple[int, int, int] | None) -> Handle:
    cdir = rt.containers_dir / cid
    rt.containers_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(rt.containers_dir, 0o711)
    cdir.mkdir(mode=0o711)
    plan = _plan(rt, cid, spec, image, cdir)
    rt.write_state(cid, plan)  # the journal entry exists before anything it names
    cgroup = _cgroups.Cgroup(rt._layout, plan["cgroup"])
    fds: list[int] = []
    listeners = []
    try:
        cgroup.create(spec.resources)
        shift = _id_base(plan, image)
        _prepare_dirs(plan, shift if plan["userns"] and not plan["rootless"] else 0)
        listeners = [(listener(ip, hp, proto), cp) for ip, hp, cp, proto in plan["ports"]]
        fds = _stdio_fds(plan, stdio) if stdio is None else []
        handle = await _fork(rt, plan, cgroup, fds or list(stdio or ()), listeners, shift)
    except BaseException:
        with anyio.CancelScope(shield=True):
            rt.remove_sync(cid)
        raise
    finally:
        for fd in set(fds):
            os.close(fd)
        for sock, _ in listeners:
            sock.close()
    return handle


async def _fork(rt: LinuxRuntime, plan: dict[str, Any], cgroup: _cgroups.Cgroup, stdio: list[int],
                listeners: list[Any], shift: int) -> Handle:
    from . import _child

    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    child_plan = {**plan, "stdio": stdio}
    pid = os.fork()
    if pid == 0:
        try:
            os.close(sync_r)
            os.close(go_w)
            _child.supervise(child_plan, cgroup, sync_w, go_r, listeners)
        finally:
            os._exit(1)
    rt.remember_child(pid)
    os.close(sync_w)
    os.close(go_r)
    try:
        reports = await _read_reports(sync_r, go_w, shift)
    finally:
        os.close(sync_r)
        os.close(go_w)
    if plan["detach"]:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    error = next((r for r in reports if "error" in r), None)
    started = next((r for r in reports if "pid" in r), None)
    if error is not None or started is None:
        message = error["error"] if error else "container supervisor died during start"
        if error and error.get("kind") == "notfound":
            raise NotFound(message)
        raise BackendUnavailable(message)
    plan.update(status="running", pid=started["pid"], pid_start=_start_time(started["pid"]),
                sup_pid=started["sup"], sup_start=_start_time(started["sup"]))
    if not _alive(plan["sup_pid"], plan["sup_start"]):
        plan["sup_start"] = "gone"
    rt.write_state(plan["id"], plan)
    return rt.handle(plan)


async def _read_reports(sync_r: int, go_w: int, shift: int) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    buf = b""
    while True:
        await anyio.wait_readable(sync_r)
        chunk = os.read(sync_r, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "map" in msg:
                msg = _map(int(msg["map"]), shift, go_w)
            reports.append(msg)
    return reports


def _map(pid: int, shift: int, go_w: int) -> dict[str, Any]:
    """Write the supervisor's id maps and let it go on; a failure becomes its error report."""
    from ._idmap import write_maps

    try:
        write_maps(pid, shift)
    except OSError as exc:
        os.write(go_w, b"0")
        return {"error": f"cannot write the user namespace's id maps: {exc}", "kind": "backend"}
    os.write(go_w, b"1")
    return {"mapped": pid}
