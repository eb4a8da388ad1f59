"""The roster: nbgrader's gradebook.db `student` table (id, first_name, last_name, email,
lms_user_id), filled from nbgrader's student CSV or the LMS's own files.

The student id is the LMS's id, the key under submitted/ (contract 1):
- nbgrader's CSV (`nbgrader db student import` columns): `id` as it is.
- Canvas's gradebook CSV (`Student,ID,SIS User ID,SIS Login ID,Section,...`): id = `ID`, the
  Canvas user id, also kept as lms_user_id; the name split from "Last, First"; the
  `SIS Login ID` kept in `email` (nbgrader has no login column and Canvas's CSV no e-mail: the
  login is what an instructor writes to). The `Points Possible` row and rows without a student
  are not students; Canvas's test student ("Student, Test" with no SIS User ID) is skipped and
  reported (a real student so named has an SIS id and is imported).
- Moodle's grading worksheet (`Identifier,Full name,Email address,...`): id = the number of
  "Participant 12345", also kept as lms_user_id; "First Last" split at the last space.

An import is one transaction, upserting: a value the file leaves empty never erases what the
roster holds. Every id whose name or email changes is listed ("10001: Kim Lee -> Zed Zulu");
a student who already has a submission in gradebook.db (graded) is never renamed without
`update` (`--update`): the import is refused and nothing written, because the same number in
another LMS's file can be another person. Names are compared whole and case-blind, so Moodle's
"Bo van der Berg" is Canvas's "van der Berg, Bo" (and the split already held is kept). A
malformed row is an error naming its line, and then nothing is written. Every name and address
is cleaned (`clean_text`) and capped at nbgrader's 128 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from autograder.course import usable_student_id
from autograder.errors import UserError
from autograder.results import clean_text

if TYPE_CHECKING:
    from autograder.course import Course

MAX_ROSTER_BYTES = 20 * 1024 * 1024
COLUMN_CAP = 128  # nbgrader's String(128)
CANVAS_TEST_STUDENT = "student, test"
MOODLE_PARTICIPANT = re.compile(r"^Participant\s+(\d{1,20})$", re.IGNORECASE)
CANVAS_ID = re.compile(r"^\d{1,20}$")


class RosterError(UserError):
    """The roster file cannot be imported; the message names the file, the line and why."""


@dataclass(frozen=True)
class RosterStudent:
    id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    lms_user_id: str | None = None

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


@dataclass
class Imported:
    kind: str  # "nbgrader", "canvas" or "moodle"
    students: list[RosterStudent]
    skipped: list[str]  # rows that are not students, with why (e.g. Canvas's test student)
    changed: list[str] = field(default_factory=list)  # "10001: Kim Lee -> Zed Zulu", ...


COLUMNS = [column.name for column in fields(RosterStudent)]


def roster_students(course: Course) -> list[RosterStudent]:
    """Every student in gradebook.db, sorted by id (none if there is no gradebook yet)."""
    path = course.root / "gradebook.db"
    if not path.is_file():
        return []
    from sqlalchemy import create_engine, text

    engine = create_engine(course.db_url)
    try:
        with engine.connect() as db:
            rows = db.execute(text(f"SELECT {', '.join(COLUMNS)} FROM student ORDER BY id"))
            return [RosterStudent(*row) for row in rows]
    finally:
        engine.dispose()


def import_roster(course: Course, path: Path, update: bool = False) -> Imported:
    """Read `path` (nbgrader, Canvas or Moodle CSV) and upsert its students into gradebook.db,
    all in one transaction. Every id whose name or email changes is listed in `changed`; a
    student who already has a submission in gradebook.db is not renamed unless `update`
    (RosterError, nothing written): the same id in another LMS's file can be someone else."""
    imported = read_roster(path)
    imported.changed = _upsert(course, imported.students, update, clean_text(path, 300))
    return imported


def read_roster(path: Path) -> Imported:
    from autograder.lms.csvfile import CsvFileError, read_csv_rows

    name = clean_text(path, 300)
    try:
        rows, _ = read_csv_rows(Path(path), MAX_ROSTER_BYTES)
    except CsvFileError as error:
        raise RosterError(str(error)) from None
    header = [cell.strip() for cell in rows[0]]
    kind, read_row = _shape(header, name)
    students: dict[str, RosterStudent] = {}
    skipped: list[str] = []
    for number, cells in enumerate(rows[1:], start=2):
        where = f"{name}, line {number}"
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise RosterError(f"{where}: {len(cells)} cells where the header has "
                              f"{len(header)}")
        row = dict(zip(header, (cell.strip() for cell in cells), strict=True))
        try:
            student = read_row(row)
        except RosterError as error:
            raise RosterError(f"{where}: {error}") from None
        if isinstance(student, str):
            if student:
                skipped.append(f"line {number}: {student}")
            continue
        if student.id in students:
            raise RosterError(f"{where}: student {student.id} is listed twice")
        students[student.id] = student
    return Imported(kind, list(students.values()), skipped)


def _shape(header: list[str], name: str):  # noqa: ANN202 (a private pair)
    if "id" in header:
        return "nbgrader", _nbgrader_row
    if {"Student", "ID", "SIS Login ID"} <= set(header):
        return "canvas", _canvas_row
    if {"Identifier", "Full name"} <= set(header):
        return "moodle", _moodle_row
    raise RosterError(f"{name}: not a roster this reads (header "
                      f"{clean_text(','.join(header), 200)!r}): nbgrader's student CSV "
                      "(id,first_name,last_name,email,lms_user_id), Canvas's gradebook CSV "
                      "(Student,ID,SIS User ID,SIS Login ID,...) or Moodle's grading worksheet "
                      "(Identifier,Full name,Email address,...)")


def _cell(value: str | None) -> str | None:
    value = clean_text(value or "", COLUMN_CAP).strip()
    return value or None


def _student_id(value: str) -> str:
    if not usable_student_id(value):
        raise RosterError(f"'{clean_text(value, 120)}' is not a usable student id (letters, "
                          "digits and ._@+- only, starting with a letter or digit)")
    return value


def _nbgrader_row(row: dict[str, str]) -> RosterStudent:
    return RosterStudent(_student_id(row["id"]), _cell(row.get("first_name")),
                         _cell(row.get("last_name")), _cell(row.get("email")),
                         _cell(row.get("lms_user_id")))


def _canvas_row(row: dict[str, str]) -> RosterStudent | str:
    student, canvas_id = row["Student"], row["ID"]
    if student == "Points Possible" or (not student and not canvas_id):
        return ""  # Canvas's own rows (points possible, posting policy): not students
    if student.lower() == CANVAS_TEST_STUDENT and not row.get("SIS User ID"):
        # Canvas's test student has no SIS id; a real student so named has one
        return f"Canvas's test student ({clean_text(student, 60)}, ID {clean_text(canvas_id, 30)})"
    if not CANVAS_ID.fullmatch(canvas_id):
        raise RosterError(f"ID '{clean_text(canvas_id, 60)}' of {clean_text(student, 60)!r} is "
                          "not a Canvas user id (digits)")
    last, comma, first = student.partition(",")  # Canvas shows "Last, First"
    if not comma:
        first, _, last = student.rpartition(" ")
    return RosterStudent(canvas_id, _cell(first), _cell(last), _cell(row.get("SIS Login ID")),
                         canvas_id)


def _moodle_row(row: dict[str, str]) -> RosterStudent:
    match = MOODLE_PARTICIPANT.fullmatch(row["Identifier"])
    if match is None:
        raise RosterError(f"Identifier '{clean_text(row['Identifier'], 60)}' is not "
                          "'Participant <number>'")
    participant = match.group(1)
    first, _, last = row["Full name"].rpartition(" ")
    if not first:
        first, last = last, ""
    return RosterStudent(participant, _cell(first), _cell(last), _cell(row.get("Email address")),
                         participant)


def _full_name(first: str | None, last: str | None) -> str:
    """A name as compared across LMSs: "Bo van der" + "Berg" (Moodle's split) is Canvas's
    "van der Berg, Bo" read as "Bo" + "van der Berg"."""
    return " ".join(" ".join(part for part in (first, last) if part).casefold().split())


def _changes(old: RosterStudent, new: RosterStudent) -> tuple[str, bool]:
    """What importing `new` over `old` changes, as one line ("" if nothing), and whether it
    renames the student (a value the file leaves empty changes nothing)."""
    said: list[str] = []
    renamed = (_full_name(new.first_name, new.last_name) != ""
               and _full_name(old.first_name, old.last_name) != ""
               and _full_name(new.first_name, new.last_name)
               != _full_name(old.first_name, old.last_name))
    if renamed:
        said.append(f"{clean_text(old.name, 200)} -> {clean_text(new.name, 200)}")
    if new.email and old.email and new.email != old.email:
        said.append(f"email {clean_text(old.email, 200)} -> {clean_text(new.email, 200)}")
    return (f"{clean_text(new.id, 100)}: {'; '.join(said)}" if said else ""), renamed


def _upsert(course: Course, students: list[RosterStudent], update: bool,
            shown: str) -> list[str]:
    """Insert or update `students` in one transaction; the changes to students the roster
    already held, one line each."""
    from sqlalchemy import create_engine, text

    if not (course.root / "gradebook.db").is_file():
        from nbgrader.api import Gradebook

        from autograder.release import put_nbgrader_tools_on_path

        put_nbgrader_tools_on_path()  # nbgrader runs `alembic` to stamp a new gradebook.db
        Gradebook(course.db_url).close()  # nbgrader makes its tables, as its import would
    engine = create_engine(course.db_url)
    try:
        with engine.begin() as db:
            existing = {row[0]: RosterStudent(*row) for row in db.execute(
                text(f"SELECT {', '.join(COLUMNS)} FROM student"))}
            submitted = set(db.scalars(text("SELECT DISTINCT student_id FROM "
                                            "submitted_assignment")))
            changed, refused = [], []
            for student in students:
                values = {key: getattr(student, key) for key in COLUMNS}
                old = existing.get(student.id)
                if old is None:
                    db.execute(text(f"INSERT INTO student ({', '.join(COLUMNS)}) VALUES "
                                    f"({', '.join(':' + key for key in COLUMNS)})"), values)
                    continue
                change, renamed = _changes(old, student)
                if change:
                    changed.append(change)
                if renamed and student.id in submitted:
                    refused.append(change)
                if not renamed and _full_name(old.first_name, old.last_name):
                    # the same name, perhaps split otherwise by another LMS: kept as it is
                    values["first_name"] = values["last_name"] = None
                # An empty cell never erases what the roster holds.
                given = [key for key in COLUMNS[1:] if values[key] is not None]
                if given:
                    db.execute(text(f"UPDATE student SET "
                                    f"{', '.join(f'{key} = :{key}' for key in given)} "
                                    "WHERE id = :id"), values)
            if refused and not update:
                raise RosterError(
                    f"{shown} would rename {len(refused)} student(s) who already have a "
                    "graded submission: " + "; ".join(refused[:50]) + ". The same id in "
                    "another LMS's file (Moodle's participant number, Canvas's user id) can "
                    "be someone else: check that the file is this course's; pass --update to "
                    "rename them all the same. Nothing was imported")
            return changed
    finally:
        engine.dispose()
