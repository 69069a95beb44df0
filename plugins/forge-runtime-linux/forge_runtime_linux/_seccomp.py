"""A seccomp-BPF deny list for container processes, assembled by hand and loaded with prctl.

Why by hand: the filter is ~50 instructions, so a dependency (libseccomp, which is not
always installed, through ctypes or pyseccomp) would add a failure mode and buy nothing.
The program kills foreign-architecture calls, refuses x32 calls, returns EPERM for the
syscalls Docker's default profile blocks (kernel modules, kexec, reboot, mount, namespaces,
keyrings, bpf, perf, clock setting, swap…), refuses clone() with namespace flags and makes
clone3 fail with ENOSYS so libc falls back to the filterable clone().
"""

from __future__ import annotations

import ctypes
import errno
import struct

from . import _sys

__all__ = ["DENIED", "install", "program"]

AUDIT_ARCH_X86_64 = 0xC000003E
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

#: x86_64 syscall numbers refused with EPERM
DENIED: dict[str, int] = {
    "syslog": 103,
    "uselib": 134,
    "vhangup": 153,
    "pivot_root": 155,
    "_sysctl": 156,
    "adjtimex": 159,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_CLONE = 56
_CLONE3 = 435
_NS_FLAGS = (
    _sys.CLONE_NEWNS
    | _sys.CLONE_NEWCGROUP
    | _sys.CLONE_NEWUTS
    | _sys.CLONE_NEWIPC
    | _sys.CLONE_NEWUSER
    | _sys.CLONE_NEWPID
    | _sys.CLONE_NEWNET
)


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions; jumps are relative, as BPF wants."""
    denied = sorted(set(DENIED.values()))
    head = [
        (_LD_W_ABS, 0, 0, 4),  # arch
        (_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, 0),  # syscall number
    ]
    # labels counted from the end: ... ALLOW, EPERM, ENOSYS, CLONE-CHECK(3)
    n = len(denied)
    body: list[tuple[int, int, int, int]] = []
    # after the checks below: index of ALLOW relative to each instruction
    checks = 3 + n  # x32 check, clone, clone3, then n deny checks
    for i in range(checks):
        to_allow = checks - i - 1
        if i == 0:
            body.append((_JGE_K, to_allow + 1, 0, 0x40000000))  # x32 ABI -> EPERM
        elif i == 1:
            body.append((_JEQ_K, to_allow + 3, 0, _CLONE))  # -> clone flag check
        elif i == 2:
            body.append((_JEQ_K, to_allow + 2, 0, _CLONE3))  # -> ENOSYS
        else:
            body.append((_JEQ_K, to_allow + 1, 0, denied[i - 3]))  # -> EPERM
    tail = [
        (_RET_K, 0, 0, _RET_ALLOW),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        (_LD_W_ABS, 0, 0, 16),  # args[0], low 32 bits: clone flags
        (_JSET_K, 0, 1, _NS_FLAGS),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    return head + body + tail


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter into the calling process (needs no_new_privs or CAP_SYS_ADMIN)."""
    prog = program()
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    _sys.prctl(_sys.PR_SET_SECCOMP, _sys.SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
