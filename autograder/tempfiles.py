"""The grader's folders in the host's temporary folder: made with their owner's pid in the name,
removed by a clean-up that cannot fail, and swept at the next start when a killed run left them.

    /tmp/autograder-<kind>-<owner pid>.<its start time>-<random>

A folder is the owner's while that process lives (another course's batch, a long-running Dask
worker): `sweep_stale` removes only those whose owner is gone. The start time tells the owner
from a later process that reuses its pid (they come round within minutes where pids end at
32768). Student code writes into job
folders, so `remove_tree` assumes the worst of what it finds there: chains thousands of folders
deep (no recursion, no paths longer than one name), hundreds of thousands of files, read-only
folders, files of another uid; it never raises and returns what it could not remove.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from pathlib import Path

PREFIX = "autograder-"
KIND = re.compile(r"[a-z]+")
# mkdtemp's random part: 8 of [a-z0-9_].
NAME = re.compile(rf"{PREFIX}(?P<kind>[a-z]+)-(?P<pid>[0-9]+)(?:\.(?P<start>[0-9]+))?-[a-z0-9_]+")
log = logging.getLogger(__name__)
ERRORS_KEPT = 20  # a bomb of 100,000 unremovable files is reported in 21 lines, not 100,000


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


def make_temp_dir(kind: str, owner: int | None = None) -> Path:
    """A new private folder /tmp/autograder-<kind>-<pid>-<random>. `owner` is the process
    whose life the folder belongs to, as the host sees it (default: this one; a slot, whose
    pid inside its PID namespace means nothing to the host, names its warm server)."""
    if not KIND.fullmatch(kind):
        raise ValueError(f"a temporary folder's kind must be lowercase letters, not {kind!r}")
    pid = os.getpid() if owner is None else owner
    start = _start_time(pid)
    owner_id = f"{pid}.{start}" if start is not None else str(pid)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{owner_id}-", dir=temp_root()))


def _start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as status:
            return int(status.read().rsplit(b")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_alive(path: Path | str) -> bool:
    """Whether the process that owns a folder of `make_temp_dir` still runs: its pid lives and,
    where the name records it, started when the owner did (not a later process reusing it)."""
    match = NAME.fullmatch(os.path.basename(os.fspath(path)))
    if match is None:
        return False
    pid = int(match["pid"])
    if not pid_alive(pid):
        return False
    return match["start"] is None or _start_time(pid) in (None, int(match["start"]))


def owner_pid(path: Path | str) -> int | None:
    """The pid in a folder name made by `make_temp_dir`, or None for any other name."""
    match = NAME.fullmatch(os.path.basename(os.fspath(path)))
    return int(match["pid"]) if match else None


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a killed grader that its parent
    has not yet waited for has left, whatever `kill(pid, 0)` says)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as status:
            state = status.read().rsplit(b")", 1)[-1].split()[:1]
        return state not in ([b"Z"], [b"X"])
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc here: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: Path | None = None) -> list[str]:
    """Remove the folders of `make_temp_dir` whose owner process is gone (a killed grade, a
    killed Dask worker); never one whose owner lives. Returns what could not be removed."""
    root = root or temp_root()
    problems: list[str] = []
    try:
        names = os.listdir(root)
    except OSError as error:
        return [f"{root}: {error.strerror or error}"]
    for name in names:
        pid = owner_pid(name)
        if pid is None or pid == os.getpid() or owner_alive(name):
            continue
        path = root / name
        try:
            info = os.lstat(path)
        except OSError:
            continue  # swept by someone else meanwhile
        # Only real folders, and as anyone but root only our own: a symlink or another
        # user's folder under our name pattern is not ours to touch.
        if not stat.S_ISDIR(info.st_mode) or (os.geteuid() != 0
                                               and info.st_uid != os.geteuid()):
            continue
        problems += remove_tree(path)
    return problems


def remove_tree(path: Path | str) -> list[str]:
    """Remove `path` and everything under it; never raises, never follows a symlink. Returns
    what could not be removed, as text for the caller to report (empty: all gone).

    Without recursion and without long paths: every folder found below the top is renamed up
    into the top folder, then emptied of its files and removed, so at most two folders are
    open at a time and every name is resolved relative to one of them, however deep the
    chain was."""
    problems = _Problems(os.fspath(path))
    try:
        top_path = os.path.abspath(os.fspath(path))
        parent, name = os.path.split(top_path)
        info = os.lstat(top_path)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        problems.add("", error)
        return problems.texts()
    try:
        parent_fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        problems.add("", error)
        return problems.texts()
    try:
        if not stat.S_ISDIR(info.st_mode):
            _unlink(name, parent_fd, problems, "")
            return problems.texts()
        top = _open_dir(name, parent_fd, problems, "")
        if top is not None:
            try:
                _empty(top, problems)
            finally:
                os.close(top)
        _rmdir(name, parent_fd, problems, "")
    except Exception as error:  # never fails: a surprise is reported too
        problems.add("", error)
    finally:
        os.close(parent_fd)
    return problems.texts()


def log_problems(problems: list[str]) -> None:
    """Report what a clean-up could not remove (on stderr, unless logging says otherwise):
    the next start's sweep tries again."""
    for problem in problems:
        log.warning("leftover temporary file: %s", problem)


class _Problems:
    def __init__(self, top: str) -> None:
        self.top, self.kept, self.more = top, [], 0

    def add(self, where: str, error: BaseException) -> None:
        if len(self.kept) >= ERRORS_KEPT:
            self.more += 1
            return
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else repr(error)
        self.kept.append(f"{os.path.join(self.top, where) if where else self.top}: "
                         f"could not remove ({reason})")

    def texts(self) -> list[str]:
        return self.kept + ([f"{self.top}: and {self.more} more"] if self.more else [])


def _empty(top: int, problems: _Problems) -> None:
    """Empty the folder open as `top` (its own entries stay where they are; deeper folders
    are first moved up beside them)."""
    entries = _entries(top, problems, "")
    taken = {name for name, _ in entries}
    queue: list[str] = []
    for name, is_dir in entries:
        if is_dir:
            queue.append(name)
        else:
            _unlink(name, top, problems, name)
    moved = 0
    while queue:
        name = queue.pop()
        folder = _open_dir(name, top, problems, name)
        if folder is None:
            continue
        try:
            for _ in range(3):  # again, in case one was added meanwhile; bounded
                entries = _entries(folder, problems, name)
                if not entries:
                    break
                for entry, is_dir in entries:
                    if not is_dir:
                        _unlink(entry, folder, problems, f"{name}/{entry}")
                        continue
                    while f".rm{moved}" in taken:
                        moved += 1
                    new = f".rm{moved}"
                    try:
                        _move(entry, folder, new, top)
                    except FileNotFoundError:
                        continue
                    except OSError as error:
                        problems.add(f"{name}/{entry}", error)
                        continue
                    taken.add(new)
                    queue.append(new)
        finally:
            os.close(folder)
        _rmdir(name, top, problems, name)


def _move(name: str, folder: int, new: str, top: int) -> None:
    """Rename a folder up into the top folder. Moving a folder to another parent needs write
    permission on it (its ".." changes): one the job made read-only gets its owner's back."""
    try:
        os.rename(name, new, src_dir_fd=folder, dst_dir_fd=top)
    except PermissionError:
        os.chmod(name, stat.S_IRWXU, dir_fd=folder)
        os.rename(name, new, src_dir_fd=folder, dst_dir_fd=top)


def _entries(folder: int, problems: _Problems, where: str) -> list[tuple[str, bool]]:
    """(name, is a folder -- not a symlink to one) of each entry, read in full before any
    is changed (the file type comes with the listing: no stat per file)."""
    try:
        with os.scandir(folder) as listing:
            return [(entry.name, _is_dir(entry)) for entry in listing]
    except OSError as error:
        problems.add(where, error)
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False  # gone, or unreadable: unlink will say which


def _open_dir(name: str, parent: int, problems: _Problems, where: str) -> int | None:
    """Open a folder to empty it, never through a symlink; one we may not enter or change
    (read-only, mode 000) is given back its owner's rights first, when we are that owner."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        folder = os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        return None
    except PermissionError:
        try:
            os.chmod(name, stat.S_IRWXU, dir_fd=parent)
            folder = os.open(name, flags, dir_fd=parent)
        except OSError as error:
            problems.add(where, error)
            return None
    except OSError as error:
        problems.add(where, error)
        return None
    try:
        mode = os.fstat(folder).st_mode
        if mode & stat.S_IRWXU != stat.S_IRWXU and os.geteuid() != 0:
            os.fchmod(folder, stat.S_IMODE(mode) | stat.S_IRWXU)
    except OSError:
        pass  # not ours: removing its entries will say what fails
    return folder


def _rmdir(name: str, folder: int, problems: _Problems, where: str) -> None:
    try:
        os.rmdir(name, dir_fd=folder)
    except FileNotFoundError:
        pass  # gone already: what was wanted
    except OSError as error:
        problems.add(where, error)


def _unlink(name: str, folder: int, problems: _Problems, where: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
    except OSError as error:
        problems.add(where, error)
