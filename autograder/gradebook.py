"""Scores as tables (pandas) and in nbgrader's gradebook.db, from the same results.

`tests_frame` has one row per student and test; `gradebook_frame` one row per student with a
column per test and the totals. Both come from stored results; the gradebook.db rows are
written from the same per-cell sums, so nbgrader export, formgrader and our CSV agree.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING

from autograder.results import SubmissionResult

if TYPE_CHECKING:
    import pandas as pd

    from autograder.assignment import Assignment
    from autograder.course import Course


def tests_frame(results: list[SubmissionResult]) -> pd.DataFrame:
    import pandas as pd

    rows = [{"student_id": result.student_id, "assignment": result.assignment,
             "test": test.name, "cell": test.cell, "points": test.points,
             "max_points": test.max_points, "passed": test.passed, "message": test.message,
             "status": result.status}
            for result in results for test in result.tests]
    columns = ["student_id", "assignment", "test", "cell", "points", "max_points", "passed",
               "message", "status"]
    return pd.DataFrame(rows, columns=columns)


def gradebook_frame(results: list[SubmissionResult], assignment: Assignment) -> pd.DataFrame:
    """student x test points, then total, max_score, percent, status, reason."""
    import pandas as pd

    test_names = [test.name for test in assignment.hidden.tests]
    long = tests_frame(results)
    if long.empty:
        points = pd.DataFrame(columns=test_names, dtype=float)
    else:
        points = long.pivot(index="student_id", columns="test", values="points")
        points = points.reindex(columns=test_names)
    points = points.astype(float)
    summary = pd.DataFrame(
        [{"student_id": r.student_id, "total": r.score, "max_score": assignment.max_score,
          "status": r.status, "reason": r.reason} for r in results],
        columns=["student_id", "total", "max_score", "status", "reason"],
    ).set_index("student_id")
    table = points.join(summary, how="right")
    table["percent"] = (100 * table["total"] / table["max_score"]).round(1)
    table = table[[*test_names, "total", "max_score", "percent", "status", "reason"]]
    table.index.name = "student_id"
    return table.sort_index()


def put_nbgrader_tools_on_path() -> None:
    """nbgrader runs `alembic` from PATH to create gradebook.db; make it this environment's."""
    tools = os.path.dirname(sys.executable)
    if tools not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = tools + os.pathsep + os.environ.get("PATH", "")


class GradebookError(Exception):
    """gradebook.db cannot take these results (e.g. the assignment was never released)."""


def by_cell(table: pd.DataFrame, assignment: Assignment) -> pd.DataFrame:
    """The gradebook with test columns summed per nbgrader grade cell: a terminal-wide view."""
    cells: dict[str, list[str]] = {}
    for test in assignment.hidden.tests:
        cells.setdefault(test.cell, []).append(test.name)
    summary = table[[]].copy()
    for cell, tests in cells.items():
        summary[cell] = table[tests].sum(axis=1, min_count=1)
    return summary.join(table[["total", "max_score", "percent", "status", "reason"]])


class NbgraderGradebook:
    """Writes results into gradebook.db through nbgrader's own API (one session per batch)."""

    def __init__(self, course: Course, assignment: Assignment) -> None:
        from nbgrader.api import Gradebook, MissingEntry

        put_nbgrader_tools_on_path()
        self.assignment = assignment
        self._gradebook = Gradebook(course.db_url, course_id=course.course_id)
        self._students = {student.id for student in self._gradebook.students}
        try:
            self._gradebook.find_notebook(assignment.notebook_name, assignment.name)
        except MissingEntry:
            self._gradebook.close()
            raise GradebookError(f"gradebook.db does not know assignment '{assignment.name}': "
                              f"run `autograder release {assignment.name}` first") from None

    def record(self, result: SubmissionResult) -> None:
        gradebook, name = self._gradebook, self.assignment.name
        if result.student_id not in self._students:
            gradebook.update_or_create_student(result.student_id)
            self._students.add(result.student_id)
        extra = {"timestamp": result.timestamp} if result.timestamp else {}
        with warnings.catch_warnings():
            # nbgrader 0.9.6 builds submissions in a way SQLAlchemy 2 warns about (autoflush of
            # backrefs); the rows are written all the same, as `nbgrader export` shows.
            warnings.filterwarnings("ignore", message=".*not in session.*")
            submission = gradebook.update_or_create_submission(name, result.student_id, **extra)
        # The submission's own grade rows: one query for all cells, not one per cell.
        notebook = next(nb for nb in submission.notebooks
                        if nb.name == self.assignment.notebook_name)
        grades = {grade.name: grade for grade in notebook.grades}
        for cell, score in result.cell_scores().items():
            grades[cell].auto_score = score
            grades[cell].needs_manual_grade = False
        gradebook.db.commit()

    def close(self) -> None:
        self._gradebook.close()

    def __enter__(self) -> NbgraderGradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
