"""The roster: nbgrader's gradebook.db `student` table (id, first_name, last_name, email,
lms_user_id), filled from nbgrader's student CSV or the LMS's own files.

The student id is the LMS's id, the key under submitted/ (contract 1):
- nbgrader's CSV (`nbgrader db student import` columns): `id` as it is.
- Canvas's gradebook CSV (`Student,ID,SIS User ID,SIS Login ID,Section,...`): id = `ID`, the
  Canvas user id, also kept as lms_user_id; the name split from "Last, First"; the
  `SIS Login ID` kept in `email` (nbgrader has no login column and Canvas's CSV no e-mail: the
  login is what an instructor writes to). The `Points Possible` row and rows without a student
  are not students; Canvas's test student ("Student, Test") is skipped and reported.
- Moodle's grading worksheet (`Identifier,Full name,Email address,...`): id = the number of
  "Participant 12345", also kept as lms_user_id; "First Last" split at the last space.

An import is one transaction, upserting: a value the file leaves empty never erases what the
roster holds. A malformed row is an error naming its line, and then nothing is written. Every
name and address is cleaned (`clean_text`) and capped at nbgrader's 128 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from autograder.results import clean_text

if TYPE_CHECKING:
    from autograder.course import Course

MAX_ROSTER_BYTES = 20 * 1024 * 1024
COLUMN_CAP = 128  # nbgrader's String(128)
CANVAS_TEST_STUDENT = "student, test"
MOODLE_PARTICIPANT = re.compile(r"^Participant\s+(\d{1,20})$", re.IGNORECASE)
CANVAS_ID = re.compile(r"^\d{1,20}$")


class RosterError(Exception):
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


COLUMNS = [field.name for field in fields(RosterStudent)]


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


def import_roster(course: Course, path: Path) -> Imported:
    """Read `path` (nbgrader, Canvas or Moodle CSV) and upsert its students into gradebook.db,
    all in one transaction."""
    imported = read_roster(path)
    _upsert(course, imported.students)
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
    from autograder.submissions import STUDENT_ID

    if not STUDENT_ID.fullmatch(value):
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
    if student.lower() == CANVAS_TEST_STUDENT:
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


def _upsert(course: Course, students: list[RosterStudent]) -> None:
    from sqlalchemy import create_engine, text

    if not (course.root / "gradebook.db").is_file():
        from nbgrader.api import Gradebook

        from autograder.release import put_nbgrader_tools_on_path

        put_nbgrader_tools_on_path()  # nbgrader runs `alembic` to stamp a new gradebook.db
        Gradebook(course.db_url).close()  # nbgrader makes its tables, as its import would
    engine = create_engine(course.db_url)
    try:
        with engine.begin() as db:
            existing = set(db.scalars(text("SELECT id FROM student")))
            for student in students:
                values = {key: getattr(student, key) for key in COLUMNS}
                if student.id not in existing:
                    db.execute(text(f"INSERT INTO student ({', '.join(COLUMNS)}) VALUES "
                                    f"({', '.join(':' + key for key in COLUMNS)})"), values)
                    continue
                # An empty cell never erases what the roster holds.
                given = [key for key in COLUMNS[1:] if values[key] is not None]
                if given:
                    db.execute(text(f"UPDATE student SET "
                                    f"{', '.join(f'{key} = :{key}' for key in given)} "
                                    "WHERE id = :id"), values)
    finally:
        engine.dispose()
