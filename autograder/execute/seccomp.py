"""A seccomp filter for the job: the kernel interfaces no notebook needs are refused.

Namespaces (the way to a root of one's own, and to most of the kernel's attack surface),
mounts, ptrace and reading other processes' memory, BPF, io_uring, userfaultfd, keyrings,
kernel modules and the like fail with EPERM; sockets may only be UNIX sockets (torch's
DataLoader workers talk over them), any other family fails with EAFNOSUPPORT; everything else
is allowed. libseccomp (through `pyseccomp`) compiles the rules once, in the warm server, to
BPF bytes; each job installs those bytes with one prctl (no library call in the job).
"""

from __future__ import annotations

import ctypes
import errno
import os

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
AF_UNIX = 1
# New namespaces through clone(): its first argument holds the flags.
CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                    0x40000000)  # NS, CGROUP, UTS, IPC, USER, PID, NET

REFUSED = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "ptrace",
           "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
           "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module",
           "finit_module", "delete_module", "io_uring_setup", "io_uring_enter",
           "io_uring_register", "open_by_handle_at", "name_to_handle_at", "fsopen", "fsconfig",
           "fsmount", "move_mount", "open_tree", "fspick", "mount_setattr", "quotactl", "acct",
           "swapon", "swapoff", "reboot", "syslog")
SOCKET_CALLS = ("socket", "socketpair")  # their first argument is the address family
REPORT = ("on (no namespaces, mounts, ptrace, BPF, io_uring, keyrings or kernel modules; "
          "sockets: UNIX only)")


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def build() -> bytes:
    """The filter as classic BPF for this machine's architecture (another ABI's syscall
    numbers -- x32, or 32-bit calls -- kill the process: they would mean other syscalls).
    Raises ImportError without pyseccomp, OSError without libseccomp."""
    import pyseccomp as sc

    rules = sc.SyscallFilter(sc.ALLOW)
    rules.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in REFUSED:
        rules.add_rule(sc.ERRNO(errno.EPERM), name)
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # the C library falls back to clone
    for flag in CLONE_NAMESPACES:  # rules on one syscall are OR-ed: any namespace flag
        rules.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for name in SOCKET_CALLS:
        rules.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), name, sc.Arg(0, sc.NE, AF_UNIX))
    read, write = os.pipe()
    try:
        with os.fdopen(write, "wb") as pipe:  # a filter is a few hundred bytes: fits a pipe
            rules.export_bpf(pipe)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
    finally:
        os.close(read)
    return b"".join(chunks)


_program: bytes | None = None
_why_not: str | None = None


def prepare() -> None:
    """Once, in the warm server before it forks: compile the filter (about 10 ms)."""
    global _program, _why_not
    if _program is not None or _why_not is not None:
        return
    try:
        _program = build()
    except (ImportError, OSError, RuntimeError, ValueError, AttributeError) as error:
        _why_not = f"libseccomp unavailable: {error}"


def apply() -> str:
    """Install the filter in this (single-threaded) process and all it will start."""
    prepare()  # a no-op when the warm server prepared it
    if _program is None:
        return f"off ({_why_not})"
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(_program, len(_program))
    program = SockFprog(len(_program) // 8, ctypes.addressof(buffer))
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0)):
        return f"off ({errno.errorcode.get(ctypes.get_errno(), 'error')})"
    return REPORT
