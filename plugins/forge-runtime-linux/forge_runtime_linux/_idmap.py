"""User-namespace id maps: which host ids container ids map to, and writing the maps.

As root, container ids 0-65535 map to a subordinate host range (root's line in ``/etc/subuid``,
else 1000000); image files are shifted into that range at import. Rootless, container root is
the calling user, plus the user's ``/etc/subuid`` range through ``newuidmap`` when it has one.
"""

from __future__ import annotations

import os

__all__ = ["RANGE", "host_base", "rootless_ranges", "write_maps"]

RANGE = 65536
"""Container ids a root-owned container maps (0..65535)."""
_FALLBACK_BASE = 1_000_000


def _subordinate(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """The first ``user:start:count`` line of ``/etc/subuid``-style ``path`` for this user."""
    try:
        with open(path) as fh:
            for line in fh:
                name, _, rest = line.strip().partition(":")
                start, _, count = rest.partition(":")
                if name in (user, str(uid)) and start.isdigit() and count.isdigit():
                    return int(start), int(count)
    except OSError:
        return None
    return None


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def host_base() -> int:
    """The host uid container root maps to when Forge runs as root."""
    sub = _subordinate("/etc/subuid", "root", 0)
    return sub[0] if sub and sub[1] >= RANGE else _FALLBACK_BASE


def rootless_ranges() -> list[tuple[int, int, int]]:
    """``(inside, outside, count)`` lines for the calling user: itself as root, then its
    subordinate range as ids 1.. when ``newuidmap`` and an ``/etc/subuid`` entry exist."""
    import shutil

    uid = os.geteuid()
    lines = [(0, uid, 1)]
    sub = _subordinate("/etc/subuid", _user_name(uid), uid)
    if sub and shutil.which("newuidmap") and shutil.which("newgidmap"):
        lines.append((1, sub[0], min(sub[1], RANGE - 1)))
    return lines


def write_maps(pid: int, base: int) -> None:
    """Give the user namespace of ``pid`` its uid and gid maps.

    ``base`` > 0 (we are root): ``0 base 65536``. Rootless: the caller's own id, through
    ``newuidmap``/``newgidmap`` when it has subordinate ranges, else written directly after
    denying ``setgroups`` as the kernel requires for an unprivileged map.
    """
    if os.geteuid() == 0:
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as fh:
                fh.write(f"0 {base} {RANGE}\n")
        return
    lines = rootless_ranges()
    if len(lines) > 1:
        sub_gid = _subordinate("/etc/subgid", _user_name(os.geteuid()), os.geteuid())
        gid_lines = [(0, os.getegid(), 1)]
        if sub_gid:
            gid_lines.append((1, sub_gid[0], min(sub_gid[1], RANGE - 1)))
        import subprocess

        for tool, table in (("newuidmap", lines), ("newgidmap", gid_lines)):
            args = [str(x) for line in table for x in line]
            done = subprocess.run([tool, str(pid), *args], capture_output=True, text=True, check=False)
            if done.returncode:
                raise OSError(f"{tool} failed: {done.stderr.strip()}")
        return
    with open(f"/proc/{pid}/setgroups", "w") as fh:
        fh.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as fh:
        fh.write(f"0 {os.geteuid()} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as fh:
        fh.write(f"0 {os.getegid()} 1\n")
