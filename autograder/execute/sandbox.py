"""Layers around the student's process, each on by default, each reported (never silently off).

Each is in place before any student code runs:

1. `enter_user_namespace` (once, in the warm server; without root only): the capabilities
   to build the next layers. `enter_pid_namespace` (once per slot): each slot serves from
   PID 1 of a PID namespace, so that everything a job started, setsid or not, can be killed
   after it.
2. `enter_job_namespaces` (in each job's process): new mount, network, IPC and UTS
   namespaces: no network, nothing shared with the host or an earlier job.
3. `confine` (there too): a minimal root of its own (pivot_root into a tmpfs holding the
   Python installation and /usr read-only, /dev/null and friends, a synthetic /etc, a private
   /proc, and /tmp and /dev/shm bounded in bytes and files), the slot's cgroups
   (`slot_cgroups`: one memory and process budget and one core's worth of CPU for the job
   and all it starts), per-process resource limits, an unprivileged uid of its own, and
   Landlock rules that allow reading only the installation and writing only the job's
   folder, /tmp and /dev/shm (even for root); last, a seccomp filter (`seccomp.py`) refusing
   namespaces, mounts, ptrace, sockets other than UNIX ones and other kernel interfaces no
   notebook needs.

Without root, the same world is built inside the user namespace: the installation is
read-only there too. Without a cgroup (v1 cgroups need root), the memory budget is missing:
`PROTECTING_LAYERS` are those without which `grade` refuses to start (unless --unsafe).
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

from autograder.execute import seccomp

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
# statvfs flags of a mount that a user namespace may not drop when remounting it.
_KEPT_FLAGS = {os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME,
               os.ST_RELATIME: MS_RELATIME}

SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine(), -1)
KEYCTL_JOIN_SESSION_KEYRING = 1
TMPFS_SIZE = "64m"  # each of /tmp and /dev/shm
TMPFS_FILES = 10_000  # inodes: files and folders, each of /tmp and /dev/shm
FILE_SIZE_LIMIT = 64 * 1024 * 1024
MEMORY_HEADROOM = 1024**3  # address space a job may add to what the warm worker mapped
OPEN_FILES = 256
PROCESSES = 64
SANDBOX_UID_BASE = 100_000  # + the fork server's pid: one uid per warm worker

STAGE = "/tmp"  # where the new root is built, in the job's mount namespace only
JOB_HOME = Path("/tmp/home")  # the job's folder when it has no host folder
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
DEVICES = ("null", "zero", "full", "random", "urandom")
DEVICE_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
_TMP_REPORT = (f"on (/tmp and /dev/shm: {TMPFS_SIZE} and {TMPFS_FILES} files each, "
               "/proc of this namespace)")

LAYERS = ("namespaces", "pid-namespace", "network", "root", "private-tmp", "cgroup", "limits",
          "uid", "landlock", "seccomp")
# Off, these leave the grader itself exposed (its installation writable, or the machine's
# memory to one job): `grade` refuses to start without them unless told --unsafe.
PROTECTING_LAYERS = ("root", "cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
JOB_MEMORY = 1024**3  # bytes a job and all it starts may add, together (a cgroup's limit)
CPU_PERIOD = 100_000  # microseconds
CPU_QUOTA = 100_000  # per period, for the job and all it starts: one core

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
    """Once per slot, as root: a memory, a pids and a cpu cgroup (v1) that the slot's server
    joins, so that each job it forks is born in them and a job and everything it starts share
    one budget -- a per-process limit alone lets 64 processes take 64 times as much, and
    memory a process does not map (memfd, pipes) is charged here too -- and one core's worth
    of CPU time, so that a job of 60 busy processes cannot starve the other slots' jobs.
    (Moving each job in instead would cost 10 ms: a cgroup migration waits for an RCU grace
    period.) Returns (the cgroup folders, the layer's report)."""
    if os.getuid() != 0 or not _really_root():
        return [], "off (not root)"
    if not (CGROUP_ROOT / "memory").is_dir() or not (CGROUP_ROOT / "pids").is_dir():
        return [], "off (no cgroup v1 memory and pids controllers here)"
    budgets: list[tuple[str, dict[str, int]]] = [
        ("memory", {"memory.limit_in_bytes": JOB_MEMORY}), ("pids", {"pids.max": PROCESSES})]
    cpu = (CGROUP_ROOT / "cpu").is_dir()
    if cpu:
        budgets.append(("cpu", {"cpu.cfs_period_us": CPU_PERIOD, "cpu.cfs_quota_us": CPU_QUOTA}))
    folders = []
    try:
        for controller, limits in budgets:
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
    share = (f"cpu share: {CPU_QUOTA / CPU_PERIOD:g} core" if cpu
             else "no cpu share: no cgroup v1 cpu controller here")
    return folders, (f"on ({JOB_MEMORY >> 20} MiB of memory and {PROCESSES} processes for "
                     f"the job and all it starts, together; {share})")


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


def confine(scratch: Path | None, timeout: float, report: dict[str, str],
            uid: int) -> Path:
    """Everything else, in the job's process, just before the student's code runs. `scratch`
    is a host folder the job reads and writes, bound into its root; None: the job's folder is
    JOB_HOME, inside the private /tmp (bounded in bytes and files, gone with the job), and
    the working directory. Returns the job's folder; fills in `report`."""
    in_namespaces = report.get("namespaces") == "on"
    job_uid = uid if os.getuid() == 0 and _really_root() else os.getuid()
    if in_namespaces:
        report["root"], report["private-tmp"] = _minimal_root(scratch, job_uid)
    else:
        report["root"] = report["private-tmp"] = "off (no namespaces)"
    folder = scratch
    if folder is None:
        folder = JOB_HOME if report["root"].startswith("on") else Path(
            tempfile.mkdtemp(prefix="autograder-job-"))  # no new root: a folder in /tmp
    _first_to_go_when_memory_runs_out()
    report["limits"] = _limit(timeout)
    report["uid"] = _drop_to_own_uid(folder, uid)
    if scratch is None:
        os.chdir(folder)
    report["landlock"] = _landlock(folder)
    report["seccomp"] = seccomp.apply()  # last: it refuses the mounts made above
    return folder


def _minimal_root(scratch: Path | None, job_uid: int) -> tuple[str, str]:
    """A fresh root for the job (pivot_root): the installation and /usr read-only, /dev/null
    and friends, a private /proc, /tmp and /dev/shm, a synthetic /etc, and the job's folder;
    nothing else of the host. Returns the reports of the `root` and `private-tmp` layers.
    If it cannot be built, falls back to private /proc, /tmp and /dev/shm on the host's root."""
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing leaks back to the host
    except OSError as error:
        return f"off ({error})", f"off ({error})"
    installation = _installation_paths()
    # Held open: the new root is built over /tmp, which may hold the installation (a
    # checkout in a temporary folder) or the job's folder, and the host's paths vanish with
    # the old root.
    sources = [*installation, *(d for d in SYSTEM_DIRS if os.path.isdir(d)
                                and not os.path.islink(d))]
    sources += [f"/dev/{name}" for name in DEVICES]
    if scratch is not None:
        sources.append(str(scratch))
    handles: dict[str, int] = {}
    stage = STAGE
    staged = False
    try:
        for path in sources:
            handles[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        _mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV,
               "size=1m,nr_inodes=1000,mode=755")
        staged = True
        _private_tmpfs(stage)
        for path in installation:
            _bind(handles[path], stage + path, read_only=True)
        for directory in SYSTEM_DIRS:  # merged /usr: /bin, /lib... are symlinks into /usr
            if os.path.islink(directory):
                os.symlink(os.readlink(directory), stage + directory)
            elif directory in handles:
                _bind(handles[directory], stage + directory, read_only=True)
        for name in DEVICES:
            Path(stage, "dev", name).touch(mode=0o666)
            _bind(handles[f"/dev/{name}"], f"{stage}/dev/{name}", read_only=False)
        for name, target in DEVICE_LINKS.items():
            os.symlink(target, f"{stage}/dev/{name}")
        _write_etc(Path(stage, "etc"), job_uid, scratch)
        if scratch is None:
            os.mkdir(stage + str(JOB_HOME), 0o700)
        else:
            _bind(handles[str(scratch)], stage + str(scratch), read_only=False)
        # The root itself (mount points, /etc) is read-only; /tmp and /dev/shm stay writable.
        _mount(None, stage, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.chdir(stage)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount the host's root")  # stacked on "/"
        os.chdir("/")
    except OSError as error:
        if staged:
            _libc.umount2(stage.encode(), MNT_DETACH)
        return f"off ({error})", _private_mounts_on_host(scratch)
    finally:
        for handle in handles.values():
            os.close(handle)
    return ("on (pivot_root: the Python installation and /usr read-only, /dev/null and "
            "friends, a synthetic /etc; no host /etc, /sys, /var or sockets)", _TMP_REPORT)


def _private_tmpfs(root: str) -> None:
    """/proc of this namespace (of its processes, only the job's own uid: not the server that
    is PID 1), and /tmp and /dev/shm bounded in bytes and in files."""
    for folder in ("proc", "tmp", "dev", "dev/shm", "etc"):
        os.makedirs(f"{root}/{folder}", mode=0o755, exist_ok=True)
    _mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    for folder in ("tmp", "dev/shm"):
        _mount("tmpfs", f"{root}/{folder}", "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={TMPFS_SIZE},nr_inodes={TMPFS_FILES},mode=1777")


def _bind(handle: int, target: str, read_only: bool) -> None:
    """Bind what `handle` holds open at `target` (created: folder or file as needed)."""
    if not os.path.exists(target):
        os.makedirs(target, mode=0o755)
    source = f"/proc/self/fd/{handle}"
    try:
        _mount(source, target, None, MS_BIND)  # not what is mounted below it
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: a user namespace may not hide what
            raise                        # the host mounted below it: take those too
        _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        # A user namespace may not drop flags the host set (noexec, atime): keep them.
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        host = os.statvfs(source).f_flag
        flags |= sum(ms for st, ms in _KEPT_FLAGS.items() if host & st)
        _mount(None, target, None, flags)


def _write_etc(etc: Path, uid: int, scratch: Path | None) -> None:
    """Just enough for getpwuid() and getgrgid() to name the job's user."""
    home = str(scratch or JOB_HOME)
    users = {0: ("root", "/")} | {uid: ("student", home)}
    (etc / "passwd").write_text("".join(f"{name}:x:{number}:{number}:{name}:{folder}:/bin/false\n"
                                        for number, (name, folder) in users.items()))
    (etc / "group").write_text("".join(f"{name}:x:{number}:\n"
                                       for number, (name, _) in users.items()))


def _private_mounts_on_host(scratch: Path | None) -> str:
    """The fallback when no new root could be built: private /proc, /tmp and /dev/shm over
    the host's (what lives under /tmp and must stay visible is bound back into the new /tmp)."""
    try:
        installation = _installation_paths()
        kept = {path: os.open(path, os.O_PATH)
                for path in [*([str(scratch)] if scratch else []), *installation]
                if _is_under(Path(path), Path("/tmp"))}
        _private_tmpfs("")
        for path, handle in kept.items():
            _bind(handle, path, read_only=False)
            os.close(handle)
        if os.path.isdir("/run"):  # the host's sockets (D-Bus, journald...) are not the job's
            _mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    except OSError as error:
        return f"off ({error})"
    return _TMP_REPORT


_installation: list[str] | None = None


def _installation_paths() -> list[str]:
    """What the job must be able to read: Python, the virtualenv, this package, and what
    else is on the import path; none inside another. Found once, in the warm server."""
    global _installation
    if _installation is None:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                package)}
        # A folder on the import path that holds one of those (a checkout holding its venv,
        # perhaps private to its owner) is not bound whole: what the job needs is inside it.
        extra = {os.path.realpath(p) for p in sys.path if p}
        extra = {p for p in extra if not any(n.startswith(p.rstrip("/") + "/") for n in needed)}
        paths = sorted(p for p in needed | extra if os.path.isdir(p) and p != "/")
        _installation = [p for p in paths
                         if not any(p.startswith(q.rstrip("/") + "/") for q in paths)]
    return _installation


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
    """Import what confining a job needs, once, in the fork server (landlock: 15 ms), and
    compile the seccomp filter."""
    seccomp.prepare()
    _installation_paths()
    try:
        import landlock  # noqa: F401
    except ImportError:
        pass  # reported as off by each job


def _landlock(folder: Path) -> str:
    try:
        from landlock import FSAccess, Ruleset
    except ImportError as error:
        return f"off ({error})"
    read = FSAccess.READ_FILE | FSAccess.READ_DIR | FSAccess.EXECUTE
    # In the minimal root, /etc is the synthetic one and /sys does not exist; without it
    # (the layer is off), the host's are readable as before.
    readable = {*_installation_paths(), *SYSTEM_DIRS, "/etc", "/proc", "/sys", "/dev"}
    writable = {str(folder), "/tmp", "/dev/shm"}
    try:
        rules = Ruleset()
        rules.allow(*sorted(p for p in readable if os.path.exists(p)), rules=read)
        rules.allow(*sorted(writable))
        for name in ("null", "zero", "full"):
            rules.allow(f"/dev/{name}", rules=FSAccess.all_file())
        rules.apply()  # also sets no_new_privs
    except Exception as error:
        return f"off ({error})"
    return "on (reads: the Python installation; writes: the job's folder, /tmp, /dev/shm)"
