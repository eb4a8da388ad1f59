"""Collect submissions into the course's `submitted/<student_id>/<assignment>/` folders.

Three sources: a folder in nbgrader's layout (`<student_id>/<assignment>/*.ipynb`), a zip as
Canvas, Moodle or Blackboard download it (or in nbgrader's layout; `autograder.lms.downloads`
says whose each member is), or one notebook with the student's id. These hold what students
sent, so every file is read as hostile: no symbolic link is followed (a link to the hidden
tests or to /etc/shadow is not copied anywhere), only regular files are read (a FIFO or
/dev/zero cannot hang or exhaust the grader), every read is bounded, and a zip is read member
by member within caps on count, size, total and compression ratio. One bad student or member
is skipped and reported (`Skipped`), never the whole batch: a file that is not a notebook, an
older submission of a student (the latest wins), an odd id, an oversize member. Only a source
holding nothing usable is an error. Each notebook is stored under submitted/ (atomically)
before it is graded, so nothing is lost.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple, TextIO

from autograder.course import Course, usable_student_id
from autograder.errors import SubmissionError
from autograder.files import kind_of, read_regular_file, write_atomic
from autograder.lms import downloads
from autograder.lms.downloads import DownloadSettingsError, Owner, Reading
from autograder.lms.record import LMS_FILE, read_lms_record, remove_lms_record, write_lms_record
from autograder.results import clean_text
from autograder.timestamps import parse_utc

# Letters of any script (nbgrader takes "josé"), digits and ._@+-: never a slash, a space, a
# control character or a leading dot. Ids are compared in Unicode's NFC form (macOS zips NFD).
TIMESTAMP_FILE = "timestamp.txt"
MAX_ATTEMPT_TEXT_BYTES = 64 * 1024  # a Blackboard attempt's .txt

# The limits on what is read from instructor inputs (which hold what students sent).
MAX_NOTEBOOK_BYTES = 20 * 1024 * 1024  # one notebook, on disk or uncompressed from a zip
MAX_TIMESTAMP_BYTES = 256  # timestamp.txt holds one date
MAX_ZIP_MEMBERS = 5_000  # entries of a zip looked at; the rest are skipped and reported
MAX_ZIP_INDEX_BYTES = 8 * 1024 * 1024  # a zip's central directory, parsed whole by zipfile
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024  # bytes uncompressed from one zip, all members
MAX_ZIP_RATIO = 100  # uncompressed / compressed bytes of a member, past the first MiB
_ZIP_RATIO_FREE_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Submission:
    student_id: str
    notebook: Path | None  # None: the student's folder holds no notebook
    timestamp: str | None = None
    lms_late: bool = False  # the LMS marked it late (Canvas's LATE; lms.json "late")
    reason: str | None = None  # why there is no notebook: "... (found: report.pdf)"
    # The notebook's bytes, when they are not in a file (the service's uploads); `notebook`
    # then only names it.
    content: bytes | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """The notebook's bytes (SubmissionError if it cannot be read)."""
        if self.content is not None:
            return self.content
        if self.notebook is None:
            raise SubmissionError("no notebook was submitted")
        return read_notebook_bytes(self.notebook)


@dataclass(frozen=True)
class Skipped:
    """One student, file or zip member that was not collected, and why (clean text)."""

    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


class Collected(NamedTuple):
    submissions: list[Submission]
    skipped: list[Skipped]






@dataclass
class _Candidate:
    student_id: str
    item: str  # how the instructor finds it: a path, or zip:member
    read: Callable[[], bytes | None]  # None: no notebook; raises SubmissionError
    timestamp: str | None  # the submission time the source states (UTC), taken every time
    lms: dict | None = None  # lms.json, for a member of an LMS download
    reason: str | None = None  # why there is no notebook
    # No time is stated and none may be invented (Canvas; an unusable timestamp.txt): no
    # timestamp.txt is stored. Otherwise a source without a time gets the time of collection.
    unknown_time: bool = False
    zip_minute: tuple[int, ...] | None = None  # the zip member time taken as submission time


def collect(course: Course, assignment: str, notebook_name: str, source: Path,
            student_id: str | None = None, out: TextIO | None = None) -> Collected:
    """Store every usable submission found in `source` under submitted/; return them, sorted,
    and what was skipped, with reasons. A source holding nothing usable is an error, and
    then nothing is written. What kind of download `source` was recognised as is printed
    to `out`."""
    source = Path(source)
    if not source.exists() and not source.is_symlink():
        raise SubmissionError(f"{clean_text(source, 300)} does not exist")
    skipped: list[Skipped] = []
    with ExitStack() as stack:
        if source.suffix == ".ipynb" and not source.is_dir():
            if student_id is None:  # a name made up from the file would be nobody's id
                raise SubmissionError(f"one notebook needs --student ID (whose is "
                                      f"{clean_text(source.name, 200)}?)")
            candidates = [_Candidate(student_id, clean_text(source, 300),
                                     lambda: read_regular_file(source, MAX_NOTEBOOK_BYTES),
                                     None)]
        elif source.is_dir():
            candidates = _from_layout(source, assignment, skipped)
        elif source.suffix == ".zip":
            candidates = _from_zip(source, assignment, notebook_name, _reading(course),
                                   skipped, stack, out)
        else:
            raise SubmissionError(f"{clean_text(source, 300)} is neither a folder, a .zip nor "
                                  "an .ipynb file")
        candidates = _usable_ids(candidates, skipped)
        if student_id is not None and len(candidates) > 1:
            raise SubmissionError("--student names one student, but the source holds "
                                  f"{len(candidates)} submissions")
        mismatched = [c.student_id for c in candidates
                      if student_id is not None and c.student_id != student_id]
        if mismatched:  # the download says whose it is: a --student that disagrees is a slip
            raise SubmissionError(f"--student {clean_text(student_id, 100)}, but "
                                  f"{clean_text(source.name, 200)} holds the submission of "
                                  f"'{clean_text(mismatched[0], 100)}': nothing was stored")
        stored = []
        for candidate in candidates:
            try:
                content = candidate.read()
                stored.append(_store(course, assignment, notebook_name, candidate, content))
            except SubmissionError as error:
                skipped.append(Skipped(candidate.item, str(error)))
    if not stored:
        raise SubmissionError(f"{clean_text(source, 300)} holds no usable submission: "
                              + "; ".join(str(s) for s in skipped[:10]))
    return Collected(sorted(stored, key=lambda s: s.student_id), skipped)


def _reading(course: Course) -> Reading:
    try:
        return downloads.reading(course.config)
    except DownloadSettingsError as error:
        raise SubmissionError(f"{course.root / 'nbgrader_config.py'}: {error}") from None


def submitted_in_course(course: Course, assignment: str, notebook_name: str) -> Collected:
    """The submissions already under the course's submitted/ folder (nothing is copied), and
    the students skipped: a linked folder or notebook, an oversized one, an unusable id."""
    root = course.root / "submitted"
    found: list[Submission] = []
    skipped: list[Skipped] = []
    if not root.is_dir():
        return Collected(found, skipped)
    for student_dir, assignment_dir in _student_folders(root, assignment, skipped):
        sid = student_dir.name
        if not usable_student_id(sid):
            skipped.append(Skipped(clean_text(student_dir, 300), _bad_id(sid)))
            continue
        try:
            notebook = _stored_notebook(assignment_dir, notebook_name)
        except SubmissionError as error:
            skipped.append(Skipped(clean_text(student_dir, 300), str(error)))
            continue
        reason = None if notebook else _no_notebook(_other_files(assignment_dir))
        found.append(Submission(sid, notebook, _listed_timestamp(assignment_dir, skipped),
                                lms_late=_stored_lms_late(course, sid, assignment),
                                reason=reason))
    return Collected(found, skipped)


def _stored_lms_late(course: Course, student_id: str, assignment: str) -> bool:
    """The LMS's late flag this grader recorded; False where there is none (or a record it
    did not write: see autograder/lms/record.py)."""
    record = read_lms_record(course, student_id, assignment)
    return bool(record and record.get("late") is True)


def _stored_notebook(folder: Path, notebook_name: str) -> Path | None:
    """The notebook under submitted/<student>/<assignment>/ (its own name, else the only one),
    checked to be a regular file within the cap; None if there is none."""
    named = folder / f"{notebook_name}.ipynb"
    if os.path.lexists(named):
        notebook = named
    else:
        candidates = _notebooks_in(folder)
        if len(candidates) > 1:
            raise SubmissionError(_several(candidates))
        if not candidates:
            return None
        notebook = candidates[0]
    info = os.lstat(notebook)
    if not stat.S_ISREG(info.st_mode):
        raise SubmissionError(f"{clean_text(notebook, 300)} is {kind_of(info.st_mode)}, "
                              "not a regular file: not graded")
    if info.st_size > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"{clean_text(notebook, 300)} is larger than "
                              f"{MAX_NOTEBOOK_BYTES} bytes: not graded")
    return notebook


def _student_folders(root: Path, assignment: str,
                     skipped: list[Skipped]) -> list[tuple[Path, Path]]:
    """(student folder, its assignment folder) for each real (unlinked) pair under `root`;
    a linked one is skipped and reported."""
    pairs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.is_symlink():
            skipped.append(Skipped(clean_text(path, 300), "a symbolic link: not followed"))
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        assignment_dir = path / assignment
        try:
            mode = os.lstat(assignment_dir).st_mode
        except OSError:
            continue  # this student has nothing for this assignment
        if stat.S_ISLNK(mode):
            skipped.append(Skipped(clean_text(assignment_dir, 300),
                                   "a symbolic link: not followed"))
        elif stat.S_ISDIR(mode):
            pairs.append((path, assignment_dir))
    return pairs


def _notebooks_in(folder: Path) -> list[Path]:
    # Hidden files are macOS "._x.ipynb" and the like, not submissions.
    return sorted(Path(entry.path) for entry in os.scandir(folder)
                  if entry.name.endswith(".ipynb") and not entry.name.startswith("."))


def _other_files(folder: Path) -> list[str]:
    """What else a student's folder holds (a PDF, a .py): named when there is no notebook."""
    ours = {TIMESTAMP_FILE, LMS_FILE}
    return sorted(entry.name for entry in os.scandir(folder)
                  if not entry.name.startswith(".") and entry.name not in ours
                  and not entry.name.endswith(".ipynb") and entry.is_file(follow_symlinks=False))


def _several(notebooks: list[Path] | list[str]) -> str:
    names = [PurePosixPath(str(path)).name for path in notebooks]
    return (f"holds {len(names)} notebooks ({clean_text(', '.join(names), 300)}); one is "
            "expected")


def _no_notebook(found: list[str]) -> str:
    shown = clean_text(", ".join(found), 300)
    return f"no notebook was submitted (found: {shown})" if found else "no notebook was submitted"


def _from_layout(folder: Path, assignment: str, skipped: list[Skipped]) -> list[_Candidate]:
    pairs = _student_folders(folder, assignment, skipped)
    if not pairs and not skipped:
        shape = downloads.detect(_files_under(folder), assignment)
        if shape != downloads.NBGRADER:  # Safari unzips downloads (and moves the zip away)
            lms = shape.capitalize()
            raise SubmissionError(
                f"{clean_text(folder, 300)} holds the files of an unzipped "
                f"{downloads.LABELS[shape].removeprefix('a ')}, not nbgrader's "
                f"<student_id>/{assignment}/ folders: pass the zip {lms} gave (download it "
                f"again; in Safari, turn off \"Open safe files after downloading\"), or zip "
                f"this folder again (zip -r submissions.zip {clean_text(folder.name, 100)}) "
                "and pass that")
        raise SubmissionError(f"{clean_text(folder, 300)} holds no <student_id>/{assignment}/ "
                              "folder (nbgrader's submitted/ layout)")
    found = []
    for student_dir, assignment_dir in pairs:
        notebooks = _notebooks_in(assignment_dir)
        if len(notebooks) > 1:
            skipped.append(Skipped(clean_text(assignment_dir, 300), _several(notebooks)))
            continue
        read = _notebook_reader(notebooks[0]) if notebooks else (lambda: None)
        reason = None if notebooks else _no_notebook(_other_files(assignment_dir))
        sid = unicodedata.normalize("NFC", student_dir.name)  # the id is stored in NFC
        timestamp, problem = _timestamp_in(assignment_dir)
        if problem:
            skipped.append(Skipped(clean_text(assignment_dir / TIMESTAMP_FILE, 300), problem))
        found.append(_Candidate(sid, clean_text(student_dir, 300), read, timestamp,
                                reason=reason, unknown_time=problem is not None))
    return found


def _files_under(folder: Path) -> list[str]:
    """The relative paths of the files under `folder` (links not followed; at most
    MAX_ZIP_MEMBERS, as a zip), to tell what kind of download it was unzipped from."""
    found: list[str] = []
    for top, folders, files in os.walk(folder):  # os.walk follows no link to a folder
        folders[:] = [name for name in folders if not _archiver(name)]
        found += [Path(top, name).relative_to(folder).as_posix() for name in files
                  if not _archiver(name)]
        if len(found) >= MAX_ZIP_MEMBERS:
            break
    return found[:MAX_ZIP_MEMBERS]


def _notebook_reader(path: Path) -> Callable[[], bytes]:
    return lambda: read_regular_file(path, MAX_NOTEBOOK_BYTES)


class _Budget:
    """What is left of a zip's total uncompressed bytes; every byte read counts."""

    def __init__(self, total: int) -> None:
        self.left = total


def _from_zip(path: Path, assignment: str, notebook_name: str, reading: Reading,
              skipped: list[Skipped], stack: ExitStack, out: TextIO | None) -> list[_Candidate]:
    name = clean_text(path.name, 200)
    archive = _open_zip(path)
    stack.enter_context(archive)
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        skipped.append(Skipped(name, f"holds {len(members)} members; the "
                                     f"{len(members) - MAX_ZIP_MEMBERS} after the first "
                                     f"{MAX_ZIP_MEMBERS} are skipped"))
        members = members[:MAX_ZIP_MEMBERS]
    files, archiver = [], 0
    for member in members:
        item = f"{name}:{clean_text(member.filename, 300)}"
        parts = PurePosixPath(member.filename).parts
        if member.filename.startswith("/") or ".." in parts:
            skipped.append(Skipped(item, "an unsafe path (absolute or with '..') in the zip"))
            continue
        if member.is_dir():
            continue
        if _archiver(member.filename):
            archiver += 1
            continue
        # A Unix zip records each member's file type; a link's "content" is its target.
        mode = member.external_attr >> 16 if member.create_system == 3 else 0
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            skipped.append(Skipped(item, f"{kind_of(mode)} in the zip: not read"))
            continue
        files.append(member)
    if archiver:
        skipped.append(Skipped(name, f"{archiver} archiver metadata member(s) (__MACOSX/, dot "
                                     "files): not submissions"))
    if not any(reading.is_notebook(member.filename) and not _archiver(member.filename)
               for member in members):  # no student is graded: a wrong download?
        raise SubmissionError(f"{name} contains no notebook "
                              f"({', '.join(reading.valid_ext)} file)")
    shape = (downloads.NAMED_REGEXP if reading.pattern is not None
             else downloads.detect([member.filename for member in files], assignment))
    if out is not None:
        times = ("its file times are the zip's, not submission times: lateness is Canvas's "
                 "LATE flag (c.LatePolicy.lms_flag_rule)" if shape == downloads.CANVAS
                 else reading.zone_note())
        print(f"{name}: read as {downloads.LABELS[shape]}; {times}", file=out, flush=True)
    budget = _Budget(MAX_ZIP_TOTAL_BYTES)
    usernames = (_blackboard_usernames(files, archive, budget) if shape == downloads.BLACKBOARD
                 else None)
    by_student: dict[str, list[_Member]] = {}
    for member in files:
        item = f"{name}:{clean_text(member.filename, 300)}"
        try:
            owner = downloads.recognise(member.filename, shape, assignment, reading.pattern)
            if owner is not None and usernames is not None:
                owner = _blackboard_owner(owner, member.filename, usernames)
        except downloads.AmbiguousName as error:
            skipped.append(Skipped(item, str(error)))
            continue
        if owner is None:
            skipped.append(Skipped(item, _unrecognised(shape)))
            continue
        sid = unicodedata.normalize("NFC", owner.student_id)
        if not usable_student_id(sid):
            skipped.append(Skipped(item, _bad_id(sid)))
            continue
        by_student.setdefault(sid, []).append(_Member(member, item, owner))
    found = []
    for sid, owned in by_student.items():
        candidate = _zip_candidate(sid, owned, shape, name, notebook_name, reading, archive,
                                   budget, skipped)
        if candidate is not None:
            found.append(candidate)
    _warn_if_one_minute(name, found, out)
    return found


def _blackboard_usernames(files: list[zipfile.ZipInfo], archive: zipfile.ZipFile,
                          budget: _Budget) -> dict[str, str | None]:
    """{"<Assignment>_<username>" part of a name: the username}, for Blackboard's names, whose
    username may itself hold underscores ("Backprop_john_doe_attempt_..."): the attempt's .txt
    says whose it is ("Name: John Doe (john_doe)"); where no .txt does, the part all the
    names share is the assignment's. A part read two ways maps to None."""
    heads: dict[str, str | None] = {}
    for member in files:
        base = PurePosixPath(member.filename).name
        head = downloads.blackboard_head(base)
        if head is None:
            continue
        heads.setdefault(head, None)
        if not base.endswith(".txt"):
            continue
        try:
            text = _read_member(archive, member, member.filename, budget, MAX_ATTEMPT_TEXT_BYTES)
        except SubmissionError:
            continue
        username = downloads.blackboard_record(text.decode("utf-8", errors="replace"))[1]
        if username and head.endswith("_" + username) and len(head) > len(username) + 1:
            heads[head] = username if heads[head] in (None, username) else ""
    assignment = downloads.blackboard_assignment(set(heads))
    for head, username in heads.items():
        if username is None and assignment and head.startswith(assignment + "_"):
            heads[head] = head[len(assignment) + 1:]
    return {head: username or None for head, username in heads.items()}


def _blackboard_owner(owner: Owner, path: str, usernames: dict[str, str | None]) -> Owner:
    """The owner as the attempt's .txt (or the names' shared assignment part) says."""
    head = downloads.blackboard_head(PurePosixPath(path).name)
    username = usernames.get(head) if head is not None else None
    if username is None or username == owner.student_id:
        return owner
    return replace(owner, student_id=username)


def _warn_if_one_minute(name: str, found: list[_Candidate], out: TextIO | None) -> None:
    """Member times taken as submission times that are all one minute are the time the zip
    was made (a re-zipped download, an LMS that sets none), not when students submitted."""
    minutes = [c.zip_minute for c in found if c.zip_minute is not None]
    if out is None or len(minutes) < 2 or len(set(minutes)) > 1:
        return
    when = "{:04d}-{:02d}-{:02d} {:02d}:{:02d}".format(*minutes[0])
    print(f"WARNING: {name}: all {len(minutes)} submission times are {when} (the LMS server's "
          "clock), to the minute: that is when the zip was made, not when the students "
          "submitted; late work is judged by them. Download the submissions from the LMS "
          "again rather than a re-zipped copy.", file=out, flush=True)


def _archiver(path: str) -> bool:
    """macOS's "__MACOSX/", "._x.ipynb", ".DS_Store" and other dot files: nobody's work."""
    return any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(path).parts)


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    item: str  # zip:member, cleaned
    owner: Owner


def _zip_candidate(sid: str, owned: list[_Member], shape: str, zip_name: str,
                   notebook_name: str, reading: Reading, archive: zipfile.ZipFile,
                   budget: _Budget, skipped: list[Skipped]) -> _Candidate | None:
    """One student's submission among their files in the zip: the latest notebook wins (by
    the LMS's submission time, else Canvas's submission id and -N suffix, else the member's
    time); each file not graded is listed with the reason. None: the student is skipped."""
    records = [m for m in owned if m.owner.record]
    notebooks = [m for m in owned
                 if not m.owner.record and reading.is_notebook(m.info.filename)]
    others = [m for m in owned if not m.owner.record and m not in notebooks]
    stamps = [m for m in others if shape == downloads.NBGRADER
              and PurePosixPath(m.info.filename).name == TIMESTAMP_FILE]
    others = [m for m in others if m not in stamps]
    if shape == downloads.NBGRADER and len(notebooks) > 1:  # a folder: nothing says which
        skipped.append(Skipped(f"{zip_name}:{clean_text(notebooks[0].owner.folder, 300)}",
                               _several([m.owner.file for m in notebooks])))
        winner = None
    else:
        winner = _latest(sid, notebooks, zip_name, notebook_name, reading, skipped)
    for other in others:
        if winner is not None:
            then = f"{winner.item} is graded instead"
        elif notebooks:
            then = f"'{sid}' is not graded (see their notebooks)"
        else:
            then = f"'{sid}' has no notebook in this download"
        skipped.append(Skipped(other.item, f"not a notebook (only "
                                           f"{', '.join(reading.valid_ext)} files are graded): "
                                           f"{then}"))
    if notebooks and winner is None:
        return None
    chosen = winner or max(owned, key=lambda m: _recency(m, reading))
    stated = reading.to_utc(chosen.owner.stamp) if chosen.owner.stamp is not None else None
    zip_minute = None
    if shape == downloads.NBGRADER:  # nbgrader's own record of the time, as from a folder
        stated = _timestamp_member(stamps, archive, budget, skipped)
    elif stated is None and chosen.owner.lms != downloads.CANVAS:
        # Moodle sets a member's time from the stored file: its submission time. Canvas's
        # is the time its zip was made (content_zipper.rb sets none): never a submission time.
        stated = _member_time(chosen.info, reading)
        zip_minute = chosen.info.date_time[:5] if stated is not None else None
    timestamp = stated.isoformat() if stated is not None else None
    lms = None
    if shape != downloads.NBGRADER:
        display = chosen.owner.name
        record = [m for m in records if m.owner.stamp == chosen.owner.stamp]
        if display is None and record:
            display = _blackboard_name(archive, record[0], budget)
        lms = {"lms": chosen.owner.lms, "file": clean_text(chosen.info.filename, 300),
               "name": clean_text(display, 200) if display else None, "user_id": sid,
               "submission_id": chosen.owner.submission_id, "late": chosen.owner.late,
               "submitted_at": timestamp}
    if winner is None:
        return _Candidate(sid, f"{zip_name}:{sid}", lambda: None, timestamp, lms,
                          _no_notebook([m.owner.file for m in others]),
                          unknown_time=timestamp is None, zip_minute=zip_minute)
    return _Candidate(sid, winner.item, _member_reader(archive, winner.info, winner.item,
                                                       budget), timestamp, lms,
                      unknown_time=timestamp is None, zip_minute=zip_minute)


def _timestamp_member(stamps: list[_Member], archive: zipfile.ZipFile, budget: _Budget,
                      skipped: list[Skipped]) -> datetime | None:
    """The time in a student folder's timestamp.txt inside an nbgrader-layout zip (a member's
    own time is when someone zipped it, never the submission's); None without a usable one."""
    if len(stamps) != 1:
        for member in stamps:
            skipped.append(Skipped(member.item, "one of several timestamp.txt files of this "
                                                f"student: not read; {_UNKNOWN_TIME}"))
        return None
    member = stamps[0]
    try:
        raw = _read_member(archive, member.info, member.item, budget, MAX_TIMESTAMP_BYTES)
    except SubmissionError as error:
        skipped.append(Skipped(member.item, f"{error}; {_UNKNOWN_TIME}"))
        return None
    text, problem = timestamp_text(raw)
    if problem:
        skipped.append(Skipped(member.item, problem))
        return None
    return parse_utc(text).replace(tzinfo=UTC)


def _latest(sid: str, notebooks: list[_Member], zip_name: str, notebook_name: str,
            reading: Reading, skipped: list[Skipped]) -> _Member | None:
    """The student's latest notebook; the others are listed as superseded. Two sent at once
    (nothing orders them): the one named like the assignment, else none (listed)."""
    if not notebooks:
        return None
    latest = max(_recency(m, reading) for m in notebooks)
    top = [m for m in notebooks if _recency(m, reading) == latest]
    if len(top) > 1:
        named = [m for m in top if _named_like(m.owner.file, notebook_name)]
        if len(named) != 1:
            skipped.append(Skipped(f"{zip_name}:{sid}",
                                   f"'{sid}' sent {_several([m.owner.file for m in top])[6:]} "
                                   f"at once, and not exactly one is named {notebook_name}.ipynb"))
            return None
        top = named
    winner = top[0]
    for other in notebooks:
        if other is winner:
            continue
        if _recency(other, reading) < latest:
            reason = f"older submission of '{sid}' superseded by {winner.item}"
        else:
            reason = f"sent with {winner.item}, which is graded (named {notebook_name}.ipynb)"
        skipped.append(Skipped(other.item, reason))
    return winner


def _recency(member: _Member, reading: Reading) -> tuple:
    owner = member.owner
    stated = reading.to_utc(owner.stamp) if owner.stamp is not None else None
    number = (int(owner.submission_id) if owner.submission_id and owner.submission_id.isdigit()
              else -1)
    # Canvas's member times are all the zip's: its order is the submission id and -N alone.
    member_time = (0,) * 6 if owner.lms == downloads.CANVAS else member.info.date_time
    return ((1, stated) if stated else (0, _EPOCH), number, owner.resubmission, member_time)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _named_like(file: str, notebook_name: str) -> bool:
    """backprop.ipynb, or backprop-1.ipynb as Canvas renames a resubmitted file."""
    return re.fullmatch(re.escape(notebook_name) + r"(-\d+)?\.ipynb", file) is not None


def _unrecognised(shape: str) -> str:
    if shape == downloads.NBGRADER:
        return "not in a student's folder, and not named as an LMS names its downloads: whose " \
               "it is cannot be known"
    return (f"not named as the rest of the zip ({downloads.LABELS[shape]}): whose it is cannot "
            "be known")


def _blackboard_name(archive: zipfile.ZipFile, record: _Member, budget: _Budget) -> str | None:
    """The display name in a Blackboard attempt's .txt; None if it cannot be read."""
    try:
        text = _read_member(archive, record.info, record.item, budget, MAX_ATTEMPT_TEXT_BYTES)
    except SubmissionError:
        return None
    return downloads.blackboard_record(text.decode("utf-8", errors="replace"))[0]


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The zip, once its index is known to be small enough to parse (zipfile reads the whole
    central directory into memory at once)."""
    name = clean_text(path.name, 200)
    # zipfile's own reader of the end record (private, but there since Python 2); should a
    # release drop it, the zip is opened unchecked rather than refused.
    end_record = getattr(zipfile, "_EndRecData", None)
    try:
        with open(path, "rb") as handle:
            end = end_record(handle) if end_record else [0] * 10
    except OSError as error:
        raise SubmissionError(f"{name} cannot be read: {error.strerror}") from None
    if not end:
        raise SubmissionError(f"{name} is not a valid zip file")
    if end[getattr(zipfile, "_ECD_SIZE", 5)] > MAX_ZIP_INDEX_BYTES:
        raise SubmissionError(f"{name}: its index is larger than {MAX_ZIP_INDEX_BYTES} bytes "
                              f"(more than {MAX_ZIP_MEMBERS} members could be listed)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise SubmissionError(f"{name} is not a valid zip file") from None


def _member_reader(archive: zipfile.ZipFile, member: zipfile.ZipInfo, item: str,
                   budget: _Budget) -> Callable[[], bytes]:
    def read() -> bytes:
        return _read_member(archive, member, item, budget, MAX_NOTEBOOK_BYTES)

    return read


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, item: str,
                 budget: _Budget, cap: int) -> bytes:
    """A member's bytes, read through zipfile in chunks: its declared size is not trusted,
    the read stops at whichever cap it meets first."""
    if member.file_size > cap:
        raise SubmissionError(f"{item} is larger than {cap} bytes: not read")
    ratio_cap = max(_ZIP_RATIO_FREE_BYTES, MAX_ZIP_RATIO * member.compress_size)
    chunks, total = [], 0
    try:
        with archive.open(member) as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                budget.left -= len(chunk)
                if total > cap:
                    raise SubmissionError(f"{item} is larger than {cap} bytes uncompressed: "
                                          "not read")
                if total > ratio_cap:
                    raise SubmissionError(f"{item} is compressed more than {MAX_ZIP_RATIO} "
                                          "times (a zip bomb?): not read")
                if budget.left < 0:
                    raise SubmissionError(f"the zip's notebooks exceed {MAX_ZIP_TOTAL_BYTES} "
                                          "bytes uncompressed in all: this one and the rest "
                                          "are not read")
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
            NotImplementedError, ValueError) as error:
        # Corrupt data, a bad CRC, encryption, an unsupported compression method...
        raise SubmissionError(f"{item} cannot be read from the zip: "
                              f"{clean_text(error, 200)}") from None
    return b"".join(chunks)


def _member_time(member: zipfile.ZipInfo, reading: Reading) -> datetime | None:
    """A member's time (the LMS server's local time: zips carry no zone), in UTC."""
    try:
        return reading.to_utc(datetime(*member.date_time))
    except ValueError:  # e.g. a zeroed DOS date
        return None


# A submission time outside these years is a typo or a forgery, not a submission.
EARLIEST_TIME, LATEST_TIME = datetime(1970, 1, 1), datetime(2100, 1, 1)


def _timestamp_in(folder: Path) -> tuple[str | None, str | None]:
    """(timestamp.txt's time, None) if it is a small regular file holding a time nbgrader
    reads; (None, None) without one; (None, why) for an unusable one: then the time is
    unknown."""
    path = folder / TIMESTAMP_FILE
    if not os.path.lexists(path):
        return None, None
    try:
        raw = read_regular_file(path, MAX_TIMESTAMP_BYTES)
    except SubmissionError as error:
        return None, f"{error}; {_UNKNOWN_TIME}"
    return timestamp_text(raw)


_UNKNOWN_TIME = "the submission time is unknown (judged on time, or by the LMS's late flag)"


def timestamp_text(raw: bytes) -> tuple[str | None, str | None]:
    """(the time, None) if `raw` (a timestamp.txt's bytes) is exactly what nbgrader's
    Autograde button reads (its text stripped, parsed by nbgrader's parse_utc: a byte-order
    mark or an invisible character it would choke on is not cleaned away first) in a sane
    year; else (None, why). dateutil alone reads "1 2 3", which nbgrader cannot."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, f"timestamp.txt is not UTF-8 text; {_UNKNOWN_TIME}"
    shown = clean_text(text, 100)
    if shown != text:  # control, format or bidi characters: nothing nbgrader reads as a time
        return None, f"{shown!r} holds characters no time has; {_UNKNOWN_TIME}"
    try:
        moment = parse_utc(text)
    except (ValueError, OverflowError, TypeError, LookupError):
        return None, f"{shown!r} is not a time nbgrader can read; {_UNKNOWN_TIME}"
    if not EARLIEST_TIME <= moment < LATEST_TIME:
        return None, (f"{shown!r} is not between {EARLIEST_TIME.year} and "
                      f"{LATEST_TIME.year - 1}; {_UNKNOWN_TIME}")
    return text, None


def _listed_timestamp(folder: Path, skipped: list[Skipped]) -> str | None:
    """timestamp.txt's usable time; an unusable one is listed with the skipped items."""
    timestamp, problem = _timestamp_in(folder)
    if problem:
        skipped.append(Skipped(clean_text(folder / TIMESTAMP_FILE, 300), problem))
    return timestamp


def _bad_id(sid: str) -> str:
    return (f"'{clean_text(sid, 120)}' is not a usable student id (letters, digits and _.@+- "
            "only, starting with a letter or digit)")


def _usable_ids(candidates: list[_Candidate], skipped: list[Skipped]) -> list[_Candidate]:
    """Candidates whose id is usable and unique; a student named twice is skipped whole (which
    of the two is theirs cannot be known)."""
    by_id: dict[str, list[_Candidate]] = {}
    for candidate in candidates:
        if usable_student_id(candidate.student_id):
            by_id.setdefault(candidate.student_id, []).append(candidate)
        else:
            skipped.append(Skipped(candidate.item, _bad_id(candidate.student_id)))
    usable = []
    for sid, same in by_id.items():
        if len(same) == 1:
            usable.append(same[0])
        else:
            skipped.append(Skipped(sid, f"student '{sid}' appears more than once in the "
                                        f"submissions ({', '.join(c.item for c in same)}): "
                                        "none of them is collected"))
    return usable


def read_notebook_bytes(path: Path) -> bytes:
    """A submitted notebook's bytes: a regular file (no symlink followed), read bounded."""
    return read_regular_file(path, MAX_NOTEBOOK_BYTES)


def _store(course: Course, assignment: str, notebook_name: str, candidate: _Candidate,
           content: bytes | None) -> Submission:
    """Write one submission under submitted/<sid>/<assignment>/: the notebook, timestamp.txt
    and, for an LMS download, lms.json. A time the source states is taken every time (a
    corrected c.LmsDownload.timezone takes effect on the next import). Where none is stated,
    timestamp.txt is left out when none may be invented (Canvas: as nbgrader's zip_collect,
    which writes one only from a time in the file name), else it is the time of collection,
    which the same notebook collected again keeps."""
    sid = candidate.student_id
    target = course.submitted_dir(sid, assignment)
    for folder in (target.parent, target):  # submitted/<sid>, submitted/<sid>/<assignment>
        if folder.is_symlink():
            raise SubmissionError(f"{clean_text(folder, 300)} is a symbolic link: "
                                  "nothing is written through it")
    target.mkdir(parents=True, exist_ok=True)
    notebook = target / f"{notebook_name}.ipynb"
    timestamp = candidate.timestamp
    if timestamp is None and not candidate.unknown_time:
        kept = _timestamp_in(target)[0] if content is not None and _holds(notebook, content) \
            else None
        timestamp = kept or _now()
    lms = dict(candidate.lms) if candidate.lms else None
    if timestamp is None:  # an older import's time is not this submission's
        (target / TIMESTAMP_FILE).unlink(missing_ok=True)
    else:
        write_atomic(target / TIMESTAMP_FILE, timestamp.encode("utf-8"))
    if lms is not None:
        write_lms_record(course, sid, assignment, lms)
    else:  # an earlier LMS import's flag is not this submission's
        remove_lms_record(course, sid, assignment)
    late = bool(lms and lms["late"])
    if content is None:  # an empty submission: graded as such, whatever an older one held
        notebook.unlink(missing_ok=True)
        return Submission(sid, None, timestamp, late, candidate.reason)
    write_atomic(notebook, content)
    return Submission(sid, notebook, timestamp, late)


def _holds(path: Path, content: bytes) -> bool:
    """Whether `path` is a regular file holding exactly `content`."""
    try:
        return read_regular_file(path, MAX_NOTEBOOK_BYTES) == content
    except SubmissionError:
        return False





def _now() -> str:
    return datetime.now(UTC).isoformat()
