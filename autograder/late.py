"""Late work: due dates, per-student extensions, the LMS late flag, and nbgrader's penalty.

- The due date is nbgrader's: `assignment.duedate` in gradebook.db (set with `nbgrader db
  assignment add NAME --duedate=...`), naive UTC as nbgrader keeps it.
- Extensions are kept in a small table of our own in gradebook.db (`autograder_extension`),
  one row per assignment and student, and copied into nbgrader's
  `submitted_assignment.extension` each time that student's result is recorded. nbgrader's
  column cannot hold them alone: its row exists only once a student has submitted (its presence
  means "submitted" to nbgrader, and formgrader and `nbgrader export` would list a phantom
  submission), while an extension is granted before the work comes in. Keeping the table in
  gradebook.db, not in a file, puts it in the same transactions and backups as the rest.
  An extension is stored as it was given: a length (`--days`, `--hours`: it follows the due
  date if that moves) or an absolute time (`--until`: the extension is what separates it from
  the due date, never negative).
- The submission time is `SubmissionResult.timestamp` (timestamp.txt, or the LMS's time that
  the download wrote there). Where the LMS download has no usable time (`lms.json`
  "submitted_at": null; every Canvas download, whose member times are the zip's) the only
  evidence is the LMS's late flag, and `LatePolicy.lms_flag_rule` decides: "late" (default)
  counts a flagged submission one second past its due date (so penalty_method "zero" zeroes
  it and a per-day plugin charges one day), "ignore" counts it on time; an unflagged one
  without a time is on time. A usable time always wins over the flag.
  Without a due date nothing is late (as nbgrader: no due date, no lateness).
- The penalty is nbgrader's: the plugin of `c.AssignLatePenalties.plugin_class` (default
  `LateSubmissionPlugin`, `c.LateSubmissionPlugin.penalty_method` "none" or "zero"), made as
  nbgrader's AssignLatePenalties makes it, from the course's Config, so a custom plugin class
  in a module of the course directory works. It is given nbgrader's notebook score (autograded
  scores, a TA's manual scores and extra credit), clamped to [0, score] as nbgrader does.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets import Enum
from traitlets.config import Configurable

from autograder.course import usable_student_id
from autograder.errors import UserError
from autograder.files import change_stamp
from autograder.results import clean_text
from autograder.timestamps import parse_utc

if TYPE_CHECKING:
    from autograder.course import Course

EXTENSION_TABLE = "autograder_extension"
MAX_CSV_BYTES = 5 * 1024 * 1024
ONE_SECOND = timedelta(seconds=1)


class LateError(UserError):
    """An extension, its CSV, or the late-penalty settings are not usable."""


class LatePolicy(Configurable):
    """How late work is judged where nbgrader has no setting for it."""

    lms_flag_rule = Enum(
        ("late", "ignore"), default_value="late",
        help="A submission from an LMS download with no usable submission time but the LMS's "
             "late flag (e.g. Canvas's _LATE_): 'late' counts it one second past the due date "
             "(its extension included), so nbgrader's LateSubmissionPlugin penalises it as "
             "late; 'ignore' counts it on time.").tag(config=True)


@dataclass(frozen=True)
class Extension:
    student_id: str
    seconds: float | None = None  # a length (--days/--hours), or
    until: datetime | None = None  # an absolute time, naive UTC (--until)

    def delta(self, due: datetime | None) -> timedelta | None:
        """The extension as nbgrader's `submitted_assignment.extension` holds it."""
        if self.seconds is not None:
            return timedelta(seconds=self.seconds)
        if self.until is None or due is None:
            return None
        return max(timedelta(0), self.until - due)

    def describe(self) -> str:
        if self.seconds is not None:
            return (f"{self.seconds / 86400:g} days" if self.seconds % 86400 == 0
                    else f"{self.seconds / 3600:g} hours")
        return f"until {iso_utc(self.until)}"


@dataclass(frozen=True)
class LmsRecord:
    """What the LMS download said about a submission (contract: lms.json)."""

    late: bool
    has_time: bool  # False: "submitted_at" was null, the time in timestamp.txt is not evidence


@dataclass(frozen=True)
class Lateness:
    """How one submission stands against its due date."""

    due: datetime | None  # the student's due date, extension included (naive UTC)
    extension: timedelta | None
    submitted: datetime | None  # the time judged (naive UTC); None: unknown
    seconds_late: float
    lms_late: bool
    flag_only: bool = False  # no usable time: judged by the LMS's late flag alone


def iso_utc(moment: datetime | None) -> str | None:
    """A naive-UTC time (nbgrader's) as ISO 8601 with its zone."""
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def read_lms_record(course: Course, student_id: str, assignment: str) -> LmsRecord | None:
    """What the LMS download said, or None (not from an LMS download, or a record this grader
    did not write: a planted one is no evidence either way)."""
    from autograder.lms.record import read_lms_record as read_signed

    data = read_signed(course, student_id, assignment)
    if data is None:
        return None
    return LmsRecord(late=data.get("late") is True,
                     has_time=isinstance(data.get("submitted_at"), str))


@contextmanager
def _importable(folder: Path) -> Iterator[None]:
    """The course directory on the import path, for a plugin class defined there."""
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(folder))


class LateRules:
    """One assignment's due date, extensions, flag rule and penalty plugin, for one run."""

    def __init__(self, course: Course, assignment: str, due: datetime | None,
                 extensions: dict[str, Extension]) -> None:
        from traitlets.config import Config

        self.course, self.assignment, self.due = course, assignment, due
        self.extensions = extensions
        self.config = course.config if course.config is not None else Config()
        self.flag_rule = LatePolicy(config=self.config).lms_flag_rule
        self._plugin: Any = None

    def judge(self, student_id: str, timestamp: str | None) -> Lateness:


        extension = (self.extensions[student_id].delta(self.due)
                     if student_id in self.extensions else None)
        due = self.due + extension if self.due is not None and extension else self.due
        lms = read_lms_record(self.course, student_id, self.assignment)
        flag_only = lms is not None and not lms.has_time
        if flag_only:  # only the flag is evidence
            late = lms.late and self.flag_rule == "late" and due is not None
            submitted = due + ONE_SECOND if late else None
        else:
            submitted = parse_utc(timestamp) if timestamp else None
        seconds = (max(0.0, (submitted - due).total_seconds())
                   if submitted is not None and due is not None else 0.0)
        return Lateness(due, extension, submitted, seconds, lms is not None and lms.late,
                        flag_only)

    def penalty(self, student_id: str, score: float, seconds_late: float) -> float | None:
        """nbgrader's penalty for this notebook score, or None (no penalty), as
        AssignLatePenalties assigns it."""
        if seconds_late <= 0:
            return None
        penalty = self.plugin().late_submission_penalty(student_id, score, seconds_late)
        if penalty is None:
            return None
        try:
            penalty = float(penalty)
        except (TypeError, ValueError):
            raise LateError(f"the late-submission plugin returned {penalty!r} for "
                            f"{student_id}, not a number") from None
        if math.isnan(penalty):
            raise LateError(f"the late-submission plugin returned NaN for {student_id}")
        return min(max(penalty, 0.0), score)  # AssignLatePenalties._check_late_penalty

    def plugin(self) -> Any:
        """Made once, on the first late submission (importing nbgrader costs 1.5 s); one that
        cannot be made is not tried again by these rules."""
        if isinstance(self._plugin, LateError):
            raise self._plugin
        if self._plugin is None:
            try:
                from nbgrader.preprocessors import AssignLatePenalties

                with _importable(self.course.root):
                    preprocessor = AssignLatePenalties(config=self.config)
                    preprocessor.init_plugin()
            except Exception as error:
                setting = self.config.AssignLatePenalties.get("plugin_class", "(default)")
                self._plugin = LateError(
                    f"the late-submission plugin c.AssignLatePenalties.plugin_class = "
                    f"{setting!r} cannot be made ({type(error).__name__}: "
                    f"{clean_text(error, 300)})")
                raise self._plugin from None
            self._plugin = preprocessor.plugin_inst
        return self._plugin


# -- the extensions table ----------------------------------------------------------------------

def _extension_table(metadata: Any) -> Any:
    from sqlalchemy import Column, DateTime, Float, String, Table

    return Table(EXTENSION_TABLE, metadata,
                 Column("assignment", String(128), primary_key=True),
                 Column("student_id", String(128), primary_key=True),
                 Column("seconds", Float, nullable=True),
                 Column("until", DateTime, nullable=True))


def _gradebook_engine(course: Course) -> Any:
    from sqlalchemy import create_engine

    path = course.root / "gradebook.db"
    if not path.is_file():
        raise LateError(f"{path} does not exist: release an assignment first (`autograder "
                        "release NAME`)")
    return create_engine(course.db_url)


def load_extensions(db: Any, assignment: str) -> dict[str, Extension]:
    """{student id: extension} of one assignment, on an open connection (none if the table
    was never made)."""
    from sqlalchemy import MetaData, inspect, select

    if not inspect(db).has_table(EXTENSION_TABLE):
        return {}
    table = _extension_table(MetaData())
    rows = db.execute(select(table.c.student_id, table.c.seconds, table.c.until)
                      .where(table.c.assignment == assignment))
    return {student: Extension(student, seconds, until) for student, seconds, until in rows}


def list_extensions(course: Course, assignment: str) -> list[Extension]:
    engine = _gradebook_engine(course)
    try:
        with engine.connect() as db:
            return sorted(load_extensions(db, assignment).values(),
                          key=lambda extension: extension.student_id)
    finally:
        engine.dispose()


def _due_date(db: Any, assignment: str) -> tuple[bool, datetime | None]:
    """(assignment known to gradebook.db, its due date)."""
    from sqlalchemy import text

    row = db.execute(text("SELECT duedate FROM assignment WHERE name = :name"),
                     {"name": assignment}).first()
    if row is None:
        return False, None


    return True, (parse_utc(str(row[0])) if row[0] is not None else None)


def due_date(course: Course, assignment: str) -> datetime | None:
    """The assignment's due date in gradebook.db (naive UTC), or None: none set, no gradebook."""
    if not (course.root / "gradebook.db").is_file():
        return None
    engine = _gradebook_engine(course)
    try:
        with engine.connect() as db:
            return _due_date(db, assignment)[1]
    except Exception:  # an older or foreign gradebook.db: the due date is then unknown
        return None
    finally:
        engine.dispose()


def extended_due(due: datetime, extension: Extension | None) -> datetime:
    """A student's due date: the assignment's (naive UTC) plus their extension, if any."""
    delta = extension.delta(due) if extension is not None else None
    return due + delta if delta else due


_reads: dict[tuple[str, str], tuple[tuple, tuple[datetime | None, dict[str, Extension]]]] = {}
_reads_lock = threading.Lock()
_headers: dict[str, tuple[int, int]] = {}  # gradebook.db -> (inode, a descriptor kept open)


def due_and_extensions(course: Course, assignment: str, strict: bool = False
                       ) -> tuple[datetime | None, dict[str, Extension]]:
    """The assignment's due date (naive UTC, or None) and its extensions by student, as
    gradebook.db holds them now: read again only when gradebook.db changed (a long-lived
    service asks on every upload). A read that failed is not kept: it answers no due date,
    or with `strict`, CourseBusy (what depends on it waits for the next try)."""
    path = course.root / "gradebook.db"
    with _reads_lock:
        stamp = (_database_stamp(path), change_stamp(path.with_name(path.name + "-wal")))
        known = _reads.get((str(path), assignment))
    if known is not None and known[0] == stamp and stamp[0] is not None:
        return known[1]
    if stamp[0] is None:  # no gradebook.db: no due date
        return None, {}
    engine = _gradebook_engine(course)
    try:
        with engine.connect() as db:  # read after the stamp: never older than it
            due = _due_date(db, assignment)[1]
            read = (due, load_extensions(db, assignment) if due is not None else {})
    except Exception as error:  # an older or foreign gradebook.db, or locked: unknown now
        if strict:
            from autograder.lock import CourseBusy

            raise CourseBusy(f"{path} cannot be read now ({type(error).__name__}): try again "
                             "in a moment") from None
        return None, {}
    finally:
        engine.dispose()
    with _reads_lock:
        _reads[(str(path), assignment)] = (stamp, read)
    return read


def _database_stamp(path: Path) -> tuple | None:
    """What changes when a SQLite database is written: its inode, size and times, and the
    header's change counter, which every commit increments (a file's times can stay the
    same for two writes close together). The header is read through a descriptor that is
    never closed: closing any descriptor of a file drops every lock this process's SQLite
    connections hold on it (POSIX locks), and another process could then write under them.
    The caller holds _reads_lock."""
    info = change_stamp(path)
    if info is None:
        return None
    kept = _headers.get(str(path))
    if kept is None or kept[0] != info[0]:  # first, or gradebook.db was replaced
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if kept is not None:  # the replaced file's: no lock on it guards anything now
            os.close(kept[1])
        opened = os.fstat(descriptor).st_ino
        kept = _headers[str(path)] = (opened, descriptor)
        if opened != info[0]:  # replaced again meanwhile: this one is for the next call
            return (*info, None)
    try:
        counter = os.pread(kept[1], 4, 24)
    except OSError:
        return None
    return (*info, counter)


def save_extensions(course: Course, assignment: str, extensions: list[Extension],
                    force: bool = False) -> None:
    """Add or replace these extensions, all in one transaction. A student neither in the
    roster nor in submitted/ is refused (a typo would otherwise extend nobody, silently),
    unless `force`; then nothing is written."""
    from sqlalchemy import MetaData, delete, text

    engine = _gradebook_engine(course)
    try:
        table = _extension_table(MetaData())
        with engine.begin() as db:
            known, due = _due_date(db, assignment)
            if not known:
                raise LateError(f"gradebook.db does not know assignment '{assignment}': "
                                f"release it first (`autograder release {assignment}`)")
            if not force:
                roster = set(db.scalars(text("SELECT id FROM student")))
                unknown = [extension.student_id for extension in extensions
                           if extension.student_id not in roster and not
                           course.submitted_dir(extension.student_id, assignment).is_dir()]
                if unknown:
                    raise LateError("; ".join(
                        f"unknown student '{clean_text(student, 120)}'" for student in unknown)
                        + " (not in the roster nor in submitted/): check the id, or import "
                        "the roster first (`autograder roster import`); --force gives the "
                        "extension all the same. Nothing was saved")
            for extension in extensions:
                if extension.until is not None and due is not None and extension.until <= due:
                    raise LateError(f"{extension.student_id}: {iso_utc(extension.until)} is "
                                    f"not after the due date {iso_utc(due)}")
            table.create(db, checkfirst=True)
            for extension in extensions:
                db.execute(delete(table).where(table.c.assignment == assignment,
                                               table.c.student_id == extension.student_id))
                db.execute(table.insert().values(assignment=assignment,
                                                 student_id=extension.student_id,
                                                 seconds=extension.seconds,
                                                 until=extension.until))
    finally:
        engine.dispose()


def remove_extension(course: Course, assignment: str, student_id: str) -> bool:
    from sqlalchemy import MetaData, delete, inspect

    engine = _gradebook_engine(course)
    try:
        with engine.begin() as db:
            if not inspect(db).has_table(EXTENSION_TABLE):
                return False
            table = _extension_table(MetaData())
            done = db.execute(delete(table).where(table.c.assignment == assignment,
                                                  table.c.student_id == student_id))
            return done.rowcount > 0
    finally:
        engine.dispose()


def make_extension(student_id: str, days: str | float | None = None,
                   hours: str | float | None = None, until: str | None = None) -> Extension:
    """An extension from exactly one of days, hours or until (a date nbgrader can read; a
    date without a zone is UTC, as nbgrader reads due dates). Raises LateError saying why."""
    if not usable_student_id(student_id):
        raise LateError(f"'{clean_text(student_id, 120)}' is not a usable student id")
    given = {name: value for name, value in (("days", days), ("hours", hours), ("until", until))
             if value not in (None, "")}
    if len(given) != 1:
        raise LateError(f"{student_id}: give exactly one of days, hours or until "
                        f"(got {', '.join(given) or 'none'})")
    (name, value), = given.items()
    if name == "until":
        try:
            return Extension(student_id, until=parse_utc(str(value)))
        except (ValueError, OverflowError):
            raise LateError(f"{student_id}: until {clean_text(value, 60)!r} is not a date "
                            "(e.g. 2026-11-22 17:00:00 UTC)") from None
    try:
        amount = float(value)
    except (TypeError, ValueError):
        amount = math.nan
    if not (math.isfinite(amount) and 0 < amount <= 3650):
        raise LateError(f"{student_id}: {name} {clean_text(value, 60)!r} is not a positive "
                        "number")
    return Extension(student_id, seconds=amount * (86400 if name == "days" else 3600))


def read_extensions_csv(path: Path) -> list[Extension]:
    """student_id,days|hours|until rows (one of the three per row). A bad row is an error
    naming its line, and then nothing is taken."""
    from autograder.errors import SubmissionError
    from autograder.files import read_regular_file

    try:
        text = read_regular_file(path, MAX_CSV_BYTES).decode("utf-8-sig")
    except SubmissionError as error:
        raise LateError(str(error)) from None
    except UnicodeDecodeError:
        raise LateError(f"{clean_text(path, 300)} is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [name.strip().lower() for name in reader.fieldnames or []]
    if "student_id" not in columns or not {"days", "hours", "until"} & set(columns):
        raise LateError(f"{clean_text(path, 300)}: the header must name student_id and one or "
                        "more of days, hours, until")
    reader.fieldnames = columns
    found: dict[str, Extension] = {}
    for row in reader:
        where = f"{clean_text(path, 300)}, line {reader.line_num}"
        if None in row or None in row.values():
            raise LateError(f"{where}: expected {len(columns)} cells")
        cells = {key: value.strip() for key, value in row.items()}
        if not any(cells.values()):
            continue  # a blank line
        try:
            extension = make_extension(cells["student_id"], cells.get("days"),
                                       cells.get("hours"), cells.get("until"))
        except LateError as error:
            raise LateError(f"{where}: {error}") from None
        if extension.student_id in found:
            raise LateError(f"{where}: {extension.student_id} is given twice")
        found[extension.student_id] = extension
    return list(found.values())
