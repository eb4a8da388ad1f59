"""A seccomp filter for the job: the kernel interfaces no notebook needs are refused.

Namespaces (the way to a root of one's own, and to most of the kernel's attack surface),
mounts, ptrace and reading other processes' memory, BPF, io_uring, userfaultfd, keyrings,
kernel modules and the like fail with EPERM; everything else is allowed. The program is built
once (classic BPF, no library needed) and installed in each job with one prctl.
Syscall numbers are those of <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (aarch64).
"""

from __future__ import annotations

import ctypes
import errno
import platform

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
NR_OFFSET, ARCH_OFFSET, ARG0_OFFSET = 0, 4, 16  # in struct seccomp_data (little-endian)
X32_SYSCALL_BIT = 0x40000000
# New namespaces through clone(): its first argument holds the flags.
CLONE_NAMESPACES = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                    | 0x20000000 | 0x40000000)  # NS, CGROUP, UTS, IPC, USER, PID, NET

REFUSED = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "ptrace",
           "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
           "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module",
           "finit_module", "delete_module", "io_uring_setup", "io_uring_enter",
           "io_uring_register", "open_by_handle_at", "name_to_handle_at", "fsopen", "fsconfig",
           "fsmount", "move_mount", "open_tree", "fspick", "mount_setattr", "quotactl", "acct",
           "swapon", "swapoff", "reboot", "syslog")

ARCHES = {
    "x86_64": (0xC000003E, {
        "clone": 56, "clone3": 435, "ptrace": 101, "syslog": 103, "pivot_root": 155,
        "chroot": 161, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167,
        "swapoff": 168, "reboot": 169, "init_module": 175, "delete_module": 176,
        "quotactl": 179, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
        "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303,
        "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442}),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "ptrace": 117, "syslog": 116, "pivot_root": 41,
        "chroot": 51, "acct": 89, "mount": 40, "umount2": 39, "swapon": 224, "swapoff": 225,
        "reboot": 142, "init_module": 105, "delete_module": 106, "quotactl": 60,
        "kexec_load": 104, "add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97,
        "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "finit_module": 273,
        "kexec_file_load": 294, "bpf": 280, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442}),
}


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def build(arch: str) -> list[tuple[int, int, int, int]] | None:
    """The filter as (code, jt, jf, k) instructions, or None for an unknown CPU."""
    if arch not in ARCHES:
        return None
    audit_arch, numbers = ARCHES[arch]
    refused = [numbers[name] for name in REFUSED]
    # Layout: checks, then [clone check: 2], ALLOW, DENY (EPERM), NOSYS (for clone3).
    program: list[tuple[int, int, int, int]] = [
        (LD_W_ABS, 0, 0, ARCH_OFFSET),
        (JEQ, 1, 0, audit_arch),
        (RET, 0, 0, RET_KILL_PROCESS),  # another ABI's numbers would mean other syscalls
        (LD_W_ABS, 0, 0, NR_OFFSET),
    ]
    checks = [(JGE, X32_SYSCALL_BIT), *[(JEQ, number) for number in refused]]
    # After the checks: JEQ clone3, JEQ clone, JA-less fallthrough to ALLOW via jumps below.
    tail_start = len(program) + len(checks) + 2  # index of the clone argument check
    allow, deny, nosys = tail_start + 2, tail_start + 3, tail_start + 4
    for code, k in checks:
        here = len(program)
        program.append((code, deny - here - 1, 0, k))
    here = len(program)
    program.append((JEQ, nosys - here - 1, 0, numbers["clone3"]))  # glibc falls back to clone
    here = len(program)
    program.append((JEQ, 0, allow - here - 1, numbers["clone"]))
    program.append((LD_W_ABS, 0, 0, ARG0_OFFSET))
    here = len(program)
    program.append((JSET, deny - here - 1, 0, CLONE_NAMESPACES))
    program.append((RET, 0, 0, RET_ALLOW))
    program.append((RET, 0, 0, RET_ERRNO | errno.EPERM))
    program.append((RET, 0, 0, RET_ERRNO | errno.ENOSYS))
    assert len(program) == nosys + 1 and all(0 <= jt < 256 for _, jt, _, _ in program)
    return program


_PROGRAM = build(platform.machine())
_FILTERS = (SockFilter * len(_PROGRAM))(*_PROGRAM) if _PROGRAM else None


def apply() -> str:
    """Install the filter in this (single-threaded) process and all it will start."""
    if _FILTERS is None:
        return f"off (no syscall table for {platform.machine()})"
    libc = ctypes.CDLL(None, use_errno=True)
    program = SockFprog(len(_FILTERS), _FILTERS)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0)):
        return f"off ({errno.errorcode.get(ctypes.get_errno(), 'error')})"
    return "on (no namespaces, mounts, ptrace, BPF, io_uring, keyrings or kernel modules)"
