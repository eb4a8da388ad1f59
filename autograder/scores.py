"""Final scores, as nbgrader computes them, for every student of the roster.

nbgrader's gradebook.db is the source of truth once a score may have been touched by hand:
formgrader writes manual scores and extra credit there, the late-work step writes the late
penalty there, and `nbgrader export` reads them from there. So a final score here is read from
gradebook.db with nbgrader's own rules (nbgrader/api.py and plugins/export.py):

- a grade's score is its manual score if set, else its auto score if set, else 0; extra credit
  is added to whichever is set (to nothing when neither is);
- a submission's raw score is the sum of its grades' scores; its penalty the sum of its
  notebooks' `late_submission_penalty`; its score `max(0, raw - penalty)`;
- every student of the `student` table (the roster) is listed; one without a submission gets 0.

The status and reason (graded, timeout, invalid, ...) come from our stored results.

The rows are read with a few SQL queries on nbgrader's tables (read-only), not with nbgrader's
`Gradebook` API: for 300 students, manual scores and penalties, the queries take 6 ms and the
API 180 ms after a 0.5 s import, with the same scores (bench/bench_scores.py measures both).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from traitlets import Enum
from traitlets.config import Configurable

from autograder.gradebook_db import GradebookError
from autograder.results import GRADED, SubmissionResult, clean_text
from autograder.store import load_results

if TYPE_CHECKING:
    from autograder.course import Course

MISSING = "missing"  # rostered, nothing submitted
MISSING_CHOICES = ("zero", "blank")


class ScoreSettings(Configurable):
    """How final scores are exported (c.ScoreSettings.* in nbgrader_config.py)."""

    missing = Enum(
        list(MISSING_CHOICES), default_value="zero",
        help="A rostered student with no submission: 'zero' exports 0, as `nbgrader export` "
             "does; 'blank' leaves the score empty (in a filled LMS template: as the LMS "
             "gave it). `autograder export --missing` overrides it.").tag(config=True)


@dataclass
class StudentScore:
    student_id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    lms_user_id: str = ""
    autograded: float | None = None  # sum of the auto scores in gradebook.db
    manual_adjustment: float = 0.0  # what manual scores changed from the auto scores
    extra_credit: float = 0.0  # counted as nbgrader counts it
    raw_score: float | None = None  # nbgrader's SubmittedAssignment.score
    late_penalty: float = 0.0
    score: float | None = None  # the final score (None: missing, exported blank)
    max_score: float = 0.0
    status: str = MISSING
    reason: str = ""
    seconds_late: float = 0.0
    lms_late: bool = False
    timestamp: str | None = None  # submission time, UTC, as gradebook.db holds it

    @property
    def missing(self) -> bool:
        return self.status == MISSING

    @property
    def late(self) -> bool:
        return self.seconds_late > 0 or self.lms_late

    @property
    def display_name(self) -> str:
        """'Last, First' from the roster, else the student key."""
        parts = [part for part in (self.last_name, self.first_name) if part]
        return ", ".join(parts) if parts else self.student_id


def final_scores(course: Course, assignment: str,
                 results: list[SubmissionResult] | None = None,
                 missing: str | None = None, only: str | None = None) -> list[StudentScore]:
    """One row per student of the roster and per student with a stored result, sorted by id
    (with `only`: that student's row alone). `missing` is 'zero' or 'blank' (default:
    c.ScoreSettings.missing)."""
    missing = missing or ScoreSettings(config=course.config).missing
    if missing not in MISSING_CHOICES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_CHOICES)}, not {missing!r}")
    if results is None:
        results = load_results(course.root, assignment)
    stored = {result.student_id: result for result in results
              if only is None or result.student_id == only}
    book = _read_gradebook(course.root / "gradebook.db", assignment, only)

    rows = []
    for student_id in sorted(set(book.students) | set(stored) | set(book.submissions)):
        first, last, email, lms_id = book.students.get(student_id, ("", "", "", ""))
        row = StudentScore(student_id=clean_text(student_id, 200), first_name=first,
                           last_name=last, email=email, lms_user_id=lms_id,
                           max_score=book.max_score)
        result = stored.get(student_id)
        submission = book.submissions.get(student_id)
        if result is not None:
            row.status, row.reason = result.status, result.reason
            row.seconds_late, row.lms_late = result.seconds_late, result.lms_late
            row.timestamp = result.timestamp
        if submission is not None:
            row.autograded, row.manual_adjustment, row.extra_credit = submission.parts
            row.raw_score, row.late_penalty = submission.raw, submission.penalty
            row.score = max(0.0, submission.raw - submission.penalty)
            row.timestamp = submission.timestamp or row.timestamp
            if submission.seconds_late is not None:
                row.seconds_late = submission.seconds_late
            if result is None:  # scored in gradebook.db by someone else (nbgrader itself)
                row.status = GRADED
                row.reason = "no result of this grader: the score is gradebook.db's"
        elif result is not None:  # e.g. gradebook.db replaced since: our own result stands
            row.autograded = row.raw_score = result.score
            row.late_penalty = result.late_penalty
            row.score = result.score_after_penalty
            row.max_score = result.max_score or book.max_score
            row.reason = clean_text("; ".join(filter(None, [
                row.reason, "not in gradebook.db: the score is this grader's"])))
        else:
            row.score = 0.0 if missing == "zero" else None
        rows.append(row)
    return rows


def final_score(course: Course, result: SubmissionResult) -> StudentScore:
    """The final score of the student of `result`, as `final_scores` gives it (what their
    feedback shows): one student's rows of gradebook.db read, not the class's."""
    [row] = final_scores(course, result.assignment, [result], only=result.student_id)
    return row


@dataclass
class _Submission:
    parts: tuple[float, float, float]  # autograded, manual adjustment, extra credit
    raw: float
    penalty: float
    timestamp: str | None
    seconds_late: float | None


@dataclass
class _Book:
    students: dict[str, tuple[str, str, str, str]]
    submissions: dict[str, _Submission]
    max_score: float


# nbgrader's Grade.score, split so that autograded + adjustment + extra credit == raw score.
_GRADE_SUMS = """
SELECT sa.student_id,
       SUM(COALESCE(g.auto_score, 0.0)),
       SUM(CASE WHEN g.manual_score IS NOT NULL
                THEN g.manual_score - COALESCE(g.auto_score, 0.0) ELSE 0.0 END),
       SUM(CASE WHEN g.manual_score IS NOT NULL OR g.auto_score IS NOT NULL
                THEN COALESCE(g.extra_credit, 0.0) ELSE 0.0 END),
       SUM(CASE WHEN g.manual_score IS NOT NULL THEN g.manual_score + COALESCE(g.extra_credit, 0.0)
                WHEN g.auto_score IS NOT NULL THEN g.auto_score + COALESCE(g.extra_credit, 0.0)
                ELSE 0.0 END)
FROM submitted_assignment sa
JOIN submitted_notebook sn ON sn.assignment_id = sa.id
JOIN grade g ON g.notebook_id = sn.id
WHERE sa.assignment_id = ? AND (? IS NULL OR sa.student_id = ?)
GROUP BY sa.id
"""
_SUBMISSIONS = """
SELECT sa.student_id, sa.timestamp, sa.extension,
       (SELECT COALESCE(SUM(sn.late_submission_penalty), 0.0) FROM submitted_notebook sn
        WHERE sn.assignment_id = sa.id)
FROM submitted_assignment sa
WHERE sa.assignment_id = ? AND (? IS NULL OR sa.student_id = ?)
"""
_MAX_SCORE = """
SELECT (SELECT COALESCE(SUM(gc.max_score), 0.0) FROM grade_cells gc
        JOIN base_cell bc ON bc.id = gc.id JOIN notebook n ON n.id = bc.notebook_id
        WHERE n.assignment_id = ?)
     + (SELECT COALESCE(SUM(tc.max_score), 0.0) FROM task_cells tc
        JOIN base_cell bc ON bc.id = tc.id JOIN notebook n ON n.id = bc.notebook_id
        WHERE n.assignment_id = ?)
"""


def _read_gradebook(path: Path, assignment: str, only: str | None = None) -> _Book:
    """The assignment's rows of gradebook.db: every student's, or `only` this student's."""
    if not path.is_file():
        raise GradebookError(f"{path} does not exist: run `autograder release {assignment}` "
                             "first")
    try:  # read-only: exporting never changes gradebook.db
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise GradebookError(f"{path} cannot be opened: {error}") from None
    try:
        found = db.execute("SELECT id, duedate FROM assignment WHERE name = ?",
                           (assignment,)).fetchone()
        if found is None:
            raise GradebookError(f"gradebook.db does not know assignment '{assignment}': run "
                                 f"`autograder release {assignment}` first")
        assignment_id, duedate = found
        students = {sid: tuple(clean_text(value or "", 200) for value in rest)
                    for sid, *rest in db.execute(
                        "SELECT id, first_name, last_name, email, lms_user_id FROM student "
                        "WHERE ? IS NULL OR id = ?", (only, only))}
        chosen = (assignment_id, only, only)
        sums = {sid: (auto, adjust, extra, raw)
                for sid, auto, adjust, extra, raw in db.execute(_GRADE_SUMS, chosen)}
        submissions = {}
        for sid, timestamp, extension, penalty in db.execute(_SUBMISSIONS, chosen):
            auto, adjust, extra, raw = sums.get(sid, (0.0, 0.0, 0.0, 0.0))
            submissions[sid] = _Submission((auto, adjust, extra), raw, penalty, timestamp,
                                           _seconds_late(timestamp, duedate, extension))
        max_score = db.execute(_MAX_SCORE, (assignment_id, assignment_id)).fetchone()[0]
    except sqlite3.Error as error:
        raise GradebookError(f"{path} is not a gradebook this version of nbgrader reads "
                             f"({error}); `nbgrader db upgrade` updates an older one") from None
    finally:
        db.close()
    return _Book(students, submissions, float(max_score))


_EPOCH = datetime(1970, 1, 1)


def _seconds_late(timestamp: str | None, duedate: str | None,
                  extension: str | None) -> float | None:
    """nbgrader's SubmittedAssignment.total_seconds_late, from the stored text (SQLAlchemy keeps
    an Interval in SQLite as a date after 1970-01-01); None when there is no due date."""
    if not timestamp or not duedate:
        return None
    try:
        due = datetime.fromisoformat(duedate)
        if extension:
            due += datetime.fromisoformat(extension) - _EPOCH
        return max(0.0, (datetime.fromisoformat(timestamp) - due).total_seconds())
    except ValueError:
        return None
