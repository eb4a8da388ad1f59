"""Reading what others gave us and writing what we keep, the two ways every module does it.

`read_regular_file`: a file from an instructor input or a student (a notebook, a
timestamp.txt, a CSV, a template) is read as hostile -- no symbolic link is followed, only a
regular file is opened (a FIFO or /dev/zero cannot hang or exhaust the grader), and the read
itself stops past its cap, whatever the size stat claims.

`write_atomic`: everything we write (submissions, results, feedback, exports) goes through a new
file renamed over the target: a reader sees the old content or the new, never half, and a link
planted at the target is replaced, never written through.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from autograder.errors import SubmissionError
from autograder.results import clean_text

_CHUNK = 64 * 1024


def read_regular_file(path: Path, cap: int) -> bytes:
    """The bytes of `path`, which must be a regular file (not a symbolic link, FIFO, device or
    folder) of at most `cap` bytes. The size is not trusted from stat: the read itself stops
    past `cap`. Raises SubmissionError naming the file and the problem."""
    name = clean_text(path, 300)
    try:
        # lstat first: a device or FIFO is never even opened (opening some has effects).
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise SubmissionError(f"{name} is {kind_of(mode)}, not a regular file: not read")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # swapped for a link after the lstat
            raise SubmissionError(f"{name} is a symbolic link: not followed") from None
        raise SubmissionError(f"{name} cannot be read: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped after the lstat
            raise SubmissionError(f"{name} is {kind_of(info.st_mode)}, not a regular file: "
                                  "not read")
        if info.st_size > cap:  # a shortcut only: the loop below does not trust the size
            raise SubmissionError(f"{name} is larger than {cap} bytes: not read")
        chunks, total = [], 0
        while True:
            try:
                chunk = os.read(fd, min(_CHUNK, cap + 1 - total))
            except OSError as error:
                raise SubmissionError(f"{name} cannot be read: {error.strerror}") from None
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > cap:
                raise SubmissionError(f"{name} is larger than {cap} bytes: not read")
            chunks.append(chunk)
    finally:
        os.close(fd)


def kind_of(mode: int) -> str:
    """What a file mode is, in words ("a symbolic link", "a FIFO", ...)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write through a new file renamed over `path`: a link planted at `path` is replaced,
    never written through, and a reader sees the old content or the new. The file is its
    owner's alone (mkstemp's 0600) unless `mode` says otherwise."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(partial, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(partial)
        raise


def change_stamp(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is written (or a folder's entries change): its inode, size,
    and modification and change times; None if there is nothing there. A long-lived process
    compares stamps to know when to read a file again."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns
