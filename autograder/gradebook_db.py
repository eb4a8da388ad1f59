"""Results into nbgrader's gradebook.db, in nbgrader's own schema: one transaction each.

The rows are exactly those nbgrader's `Gradebook.add_submission` makes -- a submitted
assignment, its submitted notebook, a grade per grade cell and task cell, a comment per
solution cell and task cell -- with the autograded score of each grade cell filled in, so
`nbgrader export` and formgrader read them as their own (tests/test_gradebook_db.py checks with
nbgrader's API). They are written with a few SQL statements on the tables nbgrader created,
read from the database itself: nbgrader's ORM takes about 11 ms and three commits per
submission, after a 0.8 s import of its Jupyter server extensions.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder.errors import UserError
from autograder.late import LateRules, iso_utc, load_extensions
from autograder.results import SubmissionResult

if TYPE_CHECKING:
    from autograder.assignment import Assignment
    from autograder.course import Course

TABLES = ("student", "assignment", "notebook", "base_cell", "grade_cells", "solution_cells",
          "task_cells", "submitted_assignment", "submitted_notebook", "grade", "comment")


class GradebookError(UserError):
    """gradebook.db cannot take these results (e.g. the assignment was never released)."""


def _new_id() -> str:
    return uuid.uuid4().hex  # nbgrader's ids


_schemas: dict[tuple, Any] = {}  # (file, SQLite's schema version) -> nbgrader's tables
_schemas_lock = threading.Lock()


def _reflected(db: Any, path: Path) -> Any:
    """nbgrader's tables as this gradebook.db defines them. Reading them takes longer than
    writing a result: a long-lived process (the service's worker) reads them once for each
    version of the schema (SQLite counts every change of it, e.g. `nbgrader db upgrade`)."""
    from sqlalchemy import MetaData

    key = None
    if db.dialect.name == "sqlite":
        try:  # (a file replaced since: its inode says so, and it is read whole)
            key = (str(path), path.stat().st_ino,
                   db.exec_driver_sql("PRAGMA schema_version").scalar())
        except OSError:
            key = None
        with _schemas_lock:
            if key in _schemas:
                return _schemas[key]
    metadata = MetaData()
    metadata.reflect(db, only=TABLES)
    if key is not None:
        with _schemas_lock:
            _schemas[key] = metadata.tables
    return metadata.tables


class NbgraderGradebook:
    """Writes one assignment's results into gradebook.db."""

    def __init__(self, course: Course, assignment: Assignment) -> None:
        from sqlalchemy import create_engine, select
        from sqlalchemy.exc import SQLAlchemyError

        self.assignment = assignment
        path = course.root / "gradebook.db"
        if not path.is_file():
            raise GradebookError(f"{path} does not exist: run `autograder release "
                                 f"{assignment.name}` first")
        self._engine = create_engine(course.db_url)
        try:
            with self._engine.connect() as db:
                self._tables = tables = _reflected(db, path)
                self._assignment_id = db.scalar(
                    select(tables["assignment"].c.id)
                    .where(tables["assignment"].c.name == assignment.name))
                notebook = tables["notebook"]
                self._notebook_id = db.scalar(
                    select(notebook.c.id).where(notebook.c.name == assignment.notebook_name,
                                                notebook.c.assignment_id == self._assignment_id))
                self._grade_cells = self._cells(db, "grade_cells")
                self._solution_cells = self._cells(db, "solution_cells")
                self._task_cells = self._cells(db, "task_cells")
                self._students = set(db.scalars(select(tables["student"].c.id)))
                self._submissions = self._existing_submissions(db)
                due = db.scalar(select(tables["assignment"].c.duedate)
                                .where(tables["assignment"].c.id == self._assignment_id))
                extensions = load_extensions(db, assignment.name)
        except SQLAlchemyError as error:
            self._engine.dispose()
            raise GradebookError(f"{path} is not a gradebook this version of nbgrader reads "
                                 f"({type(error).__name__}); `nbgrader db upgrade` updates "
                                 "an older one") from None
        if self._notebook_id is None:
            self._engine.dispose()
            if self._assignment_id is not None:  # `nbgrader db assignment add`: a due date,
                # but no notebook and grade cells, which only a release records
                raise GradebookError(
                    f"assignment '{assignment.name}' is in gradebook.db (its due date, from "
                    "`nbgrader db assignment add`) but has not been released there: no "
                    f"notebook or grade cells. Run `autograder release {assignment.name}` "
                    "first (the due date is kept)")
            raise GradebookError(f"gradebook.db does not know assignment '{assignment.name}': "
                                 f"run `autograder release {assignment.name}` first")
        # Read now, once a run: a changed due date or extension applies from the next run.
        self.late = LateRules(course, assignment.name, due, extensions)

    def _cells(self, db: Any, kind: str) -> dict[str, str]:
        """{cell name: id} of this notebook's cells of one kind."""
        from sqlalchemy import select

        base, cells = self._tables["base_cell"], self._tables[kind]
        rows = db.execute(select(base.c.name, base.c.id)
                          .join(cells, cells.c.id == base.c.id)
                          .where(base.c.notebook_id == self._notebook_id))
        return dict(rows.all())

    def _existing_submissions(self, db: Any) -> dict[str, tuple[str, str]]:
        """{student id: (submitted assignment id, submitted notebook id)}."""
        from sqlalchemy import select

        submitted = self._tables["submitted_assignment"]
        notebook = self._tables["submitted_notebook"]
        rows = db.execute(select(submitted.c.student_id, submitted.c.id, notebook.c.id)
                          .join(notebook, notebook.c.assignment_id == submitted.c.id)
                          .where(submitted.c.assignment_id == self._assignment_id,
                                 notebook.c.notebook_id == self._notebook_id))
        return {student: (assignment_id, notebook_id)
                for student, assignment_id, notebook_id in rows.all()}

    def record(self, result: SubmissionResult) -> None:
        """Write the result's scores and its late-work rows in one transaction, and fill the
        result's late fields (due, seconds_late, late_penalty, lms_late)."""
        scores = result.cell_scores()
        unknown = sorted(set(scores) - set(self._grade_cells))
        if unknown:
            raise GradebookError(f"gradebook.db has no grade cell {', '.join(unknown)} in "
                                 f"{self.assignment.notebook_name}: release the assignment again")
        self._write(result, scores)

    def record_late(self, result: SubmissionResult) -> bool:
        """For a result kept from an earlier run: judge its lateness again (the due date, an
        extension or the penalty settings may have changed; so may a TA's manual scores) and
        write only the late-work rows, without touching its scores. A result gradebook.db does
        not hold (e.g. a new gradebook.db) is recorded whole. True when a late field of the
        result changed."""
        before = (result.due, result.seconds_late, result.late_penalty, result.lms_late)
        if result.student_id in self._submissions:
            self._write(result, None)
        else:
            self.record(result)
        return before != (result.due, result.seconds_late, result.late_penalty, result.lms_late)

    def _write(self, result: SubmissionResult, scores: dict[str, float] | None) -> None:
        from sqlalchemy import Interval, type_coerce

        lateness = self.late.judge(result.student_id, result.timestamp)
        # The time judged is what nbgrader is told, so its own total_seconds_late agrees (for
        # the flag rule: one second past the due date, or none); a result without any time
        # leaves what gradebook.db holds.
        timestamp = lateness.submitted
        keep_timestamp = timestamp is None and not lateness.flag_only
        tables, student = self._tables, result.student_id
        submitted = tables["submitted_assignment"]
        with self._engine.begin() as db:  # one transaction: all of it, or none of it
            if student not in self._students:
                db.execute(tables["student"].insert().values(id=student))
            if student in self._submissions:
                assignment_id, notebook_id = self._submissions[student]
            else:
                assignment_id, notebook_id = _new_id(), _new_id()
                self._add_submission(db, student, assignment_id, notebook_id, timestamp)
            values: dict[str, Any] = {
                # nbgrader's Interval column, stored as SQLAlchemy stores an Interval in SQLite
                "extension": type_coerce(lateness.extension, Interval())}
            if not keep_timestamp:
                values["timestamp"] = timestamp
            db.execute(submitted.update().where(submitted.c.id == assignment_id).values(**values))
            grade = tables["grade"]
            for cell, score in (scores or {}).items():
                db.execute(grade.update()
                           .where(grade.c.notebook_id == notebook_id,
                                  grade.c.cell_id == self._grade_cells[cell])
                           .values(auto_score=score, needs_manual_grade=False))
            penalty = self.late.penalty(student, self._notebook_score(db, notebook_id),
                                        lateness.seconds_late)
            notebook = tables["submitted_notebook"]
            db.execute(notebook.update().where(notebook.c.id == notebook_id)
                       .values(late_submission_penalty=penalty))
        self._students.add(student)
        self._submissions[student] = (assignment_id, notebook_id)
        result.due = iso_utc(lateness.due)
        result.seconds_late = lateness.seconds_late
        result.late_penalty = penalty or 0.0
        result.lms_late = lateness.lms_late

    def _notebook_score(self, db: Any, notebook_id: str) -> float:
        """nbgrader's SubmittedNotebook.score: per grade, the manual score if a TA gave one,
        else the autograded one, plus extra credit (what its AssignLatePenalties passes to the
        plugin), as the grades now stand in this transaction."""
        from sqlalchemy import text

        return float(db.scalar(text(
            "SELECT coalesce(sum(CASE WHEN manual_score IS NOT NULL "
            "THEN manual_score + coalesce(extra_credit, 0) "
            "WHEN auto_score IS NOT NULL THEN auto_score + coalesce(extra_credit, 0) "
            "ELSE 0 END), 0) FROM grade WHERE notebook_id = :id"), {"id": notebook_id}))

    def _add_submission(self, db: Any, student: str, assignment_id: str, notebook_id: str,
                        timestamp: datetime | None) -> None:
        """The rows of nbgrader's Gradebook.add_submission, for this one notebook."""
        tables = self._tables
        db.execute(tables["submitted_assignment"].insert().values(
            id=assignment_id, assignment_id=self._assignment_id, student_id=student,
            timestamp=timestamp, extension=None))
        db.execute(tables["submitted_notebook"].insert().values(
            id=notebook_id, assignment_id=assignment_id, notebook_id=self._notebook_id,
            flagged=False, late_submission_penalty=None))
        graded = [*self._grade_cells.values(), *self._task_cells.values()]
        commented = [*self._solution_cells.values(), *self._task_cells.values()]
        if graded:
            db.execute(tables["grade"].insert(), [
                {"id": _new_id(), "notebook_id": notebook_id, "cell_id": cell,
                 "auto_score": None, "manual_score": None, "extra_credit": None,
                 "needs_manual_grade": True} for cell in graded])
        if commented:
            db.execute(tables["comment"].insert(), [
                {"id": _new_id(), "notebook_id": notebook_id, "cell_id": cell,
                 "auto_comment": None, "manual_comment": None} for cell in commented])

    def flag_manual_grades(self, student: str) -> int:
        """A new notebook of `student` was just recorded: the manual grades a TA gave the
        earlier one still count (as in nbgrader), so they are flagged for review in formgrader
        (needs_manual_grade, as nbgrader's SaveAutoGrades flags them). Returns how many."""
        if student not in self._submissions:
            return 0
        grade = self._tables["grade"]
        notebook_id = self._submissions[student][1]
        with self._engine.begin() as db:
            return db.execute(grade.update()
                              .where(grade.c.notebook_id == notebook_id,
                                     grade.c.manual_score.is_not(None))
                              .values(needs_manual_grade=True)).rowcount

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> NbgraderGradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
