"""Starting one container: journal first, then cgroup and overlay dirs, then the fork.

The fork happens on the calling thread so ``PR_SET_PDEATHSIG`` ties a non-detached container to
this process. The parent reads the child's reports from a close-on-exec pipe (blocking for the
CLI, through anyio for the Runtime): end of file without an error means the command was exec'd.
Imports stay lean (no anyio, attrs or ``forge_core.abc``) for the fast CLI path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

from forge_core.exceptions import BackendUnavailable, NotFound, Unsupported

from . import _cgroups
from ._engine import Engine, alive, start_time
from ._idmap import write_maps  # here, not in _map: the child waits while we would import it

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms (mypy reads it as true)
if TYPE_CHECKING:
    import socket
    from typing import Any

__all__ = ["Pending", "check_request", "finish", "listener", "prepare", "start_blocking"]


def _resolv(network: str) -> str:
    try:
        with open("/etc/resolv.conf") as fh:
            lines = fh.read().splitlines()
    except OSError:
        lines = []
    if network != "host":
        lines = [ln for ln in lines if not (ln.startswith("nameserver") and ("127." in ln or "::1" in ln))]
    return "\n".join(lines) + "\n"


def check_request(engine: Engine, req: dict[str, Any]) -> None:
    """Refusals that need no image: what the runtime cannot do here, said before anything is made."""
    if any(p[3] not in ("tcp", "udp") for p in req["ports"]):
        raise Unsupported("only tcp and udp ports can be published")
    if req["ports"] and req["network"] != "private":
        raise Unsupported(
            f"ports are published into a private network; with network {req['network']!r} "
            "there is nothing to publish into (use --network private, the default)"
        )
    if engine.rootless and not engine.userns:
        raise Unsupported(
            "userns=False (--userns host) needs root: rootless containers always run in a user namespace"
        )
    for vol in req["volumes"]:
        if not os.path.isabs(vol["source"]) or not os.path.exists(vol["source"]):
            raise NotFound(f"volume source {vol['source']!r} does not exist (use an absolute host path)")
    _cgroups.refuse_unenforceable(req["resources"])
    if req.get("name") and any(d.get("name") == req["name"] for d in engine.list_states()):
        raise Unsupported(f"a container named {req['name']!r} already exists; delete it first")


def _plan(engine: Engine, cid: str, req: dict[str, Any], image: dict[str, Any], cdir: str) -> dict[str, Any]:
    """The journal entry: the request (ContainerSpec fields as plain data) made concrete."""
    cfg = image["config"]
    env = dict(str(item).partition("=")[::2] for item in cfg.get("Env") or [])
    env.update(req["env"])
    pid = os.getpid()
    return {
        "id": cid,
        "name": req.get("name"),
        "image": req["image"],
        "image_id": image["id"],
        "command": list(req["command"]),
        "env": env,
        "hostname": req.get("hostname") or cid,
        "workdir": req.get("workdir") or cfg.get("WorkingDir") or "/",
        "user": req.get("user") or cfg.get("User") or None,
        "network": req["network"],
        "detach": req["detach"],
        "init": engine.init,
        "userns": engine.rootless or engine.userns,
        "rootless": engine.rootless,
        "volumes": req["volumes"],
        "tmpfs": req["tmpfs"],
        "ports": req["ports"],
        "resources": req["resources"],
        "labels": req.get("labels", {}),
        "dir": cdir,
        # a cgroup only when a limit asks for one: joining a v1 cgroup costs ~10 ms (an RCU grace
        # period); the PID namespace already ends every process with PID 1, and stats scan it
        "cgroup": f"{engine.tag}/{cid}" if req["resources"] else None,
        "lower": str(image["rootfs"]),
        "upper": os.path.join(cdir, "upper"),
        "work": os.path.join(cdir, "work"),
        "merged": os.path.join(cdir, "merged"),
        "overlay": True,
        "resolv": _resolv(req["network"]),
        "log": req.get("log_path") or (os.path.join(cdir, "log") if req["detach"] else None),
        "status": "creating",
        "created": time.time(),
        "parent": pid,
        "creator": pid,
        "creator_start": start_time(pid),
    }


def _id_base(plan: dict[str, Any]) -> int:
    """The host uid container root maps to: as root, the owner the image's files were shifted to."""
    if not plan["userns"] or plan["rootless"]:
        return 0
    base = os.stat(plan["lower"]).st_uid
    if base == 0:
        raise Unsupported(
            f"image {plan['image']} keeps host root as its files' owner (imported with uid_shift=0), "
            "so container root in a user namespace could not use them; re-import it with the default "
            "uid shift, or run with --userns host (userns=False)"
        )
    return base


def listener(host_ip: str, port: int, protocol: str = "tcp") -> socket.socket:
    """A host-side socket for a published port (listening for tcp), bound before the fork."""
    import socket

    try:
        if protocol == "tcp":
            return socket.create_server((host_ip, port))
        sock = socket.socket(socket.AF_INET6 if ":" in host_ip else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host_ip, port))
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise BackendUnavailable(f"cannot publish {host_ip}:{port}/{protocol}: {exc.strerror}") from None


class Pending:
    """A container between its fork and the end of its start reports."""

    __slots__ = ("buf", "go_w", "pid", "plan", "reports", "shift", "sync_r")

    def __init__(self, plan: dict[str, Any], pid: int, sync_r: int, go_w: int, shift: int) -> None:
        self.plan, self.pid, self.sync_r, self.go_w, self.shift = plan, pid, sync_r, go_w, shift
        self.buf = b""
        self.reports: list[dict[str, Any]] = []

    def feed(self) -> bool:
        """Read what the child reported (the pipe is readable); ``False`` at end of file."""
        chunk = os.read(self.sync_r, 65536)
        if not chunk:
            return False
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            self.reports.append(_map(int(msg["map"]), self.shift, self.go_w) if "map" in msg else msg)
        return True


def prepare(
    engine: Engine, req: dict[str, Any], image: dict[str, Any], stdio: tuple[int, int, int] | None
) -> Pending:
    """Journal, cgroup, overlay dirs, published sockets, then fork the supervisor; on failure
    everything made is removed."""
    cid = os.urandom(6).hex()
    cdir = os.path.join(engine.dir, cid)
    try:
        os.mkdir(cdir, 0o711)
    except FileNotFoundError:
        os.makedirs(engine.dir, exist_ok=True)
        os.chmod(engine.dir, 0o711)  # noqa: S103 -- traverse only: mapped container roots reach their overlay
        os.mkdir(cdir, 0o711)
    plan = _plan(engine, cid, req, image, cdir)
    engine.write_state(cid, plan)  # the journal entry exists before anything it names
    fds: list[int] = []
    listeners: list[tuple[socket.socket, int]] = []
    try:
        cgroup = engine.cgroup(plan)
        cgroup.create(plan["resources"])
        shift = _id_base(plan)
        for key in ("upper", "work", "merged"):
            os.mkdir(plan[key], 0o755)
            if shift:
                os.chown(plan[key], shift, shift)
        listeners = [(listener(ip, hp, proto), cp) for ip, hp, cp, proto in plan["ports"]]
        fds = _stdio_fds(plan) if stdio is None else []
        return _fork(engine, plan, cgroup, fds or list(stdio or ()), listeners, shift)
    except BaseException:
        engine.remove(cid)
        raise
    finally:
        for fd in set(fds):
            os.close(fd)
        for sock, _ in listeners:
            sock.close()


def _stdio_fds(plan: dict[str, Any]) -> list[int]:
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if plan["log"]:
        out = os.open(plan["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        return [devnull, out, out]
    return [devnull, devnull, devnull]


def _fork(
    engine: Engine,
    plan: dict[str, Any],
    cgroup: _cgroups.Cgroup,
    stdio: list[int],
    listeners: list[tuple[socket.socket, int]],
    shift: int,
) -> Pending:
    from . import _child

    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(sync_r)
            os.close(go_w)
            _child.supervise({**plan, "stdio": stdio}, cgroup, sync_w, go_r, listeners)
        finally:
            os._exit(1)
    engine.children.add(pid)
    os.close(sync_w)
    os.close(go_r)
    return Pending(plan, pid, sync_r, go_w, shift)


def finish(engine: Engine, pending: Pending) -> dict[str, Any]:
    """Close the start pipes, raise the child's error if it reported one, else journal the
    running container and return its state."""
    os.close(pending.sync_r)
    os.close(pending.go_w)
    plan = pending.plan
    if plan["detach"]:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pending.pid, 0)
    error = next((r for r in pending.reports if "error" in r), None)
    started = next((r for r in pending.reports if "pid" in r), None)
    if error is not None or started is None:
        engine.remove(plan["id"])
        message = error["error"] if error else "container supervisor died during start"
        if error and error.get("kind") == "notfound":
            raise NotFound(message)
        raise BackendUnavailable(message)
    plan.update(
        status="running",
        pid=started["pid"],
        pid_start=start_time(started["pid"]),
        sup_pid=started["sup"],
        sup_start=start_time(started["sup"]),
    )
    if not alive(plan["sup_pid"], plan["sup_start"]):
        plan["sup_start"] = "gone"
    engine.write_state(plan["id"], plan)
    return plan


def start_blocking(
    engine: Engine, req: dict[str, Any], image: dict[str, Any], stdio: tuple[int, int, int] | None
) -> dict[str, Any]:
    """Start a container, blocking this thread until its command was exec'd (or failed)."""
    pending = prepare(engine, req, image, stdio)
    try:
        while pending.feed():
            pass
    except BaseException:
        finish_quietly(engine, pending)
        raise
    return finish(engine, pending)


def finish_quietly(engine: Engine, pending: Pending) -> None:
    """Abandon a start part-way (an error or a cancellation while reading the reports), killing
    whatever already runs: the command may have been exec'd before its end-of-file was read."""
    with contextlib.suppress(ProcessLookupError):  # a non-detached supervisor; init follows it
        os.kill(pending.pid, signal.SIGKILL)  # (PDEATHSIG), which ends the reports too
    ended = _drain(pending)  # a detached supervisor is no child of ours: its report names it
    for report in pending.reports:
        for key in ("pid", "sup"):
            if key in report:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(report[key]), signal.SIGKILL)
    for fd in (pending.sync_r, pending.go_w):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pending.pid, 0 if ended else os.WNOHANG)[0]:
            engine.children.discard(pending.pid)
    engine.remove(pending.plan["id"])


def _drain(pending: Pending, limit: float = 5.0) -> bool:
    """Read the child's remaining reports until end of file (``True``) or ``limit`` seconds."""
    import select

    deadline = time.monotonic() + limit
    with contextlib.suppress(OSError, ValueError):
        while (left := deadline - time.monotonic()) > 0:
            if select.select([pending.sync_r], [], [], left)[0] and not pending.feed():
                return True
    return False


def _map(pid: int, shift: int, go_w: int) -> dict[str, Any]:
    """Write the supervisor's id maps and let it go on; a failure becomes its error report."""
    try:
        write_maps(pid, shift)
    except OSError as exc:
        os.write(go_w, b"0")
        return {"error": f"cannot write the user namespace's id maps: {exc}", "kind": "backend"}
    os.write(go_w, b"1")
    return {"mapped": pid}
