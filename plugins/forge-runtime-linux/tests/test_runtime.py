"""Isolation, limits and networking of the linux runtime, asserted from inside busybox containers."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from forge_runtime_linux import _cgroups
from forge_runtime_linux.runtime import LinuxRuntime

from forge_core.abc import ContainerSpec, ExitStatus, PortMapping, Resources, Volume
from forge_core.exceptions import NotFound, Unsupported

from .conftest import host_python

pytestmark = [pytest.mark.linux, pytest.mark.root, pytest.mark.anyio]


async def sh(rt: LinuxRuntime, tmp_path: Path, script: str, **fields: Any) -> tuple[ExitStatus, str]:
    log = tmp_path / "out.log"
    log.write_text("")
    spec = ContainerSpec(command=("/bin/sh", "-c", script), image="busybox:test", log_path=log, **fields)
    status, _ = await rt.run(spec, timeout=60)
    return status, log.read_text()


class TestIsolation:
    """A container sees only itself: its PID namespace, hostname, filesystem and devices."""

    async def test_pid_1_is_the_command_without_init(self, busybox_image: str, tmp_path: Path) -> None:
        """With init off, PID 1 inside is the command itself and no host process is visible."""
        rt = LinuxRuntime(LinuxRuntime.Config(init=False))
        status, out = await sh(
            rt, tmp_path, "echo $$; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n"
        )
        assert status.ok
        assert out.split() == ["1", "1"]  # the shell is PID 1 and the only process

    async def test_default_init_reaps_orphaned_zombies(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """The init shim is PID 1, the command its child, and an orphan that exits is reaped."""
        script = "(sleep 0.1 &) ; sleep 0.5; echo $$; ps -o pid,stat,comm | grep -c ' Z ' || true"
        status, out = await sh(runtime, tmp_path, script)
        assert status.ok
        assert out.split() == ["2", "0"]

    async def test_hostname_and_etc_files_are_the_containers(
        self, runtime: LinuxRuntime, tmp_path: Path
    ) -> None:
        """hostname, /etc/hostname and /etc/hosts carry the container's name."""
        status, out = await sh(
            runtime, tmp_path, "hostname; cat /etc/hostname; grep -c box1 /etc/hosts", hostname="box1"
        )
        assert status.ok
        assert out.split() == ["box1", "box1", "1"]

    async def test_host_files_and_processes_are_invisible(
        self, runtime: LinuxRuntime, tmp_path: Path
    ) -> None:
        """The host's files (this test's tmp dir) and processes (this pytest) are not visible."""
        marker = tmp_path / "host-only"
        marker.write_text("secret")
        status, out = await sh(
            runtime,
            tmp_path,
            f"test -e {marker} && echo seen; test -e /proc/{os.getpid()} && echo pid-seen; ls /; true",
        )
        assert status.ok
        assert "seen" not in out
        assert sorted(out.split()) == ["bin", "dev", "etc", "proc", "root", "sys", "tmp"]

    async def test_image_is_never_modified(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """Deleting /bin in one container leaves the image and the next container intact."""
        status, _ = await sh(runtime, tmp_path, "rm -rf /bin/ls /etc/passwd; true")
        assert status.ok
        status, out = await sh(runtime, tmp_path, "ls /bin/ls; cat /etc/passwd | head -1")
        assert status.ok
        assert "root:x:0:0" in out

    async def test_privileges_are_reduced(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """no_new_privs is set, a seccomp filter is loaded, CAP_SYS_ADMIN is gone and mount fails."""
        script = (
            "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; grep CapBnd /proc/self/status; "
            "mount -t tmpfs none /mnt 2>/dev/null && echo mounted; true"
        )
        _, out = await sh(runtime, tmp_path, script)
        lines = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
        assert lines["NoNewPrivs"] == "1"
        assert lines["Seccomp"] == "2"
        assert not int(lines["CapBnd"], 16) & (1 << 21)  # CAP_SYS_ADMIN
        assert "mounted" not in out

    async def test_sys_is_read_only_and_dev_minimal(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """/sys refuses writes and /dev holds only the usual harmless nodes."""
        _, out = await sh(runtime, tmp_path, "touch /sys/x 2>/dev/null && echo wrote; ls /dev")
        assert "wrote" not in out
        assert set(out.split()) == {
            "full",
            "null",
            "random",
            "tty",
            "urandom",
            "zero",
            "fd",
            "stdin",
            "stdout",
            "stderr",
            "ptmx",
            "pts",
            "shm",
        }

    async def test_no_forge_descriptor_leaks_in(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """Only stdin, stdout and stderr are open in the command."""
        _, out = await sh(runtime, tmp_path, "ls /proc/self/fd")
        assert out.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory handle


class TestSpecFields:
    """env, workdir, user, volumes and tmpfs reach the command."""

    async def test_user_workdir_env(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """-u, -w and -e are applied."""
        status, out = await sh(
            runtime,
            tmp_path,
            "id -u; pwd; echo $GREETING",
            user="nobody",
            workdir="/tmp",
            env={"GREETING": "hi there"},
        )
        assert status.ok
        assert out.splitlines() == ["65534", "/tmp", "hi there"]

    async def test_read_only_volume_and_tmpfs(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """A read-only volume is readable but not writable; a tmpfs is writable."""
        share = tmp_path / "share"
        share.mkdir()
        (share / "data").write_text("from host\n")
        script = "cat /data/data; touch /data/x 2>/dev/null && echo wrote; touch /scratch/y && echo tmpfs-ok"
        _, out = await sh(
            runtime,
            tmp_path,
            script,
            tmpfs=("/scratch",),
            volumes=(Volume(source=str(share), target="/data", read_only=True),),
        )
        assert out.split() == ["from", "host", "tmpfs-ok"]
        assert not (share / "x").exists()

    async def test_missing_image_is_not_found(self, runtime: LinuxRuntime) -> None:
        """An unknown image ref is NotFound before anything is created."""
        with pytest.raises(NotFound):
            await runtime.start(ContainerSpec(command=("true",), image="nope:1"))
        assert await runtime.list() == []


class TestLimits:
    """cgroup limits are enforced, and a limit that cannot be is refused."""

    async def test_memory_hog_is_oom_killed(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """A shell growing a string past --memory is killed and reported oom_killed."""
        status, _ = await sh(
            runtime, tmp_path, "x=aaaaaaaa; while true; do x=$x$x; done", resources=Resources(memory=32 << 20)
        )
        assert status.oom_killed
        assert not status.ok

    async def test_fork_bomb_is_capped_by_pids_limit(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """With pids=20, starting 40 sleepers fails beyond the cap."""
        script = (
            "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done) 2>&1; "
            "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo count=$n"
        )
        _, out = await sh(runtime, tmp_path, script, resources=Resources(pids=20))
        assert "can't fork" in out
        assert 0 < int(out.split("count=")[1]) <= 20

    async def test_cpu_quota_is_written(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """--cpus 0.5 becomes a 50000/100000 CFS quota on the container's cgroup."""
        handle = await runtime.start(
            ContainerSpec(command=("sleep", "30"), image="busybox:test", resources=Resources(cpus=0.5))
        )
        try:
            data = runtime.state(handle.id)
            cg = runtime.cgroup(data)
            files = [Path(d, name) for d in cg.dirs() for name in ("cpu.cfs_quota_us", "cpu.max")]
            values = {f.read_text().split()[0] for f in files if f.exists()}
            assert values == {"50000"}
        finally:
            await runtime.remove(handle)

    async def test_unenforceable_limit_is_refused(self, runtime: LinuxRuntime) -> None:
        """With no memory controller mounted, a memory limit is Unsupported, naming why.

        A host without the controller cannot be made for real here, so the layout is built by hand.
        """
        layout = _cgroups.Layout(
            v1={"pids": "/sys/fs/cgroup/pids"}, v2=None, v2_controllers=frozenset()
        )
        with pytest.raises(Unsupported, match="no memory cgroup controller"):
            _cgroups.refuse_unenforceable({"memory": 1 << 20}, layout)


class TestNetwork:
    """Private network namespaces with loopback, published ports and DNS files."""

    @pytest.mark.parametrize("network", ["host", "none"])
    async def test_ports_outside_a_private_network_are_refused(
        self, runtime: LinuxRuntime, network: str
    ) -> None:
        """Publishing a port with host or no networking is refused instead of silently doing nothing."""
        spec = ContainerSpec(command=("true",), image="busybox:test", network=network,  # type: ignore[arg-type]
                             ports=(PortMapping(host_port=18080, container_port=80),))
        with pytest.raises(Unsupported, match="private network"):
            await runtime.start(spec)

    async def test_published_port_answers_from_the_host(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """A server on the container's loopback is reached through -p from the host."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        handle = await runtime.start(
            ContainerSpec(
                command=("/bin/sh", "-c", "while true; do echo hello | nc -l -p 8080; done"),
                image="busybox:test",
                network="private",
                ports=(PortMapping(host_port=port, container_port=8080),),
            )
        )
        try:
            data = b""
            with anyio.fail_after(20):
                while b"hello" not in data:
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                            data = conn.recv(100)
                    except OSError:
                        pass
                    await anyio.sleep(0.05)
            assert data == b"hello\n"
        finally:
            await runtime.remove(handle)

    async def test_published_udp_port_answers_from_the_host(self, runtime: LinuxRuntime) -> None:
        """A UDP echo server inside answers datagrams sent to the published host port."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        echo = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 53))\n"
            "while True: d, a = s.recvfrom(100); s.sendto(b'echo ' + d, a)"
        )
        python, volumes = host_python()
        handle = await runtime.start(
            ContainerSpec(
                command=(python, "-S", "-c", echo),
                image="busybox:test",
                network="private",
                volumes=volumes,
                ports=(PortMapping(host_port=port, container_port=53, protocol="udp"),),
            )
        )
        try:
            answer = b""
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(0.2)
                client.connect(("127.0.0.1", port))
                with anyio.fail_after(20):
                    while not answer:
                        client.send(b"ping")
                        with contextlib.suppress(TimeoutError):
                            answer = client.recv(100)
            assert answer == b"echo ping"
        finally:
            await runtime.remove(handle)

    async def test_private_network_has_only_loopback(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """private: lo is up and is the only interface; none: lo stays down."""
        _, out = await sh(
            runtime, tmp_path, "ls /sys/class/net; cat /sys/class/net/lo/operstate", network="private"
        )
        assert out.split() == ["lo", "unknown"]
        _, out = await sh(runtime, tmp_path, "ip link show lo | grep -c UP", network="none")
        assert out.strip() == "0"

    async def test_dns_files_are_written(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """/etc/resolv.conf exists and names no host-loopback resolver inside a private network."""
        _, out = await sh(
            runtime,
            tmp_path,
            "test -f /etc/resolv.conf && echo ok; grep -c 'nameserver 127' /etc/resolv.conf",
        )
        assert out.split()[0] == "ok"
        assert out.split()[-1] == "0"


class TestLifecycle:
    """Detached containers survive their starter; delete and gc leave nothing."""

    async def test_detached_container_records_its_exit(self, runtime: LinuxRuntime, tmp_path: Path) -> None:
        """A detached container's supervisor writes exit.json that wait() returns."""
        handle = await runtime.start(
            ContainerSpec(command=("/bin/sh", "-c", "echo hi; exit 4"), image="busybox:test", detach=True)
        )
        status = await runtime.wait(handle)
        assert status.exit_code == 4
        assert runtime.logs_path(handle.id).read_text() == "hi\n"
        await runtime.remove(handle)

    async def test_delete_leaves_no_cgroup_nor_directory(self, runtime: LinuxRuntime) -> None:
        """After remove(), the journal dir and every cgroup dir of the container are gone."""
        handle = await runtime.start(
            ContainerSpec(command=("true",), image="busybox:test", resources=Resources(memory=64 << 20))
        )
        await runtime.wait(handle)
        dirs = runtime.cgroup(runtime.state(handle.id)).dirs()
        assert all(os.path.exists(d) for d in dirs)
        await runtime.remove(handle)
        assert not any(os.path.exists(d) for d in dirs)
        assert not (runtime.containers_dir / handle.id).exists()

    async def test_delete_never_follows_a_symlink_the_container_made(
        self, runtime: LinuxRuntime, tmp_path: Path
    ) -> None:
        """Symlinks a container leaves in its root pointing at host paths are unlinked on remove,
        and what they point at stays."""
        outside = tmp_path / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "sub" / "keep.txt").write_text("keep")
        script = (
            f"ln -s {outside} /escape-dir && ln -s {outside}/sub/keep.txt /escape-file"
            f" && mkdir -p /d/e && ln -s {outside} /d/e/up"
        )
        status, _ = await sh(runtime, tmp_path, script)  # run() removes the container
        assert status.ok
        assert (outside / "sub" / "keep.txt").read_text() == "keep"
