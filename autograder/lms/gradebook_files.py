"""Final scores into the LMSs' own gradebook files: Canvas's gradebook import CSV and Moodle's
offline grading worksheet.

Canvas matches an imported row by its `ID` column (the Canvas user id, our student key) and
takes an assignment's scores from the column headed `<Assignment Name> (<assignment id>)`; a
header without the id makes Canvas create a new assignment. The best input is the gradebook
CSV the instructor downloaded from Canvas (`--template`): only the assignment's column is
filled, for the students we have a score for; every other cell, row and column (other
assignments, Canvas's test student, "Read Only" totals) is written back as Canvas gave it, and
Canvas ignores cells that did not change. Moodle's worksheet is matched by `Identifier`
("Participant 12345": the participant id is our student key) and its `Grade` filled.

Scores are scaled to the LMS's points possible (Canvas: the template's "Points Possible" cell,
its leading number read -- "20 (muted)" is 20 -- else c.CanvasExport.points_possible; Moodle:
each row's "Maximum Grade") when they differ from ours. A points possible of 0, blank or
unreadable is refused, never guessed: it would fill every student with 0, or upload scores on
the wrong scale. Every text cell is neutralised (autograder.export) but what cannot be a formula
(a number, a lone "-"), numbers are written as numbers, a byte-order mark in the template is
kept, and the file is written atomically.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Bool, Float, Unicode
from traitlets.config import Config, Configurable

from autograder.export import ExportError, neutralised, neutralised_cell, number_cell
from autograder.files import write_atomic
from autograder.lms.csvfile import BOM, CsvFileError, read_csv_rows
from autograder.results import clean_text
from autograder.scores import StudentScore

MAX_TEMPLATE_BYTES = 50 * 1024 * 1024  # a gradebook of a very large course is a few MiB
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
_CANVAS_ASSIGNMENT = re.compile(r"^(?P<name>.*\S)\s*\((?P<id>\d+)\)$")
_MOODLE_PARTICIPANT = re.compile(r"^Participant (?P<id>\d+)$")
# A points cell: a number, then at most a remark Canvas adds ("20 (muted)").
_LEADING_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)(?:\s*\(.*\))?\s*$")


class CanvasExport(Configurable):
    """The Canvas assignment the scores go to (c.CanvasExport.* in nbgrader_config.py)."""

    assignment_id = Unicode(
        "", help="The assignment's Canvas id (the number in its URL, .../assignments/<id>). "
                 "Needed without a template; with one, it picks the column headed "
                 "'<name> (<id>)'.").tag(config=True)
    assignment_name = Unicode(
        "", help="The assignment's name in Canvas (default: the nbgrader assignment's name). "
                 "With a template and no assignment_id, it picks the column.").tag(config=True)
    points_possible = Float(
        None, allow_none=True,
        help="The Canvas assignment's points possible, when it is not our maximum score and no "
             "template gives it: scores are scaled to it.").tag(config=True)


class MoodleExport(Configurable):
    """Moodle's grading worksheet (c.MoodleExport.* in nbgrader_config.py)."""

    feedback_comments = Bool(
        False, help="Also fill the worksheet's 'Feedback comments' column with a one-line "
                    "summary (score, status, late penalty, manual adjustment).").tag(config=True)


@dataclass
class Filled:
    """What an export wrote: its path, how many students it filled, and what the instructor
    should know (students left out, rows left as they were)."""

    path: Path
    filled: int = 0
    warnings: list[str] = field(default_factory=list)
    matched: int | None = None  # our students found in the template (None: no template)
    students: int = 0  # our students (the roster and every graded one)


def scaled(score: float, ours: float, theirs: float) -> float:
    """`score` out of `ours` as points out of `theirs` (the LMS's points possible)."""
    if not ours or ours == theirs:
        return score
    return score * theirs / ours


# --- Canvas ---------------------------------------------------------------------------------

def write_canvas(scores: list[StudentScore], assignment: str, path: Path,
                 settings: CanvasExport, template: Path | None = None) -> Filled:
    """Canvas's gradebook import file: the template's assignment column filled, or, without a
    template, a file of our students alone, headed with the configured name and id."""
    if template is not None:
        return _fill_canvas_template(scores, assignment, path, settings, template)
    if not settings.assignment_id.strip().isdigit():
        raise ExportError(
            "a Canvas import needs the assignment's Canvas id, or Canvas creates a new "
            "assignment and matches nobody: set c.CanvasExport.assignment_id in "
            "nbgrader_config.py (the number in the assignment's Canvas URL), or pass --template "
            "with the gradebook CSV downloaded from Canvas (Grades > Export)")
    name = settings.assignment_name or assignment
    possible = _configured_points(settings)
    if possible is None:
        possible = _our_max(scores)
    rows = [[*CANVAS_FIXED, f"{name} ({settings.assignment_id.strip()})"],
            ["    Points Possible", "", "", "", "", number_cell(possible)]]
    filled = Filled(path)
    for row in scores:
        score = "" if row.score is None else number_cell(scaled(row.score, row.max_score,
                                                                possible))
        rows.append([row.display_name, row.student_id, "", "", "", score])
        filled.filled += row.score is not None
    not_canvas = [row.student_id for row in scores if not row.student_id.isdigit()]
    if not_canvas:
        filled.warnings.append(f"{len(not_canvas)} student key(s) are not Canvas user ids "
                               "(digits), so Canvas matches no one for them: "
                               + ", ".join(not_canvas))
    _write_rows(path, rows, bom=False)
    return filled


def _fill_canvas_template(scores: list[StudentScore], assignment: str, path: Path,
                          settings: CanvasExport, template: Path) -> Filled:
    rows, bom = _read_template(template)
    header = [cell.strip() for cell in rows[0]]
    if "ID" not in header:
        raise ExportError(f"{_shown(template)} is not a Canvas gradebook export: its first row "
                          f"has no 'ID' column (it starts {', '.join(header[:6])})")
    id_at = header.index("ID")
    column = _canvas_column(header, assignment, settings, template)
    possible_row = next((row for row in rows[1:] if row and row[0].strip() == "Points Possible"),
                        None)
    possible = _canvas_points_possible(scores, settings, template, header[column], possible_row,
                                       column, rows)
    by_id = {row.student_id: row for row in scores}
    filled, seen, unknown = Filled(path), set(), 0
    for row in rows[1:]:
        key = row[id_at].strip() if id_at < len(row) else ""
        if not key or (row and row[0].strip() == "Points Possible"):
            continue  # Canvas's own rows (points possible, posting policy)
        student = by_id.get(key)
        if student is None:
            unknown += 1  # Canvas's test student, someone not in our roster: as it was
            continue
        seen.add(key)
        if student.score is None:
            continue  # missing, exported blank: the cell stays as Canvas gave it
        row.extend([""] * (column + 1 - len(row)))
        row[column] = number_cell(scaled(student.score, student.max_score, possible))
        filled.filled += 1
    filled.matched, filled.students = len(seen), len(scores)
    _warn_not_in_template(filled, scores, seen, template)
    if unknown:
        filled.warnings.append(f"{unknown} student(s) of the template have no score here "
                               "(Canvas's test student among them): their cells are left as "
                               "they were")
    _write_rows(path, rows, bom)
    return filled


def _configured_points(settings: CanvasExport) -> float | None:
    """c.CanvasExport.points_possible, refused when it would zero (or negate) every score."""
    value = settings.points_possible
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ExportError(f"c.CanvasExport.points_possible = {value!r} would give every "
                          "student 0 (or less): set the Canvas assignment's points possible, "
                          "a positive number")
    return value


def _canvas_points_possible(scores: list[StudentScore], settings: CanvasExport, template: Path,
                            heading: str, possible_row: list[str] | None, column: int,
                            rows: list[list[str]]) -> float:
    """The Canvas assignment's points possible: the template's "Points Possible" cell (its
    leading number: "20.00", "20 (muted)"), else c.CanvasExport.points_possible. A cell that
    is 0, blank or unreadable is refused without the setting: 0 would fill every student with
    0, and guessing our own maximum would upload scores on the wrong scale."""
    configured = _configured_points(settings)
    if possible_row is None:  # not Canvas's own export (it always has the row)
        return configured if configured is not None else _our_max(scores)
    cell = possible_row[column] if column < len(possible_row) else ""
    points = _leading_number(cell)
    if points is not None and points > 0:
        return points
    if configured is not None:
        return configured
    line = next(at for at, row in enumerate(rows, start=1) if row is possible_row)
    problem = "0" if points == 0 else "not a number"
    raise ExportError(f"{_shown(template)}, line {line}: the 'Points Possible' cell of "
                      f"{clean_text(heading, 200)!r} is {clean_text(cell, 50)!r} ({problem}), "
                      "so scores cannot be scaled to the Canvas assignment: give it points in "
                      "Canvas and download the gradebook again, or set "
                      "c.CanvasExport.points_possible in nbgrader_config.py")


def _leading_number(cell: str) -> float | None:
    """The number a points cell starts with ("20.00", "20 (muted)"), or None."""
    match = _LEADING_NUMBER.match(cell)
    return float(match[1]) if match else None


def _canvas_column(header: list[str], assignment: str, settings: CanvasExport,
                   template: Path) -> int:
    """The index of the assignment's column: by c.CanvasExport.assignment_id, else by name."""
    columns = {at: match for at, cell in enumerate(header)
               if at >= len(CANVAS_FIXED) and (match := _CANVAS_ASSIGNMENT.match(cell))}
    wanted_id = settings.assignment_id.strip()
    name = (settings.assignment_name or assignment).strip()
    if wanted_id:
        found = [at for at, match in columns.items() if match["id"] == wanted_id]
        asked = f"with the id {wanted_id} (c.CanvasExport.assignment_id)"
    else:
        found = [at for at, match in columns.items()
                 if match["name"].casefold() == name.casefold()]
        asked = (f"named '{name}' (c.CanvasExport.assignment_name, else the assignment's "
                 "name; or set c.CanvasExport.assignment_id)")
    if len(found) == 1:
        return found[0]
    listed = "; ".join(header[at] for at in columns) or "none"
    problem = "no assignment column" if not found else f"{len(found)} assignment columns"
    raise ExportError(f"{_shown(template)} has {problem} {asked}. Its assignment columns: "
                      f"{clean_text(listed, 1000)}")


def _warn_not_in_template(filled: Filled, scores: list[StudentScore], seen: set[str],
                          template: Path) -> None:
    graded = [row for row in scores if row.student_id not in seen and not row.missing]
    absent = [row.student_id for row in scores if row.student_id not in seen and row.missing]
    if graded:
        filled.warnings.append(
            f"{len(graded)} graded student(s) are not in {_shown(template)} (matched by ID, "
            "the Canvas user id): not exported: " + ", ".join(
                f"{row.student_id} ({number_cell(row.score or 0)}/{number_cell(row.max_score)})"
                for row in graded))
    if absent:
        filled.warnings.append(f"{len(absent)} rostered student(s) without a submission are "
                               "not in the template either: " + ", ".join(absent))


# --- Moodle ---------------------------------------------------------------------------------

def write_moodle(scores: list[StudentScore], path: Path, template: Path,
                 settings: MoodleExport) -> Filled:
    """Moodle's grading worksheet (Assignment > View all submissions > Download grading
    worksheet) with `Grade` filled, scaled to each row's `Maximum Grade`."""
    rows, bom = _read_template(template)
    header = [cell.strip() for cell in rows[0]]
    for needed in ("Identifier", "Grade"):
        if needed not in header:
            raise ExportError(f"{_shown(template)} is not a Moodle grading worksheet: its first "
                              f"row has no '{needed}' column")
    ident_at, grade_at = header.index("Identifier"), header.index("Grade")
    maximum_at = header.index("Maximum Grade") if "Maximum Grade" in header else None
    comments_at = None
    if settings.feedback_comments:
        if "Feedback comments" not in header:
            raise ExportError(f"{_shown(template)} has no 'Feedback comments' column: enable "
                              "feedback comments in the Moodle assignment's settings and "
                              "download the worksheet again")
        comments_at = header.index("Feedback comments")
    by_id = {row.student_id: row for row in scores}
    filled, seen, unknown = Filled(path), set(), 0
    for line, row in enumerate(rows[1:], start=2):
        match = _MOODLE_PARTICIPANT.match(row[ident_at].strip()) if ident_at < len(row) else None
        student = by_id.get(match["id"]) if match else None
        if student is None:
            unknown += 1
            continue
        seen.add(student.student_id)
        if student.score is None:
            continue
        maximum = student.max_score
        if maximum_at is not None:
            maximum = _moodle_maximum(row, maximum_at, line, template)
        row.extend([""] * (max(grade_at, comments_at or 0) + 1 - len(row)))
        row[grade_at] = number_cell(scaled(student.score, student.max_score, maximum))
        if comments_at is not None:
            row[comments_at] = _summary(student)
        filled.filled += 1
    filled.matched, filled.students = len(seen), len(scores)
    graded = [row.student_id for row in scores if row.student_id not in seen and not row.missing]
    if graded:
        filled.warnings.append(f"{len(graded)} graded student(s) are not in {_shown(template)} "
                               "(matched by Identifier, 'Participant <id>'): not exported: "
                               + ", ".join(graded))
    if unknown:
        filled.warnings.append(f"{unknown} row(s) of the worksheet have no score here: left as "
                               "they were")
    _write_rows(path, rows, bom)
    return filled


def _moodle_maximum(row: list[str], at: int, line: int, template: Path) -> float:
    """A row's Maximum Grade ("100.00"): 0, blank or text (a scale) is refused, as a grade
    scaled to it would be 0 or something Moodle does not take."""
    cell = row[at] if at < len(row) else ""
    maximum = _leading_number(cell)
    if maximum is not None and maximum > 0:
        return maximum
    raise ExportError(f"{_shown(template)}, line {line}: 'Maximum Grade' is "
                      f"{clean_text(cell, 50)!r}, not a positive number of points, so grades "
                      "cannot be scaled to it: in the Moodle assignment's settings set Grade > "
                      "Type to 'Point' with a maximum grade, then download the worksheet again")


def _summary(row: StudentScore) -> str:
    """One line for Moodle's feedback comments (HTML there: escaped; never a formula)."""
    parts = [f"{number_cell(row.score or 0)}/{number_cell(row.max_score)} ({row.status})"]
    if row.manual_adjustment or row.extra_credit:
        parts.append(f"manual adjustment {number_cell(row.manual_adjustment)}, extra credit "
                     f"{number_cell(row.extra_credit)}")
    if row.late_penalty:
        parts.append(f"late penalty {number_cell(row.late_penalty)}")
    elif row.late:
        parts.append("late")
    if row.reason:
        parts.append(row.reason)
    text = " ".join(clean_text("; ".join(parts), 300).split())  # one line
    return html.escape(text, quote=False)


# --- shared -----------------------------------------------------------------------------------

def _our_max(scores: list[StudentScore]) -> float:
    return max((row.max_score for row in scores), default=0.0)


def _shown(path: Path) -> str:
    return clean_text(path, 300)


def _read_template(template: Path) -> tuple[list[list[str]], bool]:
    """The template's rows and whether it began with a byte-order mark."""
    try:
        return read_csv_rows(template, MAX_TEMPLATE_BYTES)
    except CsvFileError as error:
        raise ExportError(str(error)) from None


def _write_rows(path: Path, rows: list[list[str]], bom: bool) -> None:
    """Every text cell neutralised, numbers as numbers; atomically; the template's BOM kept."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([neutralised_cell(cell) if isinstance(cell, str) else neutralised(cell)
                         for cell in row])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (BOM if bom else b"") + buffer.getvalue().encode("utf-8"))


def fill_lms_file(fmt: str, scores: list[StudentScore], assignment: str, path: Path,
                  config: Config | None, template: Path | None = None,
                  feedback_comments: bool | None = None) -> Filled:
    """The LMS's file ("canvas" or "moodle") filled with these final scores, with the
    course's `config` (c.CanvasExport, c.MoodleExport): what `export` writes, and what the
    service's HTTP process makes from the worker's snapshot of the scores."""
    if fmt == "canvas":
        return write_canvas(scores, assignment, path, CanvasExport(config=config), template)
    if template is None:
        raise ExportError("a Moodle export fills the grading worksheet downloaded from Moodle")
    settings = MoodleExport(config=config)
    if feedback_comments is not None:
        settings.feedback_comments = feedback_comments
    return write_moodle(scores, path, template, settings)
