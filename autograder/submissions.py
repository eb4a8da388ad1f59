"""Collect submissions into the course's `submitted/<student_id>/<assignment>/` folders.

Three sources: a folder in nbgrader's layout (`<student_id>/<assignment>/*.ipynb`), a zip of
notebooks as an LMS downloads them, or one notebook. Everything is checked before anything is
written, and each notebook is stored under submitted/ before it is graded, so nothing is lost.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from autograder.course import Course

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
# Canvas names downloads "<name>[_LATE]_<user id>_<submission id>_<file>".
CANVAS_NAME = re.compile(r"^(?P<student>[^_]+)(?:_late)?_\d+_\d+_.+\.ipynb$", re.IGNORECASE)
MAX_NOTEBOOK_BYTES = 20 * 1024 * 1024
TIMESTAMP_FILE = "timestamp.txt"


class SubmissionError(Exception):
    """The submissions given cannot be collected; the message names the file and the problem."""


@dataclass(frozen=True)
class Submission:
    student_id: str
    notebook: Path | None  # None: the student's folder holds no notebook
    timestamp: str | None = None


def collect(course: Course, assignment: str, notebook_name: str, source: Path,
            student_id: str | None = None) -> list[Submission]:
    """Store every submission found in `source` under submitted/ and return them, sorted."""
    source = Path(source)
    if not source.exists():
        raise SubmissionError(f"{source} does not exist")
    if source.is_dir():
        found = _from_layout(source, assignment)
    elif source.suffix == ".zip":
        found = _from_zip(source, assignment)
    elif source.suffix == ".ipynb":
        found = [(student_id or source.stem, _read_notebook_bytes(source), _now())]
    else:
        raise SubmissionError(f"{source} is neither a folder, a .zip nor an .ipynb file")
    if student_id is not None and len(found) != 1:
        raise SubmissionError("--student names one student, but the source holds "
                              f"{len(found)} submissions")
    _check_ids(found)
    stored = []
    for sid, content, timestamp in found:
        stored.append(_store(course, assignment, notebook_name, sid, content, timestamp))
    return sorted(stored, key=lambda submission: submission.student_id)


def submitted_in_course(course: Course, assignment: str, notebook_name: str) -> list[Submission]:
    """The submissions already under the course's submitted/ folder."""
    root = course.root / "submitted"
    if not root.is_dir():
        return []
    return [_stored(course.submitted_dir(d.name, assignment), d.name, notebook_name)
            for d in sorted(root.iterdir()) if (d / assignment).is_dir()]


def _from_layout(folder: Path, assignment: str) -> list[tuple[str, bytes | None, str | None]]:
    found = []
    for student_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        assignment_dir = student_dir / assignment
        if not assignment_dir.is_dir():
            continue
        notebooks = sorted(p for p in assignment_dir.glob("*.ipynb")
                           if not p.name.startswith("."))  # macOS "._x.ipynb" and the like
        if len(notebooks) > 1:
            raise SubmissionError(f"{assignment_dir} holds {len(notebooks)} notebooks; "
                                  "one is expected")
        content = _read_notebook_bytes(notebooks[0]) if notebooks else None
        found.append((student_dir.name, content, _read_timestamp(assignment_dir)))
    if not found:
        raise SubmissionError(f"{folder} holds no <student_id>/{assignment}/ folder "
                              "(nbgrader's submitted/ layout)")
    return found


def _from_zip(path: Path, assignment: str) -> list[tuple[str, bytes | None, str | None]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise SubmissionError(f"{path} is not a valid zip file") from None
    with archive:
        members = [m for m in archive.infolist() if _is_notebook_member(m)]
        if not members:
            raise SubmissionError(f"{path} contains no .ipynb file")
        found = []
        for member in members:
            if member.file_size > MAX_NOTEBOOK_BYTES:
                raise SubmissionError(f"{path}: {member.filename} is larger than "
                                      f"{MAX_NOTEBOOK_BYTES} bytes")
            sid = _student_of_member(PurePosixPath(member.filename).parts, assignment)
            found.append((sid, archive.read(member), _zip_time(member)))
    return found


def _is_notebook_member(member: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(member.filename).parts
    return (not member.is_dir() and member.filename.endswith(".ipynb")
            and not any(part.startswith((".", "__MACOSX")) for part in parts))


def _student_of_member(parts: tuple[str, ...], assignment: str) -> str:
    """The folder holding the notebook (or the one above it, if that one is named after the
    assignment: nbgrader's <student>/<assignment>/ layout); a file at the top of the zip is
    named by Canvas's pattern, else by its stem."""
    folders = list(parts[:-1])
    if folders and folders[-1] == assignment and len(folders) > 1:
        folders.pop()
    if folders:
        return folders[-1]
    name = PurePosixPath(parts[-1])
    match = CANVAS_NAME.match(name.name)
    return match.group("student") if match else name.stem


def _zip_time(member: zipfile.ZipInfo) -> str | None:
    # Zip times carry no time zone; like nbgrader's own timestamps they are read as UTC.
    try:
        return datetime(*member.date_time, tzinfo=UTC).isoformat()
    except ValueError:  # e.g. a zeroed DOS date
        return None


def _read_timestamp(folder: Path) -> str | None:
    """timestamp.txt, if it holds a date nbgrader can read; otherwise none."""
    stamp = folder / TIMESTAMP_FILE
    if not stamp.is_file():
        return None
    text = stamp.read_text(encoding="utf-8", errors="replace").strip()[:100]
    from dateutil.parser import ParserError, parse

    try:
        parse(text)
    except (ParserError, ValueError, OverflowError):
        return None
    return text


def _check_ids(found: list[tuple[str, bytes | None, str | None]]) -> None:
    seen: set[str] = set()
    for sid, _, _ in found:
        if not STUDENT_ID.match(sid):
            raise SubmissionError(f"'{sid}' is not a usable student id (letters, digits and "
                                  "._@+- only, starting with a letter or digit)")
        if sid in seen:
            raise SubmissionError(f"student '{sid}' appears more than once in the submissions")
        seen.add(sid)


def _read_notebook_bytes(path: Path) -> bytes:
    return read_notebook_bytes(path)


def read_notebook_bytes(path: Path) -> bytes:
    """A submitted notebook's bytes: a regular file (no symlink followed), read bounded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise SubmissionError(f"{path} cannot be read ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SubmissionError(f"{path} is not a regular file")
        content = handle.read(MAX_NOTEBOOK_BYTES + 1)
    if len(content) > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"{path} is larger than {MAX_NOTEBOOK_BYTES} bytes")
    return content


def _store(course: Course, assignment: str, notebook_name: str, sid: str, content: bytes | None,
           timestamp: str | None) -> Submission:
    target = course.submitted_dir(sid, assignment)
    notebook = target / f"{notebook_name}.ipynb"
    target.mkdir(parents=True, exist_ok=True)
    (target / TIMESTAMP_FILE).write_text(timestamp or _now(), encoding="utf-8")
    if content is None:  # an empty submission: graded as such, whatever an older one held
        return Submission(sid, None, _read_timestamp(target))
    partial = notebook.with_suffix(".partial")
    partial.write_bytes(content)
    partial.replace(notebook)
    return _stored(target, sid, notebook_name)


def _stored(target: Path, sid: str, notebook_name: str) -> Submission:
    notebook = target / f"{notebook_name}.ipynb"
    if not notebook.is_file():
        candidates = sorted(p for p in target.glob("*.ipynb") if not p.name.startswith("."))
        notebook = candidates[0] if len(candidates) == 1 else None
    return Submission(sid, notebook, _read_timestamp(target))


def _now() -> str:
    return datetime.now(UTC).isoformat()
