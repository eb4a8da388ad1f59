"""Layers around the student's process, each on by default, each reported (never silently off).

Each is in place before any student code runs:

1. `enter_user_namespace` (once, in the warm server; without root only): the capabilities
   to build the next layers. `enter_pid_namespace` (once per slot): each slot serves from
   PID 1 of a PID namespace, so that everything a job started, setsid or not, can be killed
   after it.
2. `enter_job_namespaces` (in each job's process): new mount, network, IPC and UTS
   namespaces: no network, nothing shared with the host or an earlier job.
3. `confine` (there too): a private /proc, private sized tmpfs on /tmp and /dev/shm, the
   slot's cgroups (`slot_cgroups`: one memory and process budget for the job and all it
   starts), per-process resource limits, an unprivileged uid of its own, and Landlock rules
   that allow reading only the Python installation and writing only the job's scratch folder
   (even for root); last, a seccomp filter (`seccomp.py`) refusing namespaces, mounts, ptrace
   and other kernel interfaces no notebook needs.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import resource
import sys
from pathlib import Path

from autograder.execute import seccomp

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18

SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
KEYCTL_JOIN_SESSION_KEYRING = 1
TMPFS_SIZE = "64m"  # each of /tmp and /dev/shm
FILE_SIZE_LIMIT = 64 * 1024 * 1024
MEMORY_HEADROOM = 1024**3  # address space a job may add to what the warm worker mapped
OPEN_FILES = 256
PROCESSES = 64
SANDBOX_UID_BASE = 100_000  # + the fork server's pid: one uid per warm worker

LAYERS = ("namespaces", "pid-namespace", "network", "private-tmp", "cgroup", "limits", "uid",
          "landlock", "seccomp")
CGROUP_ROOT = Path("/sys/fs/cgroup")
JOB_MEMORY = 1024**3  # bytes a job and all it starts may add, together (a cgroup's limit)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def enter_user_namespace() -> str | None:
    """Once, in the warm server, before it starts any thread: without root, a user namespace
    lends the capabilities the other namespaces need. Returns why it failed, or None."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return None
    try:
        _check(_libc.unshare(CLONE_NEWUSER), "unshare")
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    except OSError as error:
        return error.strerror or str(error)
    return None


def enter_pid_namespace(user_namespace_error: str | None = None) -> dict[str, str]:
    """Once per slot: unshare() the PID namespace; the caller's next fork is its PID 1."""
    if user_namespace_error is not None:
        return {"pid-namespace": f"off (no user namespace: {user_namespace_error})"}
    try:
        _check(_libc.unshare(CLONE_NEWPID), "unshare")
    except OSError as error:
        return {"pid-namespace": f"off ({error.strerror or error})"}
    return {"pid-namespace": "on (one per slot; emptied after every job)"}


def enter_job_namespaces() -> dict[str, str]:
    """In the job's process: new mount, network, IPC and UTS namespaces, which take effect
    at once (only a PID namespace needs a fork)."""
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
               "unshare")
    except OSError as error:
        return {layer: f"off ({error.strerror or error})" for layer in ("namespaces", "network")}
    return {"namespaces": "on", "network": "on (no interfaces up)"}


def sandbox_uid(server: int, job: int) -> int:
    """A uid for job number `job` of the fork server whose host pid is `server`: never shared
    with a job of another server, nor with this server's previous jobs (kernel keyrings,
    processes and files of a uid outlive a job)."""
    return SANDBOX_UID_BASE + (server % 100_000) * 10_000 + job % 10_000


def slot_cgroups(name: str) -> tuple[list[str], str]:
    """Once per slot, as root: a memory and a pids cgroup (v1) that the slot's server joins,
    so that each job it forks is born in them and a job and everything it starts share one
    budget -- a per-process limit alone lets 64 processes take 64 times as much, and memory a
    process does not map (memfd, pipes) is charged here too. (Moving each job in instead
    would cost 10 ms: a cgroup migration waits for an RCU grace period.) Returns (the cgroup
    folders, the layer's report)."""
    if os.getuid() != 0 or not _really_root():
        return [], "off (not root)"
    if not (CGROUP_ROOT / "memory").is_dir() or not (CGROUP_ROOT / "pids").is_dir():
        return [], "off (no cgroup v1 memory and pids controllers here)"
    folders = []
    try:
        for controller, limits in (("memory", {"memory.limit_in_bytes": JOB_MEMORY}),
                                   ("pids", {"pids.max": PROCESSES})):
            parent = CGROUP_ROOT / controller / _own_cgroup(controller)
            _remove_stale_cgroups(parent)
            folder = parent / f"autograder-slot-{name}"
            folder.mkdir(exist_ok=True)
            folders.append(str(folder))
            for setting, value in limits.items():
                (folder / setting).write_text(str(value))
    except OSError as error:
        remove_cgroups(folders)
        return [], f"off ({error})"
    return folders, (f"on ({JOB_MEMORY >> 20} MiB of memory and {PROCESSES} processes for "
                     "the job and all it starts, together)")


def remove_cgroups(folders: list[str]) -> None:
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty yet, or gone: an empty leftover is removed by the next slot


def _own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path.lstrip("/")
    raise OSError(f"this process is in no {controller} cgroup")


def _remove_stale_cgroups(parent: Path) -> None:
    """Slots killed before cleaning up leave empty cgroups behind: remove those of dead pids."""
    for folder in parent.glob("autograder-slot-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                folder.rmdir()
            except OSError:
                pass


def join_cgroups(folders: list[str]) -> str | None:
    """In the slot's server, once: join the slot's cgroups. (When they run out of memory, the
    killer picks a job's process: each asks to go first.) Returns an error, or None."""
    try:
        for folder in folders:
            Path(folder, "cgroup.procs").write_text("0")  # 0: this process
    except OSError as error:
        return f"off ({error})"
    return None


def _first_to_go_when_memory_runs_out() -> None:
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")  # raising it needs no privilege
    except OSError:
        pass


def confine(scratch: Path, timeout: float, report: dict[str, str],
            uid: int) -> dict[str, str]:
    """Everything else, in the job's process, just before the student's code runs."""
    in_namespaces = report.get("namespaces") == "on"
    report["private-tmp"] = _private_mounts(scratch) if in_namespaces else "off (no namespaces)"
    _first_to_go_when_memory_runs_out()
    report["limits"] = _limit(timeout)
    report["uid"] = _drop_to_own_uid(scratch, uid)
    report["landlock"] = _landlock(scratch)
    report["seccomp"] = seccomp.apply()  # last: it refuses the mounts made above
    return report


def _private_mounts(scratch: Path) -> str:
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing leaks back to the host
        # Only this namespace's processes, and of those only the job's own uid: not the
        # server that is PID 1.
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, "hidepid=2")
        installation = _installation_paths()
        # What lives under /tmp and must stay visible -- the job's folder and, in a checkout
        # under /tmp, Python itself -- is held open, then bound back into the fresh /tmp.
        kept = {path: os.open(path, os.O_PATH) for path in [str(scratch), *installation]
                if _is_under(Path(path), Path("/tmp"))}
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMPFS_SIZE},mode=1777")
        for path, handle in kept.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            os.close(handle)
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMPFS_SIZE},mode=1777")
        if os.path.isdir("/run"):  # the host's sockets (D-Bus, journald...) are not the job's
            _mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        _expose_to_other_users([p for p in installation if p not in kept])
    except OSError as error:
        return f"off ({error})"
    return f"on (/tmp and /dev/shm: {TMPFS_SIZE} each, /proc of this namespace)"


def _installation_paths() -> list[str]:
    """What the job must be able to read: Python, the virtualenv, this package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, package)}
    return sorted(p for p in paths if os.path.isdir(p))


def _expose_to_other_users(paths: list[str]) -> None:
    """Python often lives under a private folder (/root/.pyenv): in this mount namespace only,
    cover that folder with an empty tmpfs and bind just the installation back into it, so the
    job's own uid can read Python and nothing else that was there."""
    blocked: dict[Path, list[str]] = {}
    for path in paths:
        for folder in [*reversed(Path(path).parents), Path(path)]:
            if not os.stat(folder).st_mode & 0o001:  # others may not pass through
                if str(folder) != path:
                    blocked.setdefault(folder, []).append(path)
                break
    for folder, inside in blocked.items():
        handles = {path: os.open(path, os.O_PATH) for path in inside}
        _mount("tmpfs", str(folder), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for path, handle in handles.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            os.close(handle)


def _is_under(path: Path, parent: Path) -> bool:
    return parent in path.parents


def _limit(timeout: float) -> str:
    mapped = _address_space_in_use()
    limits = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_CPU: math.ceil(timeout) + 1,
        resource.RLIMIT_FSIZE: FILE_SIZE_LIMIT,
        resource.RLIMIT_NOFILE: OPEN_FILES,
        resource.RLIMIT_AS: mapped + MEMORY_HEADROOM,
        resource.RLIMIT_NPROC: PROCESSES,
    }
    try:
        for limit, value in limits.items():
            resource.setrlimit(limit, (value, value))
    except (OSError, ValueError) as error:
        return f"off ({error})"
    return (f"on (cpu {math.ceil(timeout) + 1} s, memory +{MEMORY_HEADROOM >> 20} MiB, "
            f"{PROCESSES} processes, files {FILE_SIZE_LIMIT >> 20} MiB, {OPEN_FILES} open)")


def _address_space_in_use() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 4 * 1024**3


def _drop_to_own_uid(scratch: Path, uid: int) -> str:
    """As root: a uid of this warm worker's own, so that RLIMIT_NPROC counts only this job
    and no other process can be signalled or its files read through ownership."""
    if os.getuid() != 0 or not _really_root():
        return "off (not root: the job keeps the grader's uid inside its user namespace)"
    try:
        for directory, _, files in os.walk(scratch):
            os.chown(directory, uid, uid)
            for name in files:
                os.chown(os.path.join(directory, name), uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if SYS_KEYCTL is not None:  # a session keyring of its own, not the grader's
            _libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
    except OSError as error:
        return f"off ({error})"
    return f"on (uid {uid})"


def _really_root() -> bool:
    """Root of the machine, not root mapped from a user namespace."""
    try:
        return Path("/proc/self/uid_map").read_text().split()[:3] == ["0", "0", "4294967295"]
    except OSError:
        return False


def preload() -> None:
    """Import what confining a job needs, once, in the fork server (landlock: 15 ms)."""
    try:
        import landlock  # noqa: F401
    except ImportError:
        pass  # reported as off by each job


def _landlock(scratch: Path) -> str:
    try:
        from landlock import FSAccess, Ruleset
    except ImportError as error:
        return f"off ({error})"
    read = FSAccess.READ_FILE | FSAccess.READ_DIR | FSAccess.EXECUTE
    readable = {*_installation_paths(), "/usr", "/lib", "/lib64", "/bin", "/etc", "/proc",
                "/sys", "/dev"}
    writable = {str(scratch), "/tmp", "/dev/shm"}
    try:
        rules = Ruleset()
        rules.allow(*sorted(p for p in readable if os.path.exists(p)), rules=read)
        rules.allow(*sorted(writable))
        rules.allow("/dev/null", rules=FSAccess.all_file())
        rules.apply()  # also sets no_new_privs
    except Exception as error:
        return f"off ({error})"
    return "on (reads: the Python installation; writes: the job's folder, /tmp, /dev/shm)"
