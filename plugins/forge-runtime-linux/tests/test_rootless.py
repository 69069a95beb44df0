"""Rootless containers: a normal user runs busybox in a user namespace where it is root, limits it
cannot enforce are refused, and published ports reach the container through a userspace relay.

The interpreter lives under ``/root``, which a normal user cannot read, so the scenario runs in a
child that imports everything it needs as root and then drops to the test user for good (all
uids, gids and capabilities, as ``setpriv`` would), before touching the runtime.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.linux, pytest.mark.root]

USER = "forge-rootless"

SCENARIO = r"""
import ctypes, json, os, socket, sys, time
import anyio, anyio._backends._asyncio, encodings.idna
from forge_core.abc import ContainerSpec, PortMapping, Resources
from forge_core.exceptions import ForgeError
from forge_runtime_linux import _child, _exec, _formats, _idmap, _launch, _relay, _tarsafe, images, runtime

uid, gid, home, tar, tcp_port, udp_port = sys.argv[1:]
os.setgroups([])
os.setresgid(int(gid), int(gid), int(gid))
os.setresuid(int(uid), int(uid), int(uid))
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as for any process a user execs
os.environ["FORGE_HOME"] = home
out = {"euid": os.geteuid(), "available": str(runtime.LinuxRuntime.available())}
store = images.SnapshotImageStore()
store.import_sync(__import__("pathlib").Path(tar), "busybox:test")
rt = runtime.LinuxRuntime(image_store=store)

async def run(script, **fields):
    log = os.path.join(home, "out.log")
    open(log, "w").close()
    status, _ = await rt.run(ContainerSpec(command=("/bin/sh", "-c", script), image="busybox:test",
                                           log_path=__import__("pathlib").Path(log), **fields), timeout=60)
    return status.exit_code, open(log).read()

async def refused(runtime_, **fields):
    try:
        handle = await runtime_.start(ContainerSpec(command=("true",), image="busybox:test", **fields))
    except ForgeError as exc:
        return f"{type(exc).__name__}: {exc}"
    await runtime_.remove(handle)
    return "started"

async def published(port, proto, script, ask):
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    ports = (PortMapping(host_port=port, container_port=53, protocol=proto),)
    handle = await rt.start(ContainerSpec(command=("/bin/sh", "-c", script), image="busybox:test",
                                          network="private", ports=ports))
    answer = b""
    try:
        with anyio.move_on_after(20):
            while not answer:
                try:
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.settimeout(0.5)
                        s.connect(("127.0.0.1", port))
                        s.send(ask)
                        answer = s.recv(100)
                except OSError:
                    await anyio.sleep(0.05)
    finally:
        await rt.remove(handle)
    return answer.decode()

async def main():
    out["inside"] = await run("cat /proc/self/uid_map; id -u; touch /etc/made && echo wrote-etc")
    out["memory"] = await refused(rt, resources=Resources(memory=64 << 20))
    host_ids = runtime.LinuxRuntime(runtime.LinuxRuntime.Config(userns=False), image_store=store)
    out["host_ids"] = await refused(host_ids)
    server = "while true; do echo hello | nc -l -p 53; done"
    out["tcp"] = await published(int(tcp_port), "tcp", server, b"hi\n")
    out["left"] = [d["id"] for d in rt.list_states()]

anyio.run(main)
print(json.dumps(out))
"""


RANGED_USER = "forge-rootless-ranged"
RANGED_BASE = 2_000_000  # its /etc/subuid and /etc/subgid range, clear of root's (1,000,000)


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _ensure_subordinate_range(name: str) -> None:
    for table in (Path("/etc/subuid"), Path("/etc/subgid")):
        text = table.read_text() if table.exists() else ""
        if not any(line.split(":")[0] == name for line in text.splitlines()):
            table.write_text(f"{text}{name}:{RANGED_BASE}:65536\n")


@pytest.fixture(scope="module", params=[USER, RANGED_USER])
def user(request: pytest.FixtureRequest) -> pwd.struct_passwd:
    """A normal user with no subordinate ids (a one-id map), and one with an /etc/subuid range
    (mapped through newuidmap/newgidmap)."""
    if not shutil.which("useradd"):
        pytest.skip("needs useradd (passwd package)")
    if request.param == RANGED_USER:
        if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
            pytest.skip("needs newuidmap/newgidmap (uidmap package)")
        _ensure_subordinate_range(RANGED_USER)
    return _ensure_user(request.param)


@pytest.fixture
def user_home(user: pwd.struct_passwd, busybox_tar: Path) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="forge-rootless-"))
    home.chmod(0o755)
    shutil.copy(busybox_tar, home / "busybox.tar.gz")
    for path in (home, home / "busybox.tar.gz"):
        os.chown(path, user.pw_uid, user.pw_gid)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scenario(user: pwd.struct_passwd, home: Path) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-c",
        SCENARIO,
        str(user.pw_uid),
        str(user.pw_gid),
        str(home / "forge"),
        str(home / "busybox.tar.gz"),
        str(free_port()),
        str(free_port(socket.SOCK_DGRAM)),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class TestRootless:
    """What a normal user gets from the linux runtime."""

    def test_normal_user_runs_a_container_as_its_own_root(
        self, user: pwd.struct_passwd, user_home: Path
    ) -> None:
        """Rootless, container root is the user itself (and ids 1.. its subordinate range when it
        has one, through newuidmap), it owns the image's files,
        limits are refused naming why, and a published tcp port answers from the host."""
        out = scenario(user, user_home)
        assert out["euid"] == user.pw_uid
        assert out["available"] == "yes"
        code, text = out["inside"]
        assert code == 0
        ranged = ["1", str(RANGED_BASE), "65535"] if user.pw_name == RANGED_USER else []
        assert text.split() == ["0", str(user.pw_uid), "1", *ranged, "0", "wrote-etc"]
        assert out["memory"].startswith("Unsupported: cannot enforce memory rootless")
        assert out["host_ids"].startswith("Unsupported: userns=False (--userns host) needs root")
        assert out["tcp"] == "hello\n"
        assert out["left"] == []
        owners = {p.stat().st_uid for p in (user_home / "forge").rglob("*") if not p.is_symlink()}
        assert owners == {user.pw_uid}
