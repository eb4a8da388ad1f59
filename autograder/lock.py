"""One grading run per course at a time: a lock file in the course, held with flock.

The kernel drops an flock when its holder dies, however it dies, so a lock left by a killed run
is simply taken by the next one; the file also records the holder's pid, so that a second run
can say who holds it. The file itself stays (removing it would let a third run lock a new file
while the second still holds the old one).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autograder.errors import UserError

LOCK_FILE = ".autograder-grading.lock"


class CourseBusy(UserError):
    """Another process is grading this course."""


@contextmanager
def course_lock(root: Path) -> Iterator[None]:
    """Hold the course's grading lock for the duration; CourseBusy if another process has it."""
    path = Path(root) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise CourseBusy("grading is already running"
                             + (f" (pid {holder})" if holder else "")
                             + f" on the course {root}; wait for it to end, or stop it "
                               "(Ctrl-C) and run again: what it stored is kept") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the pid of a run that ended is nobody's
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> int | None:
    """The pid written by the holder, if it is a number (it may not have written it yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
