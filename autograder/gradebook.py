"""Scores as tables (pandas).

`tests_frame` has one row per student and test; `test_points` one row per student with a
column per test; `scores_frame` those test columns next to the final scores read from
gradebook.db (autograder.scores: manual scores, extra credit and late penalty included, every
rostered student listed), which is what every export shows, so nbgrader export, formgrader and
our CSVs agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograder.results import SubmissionResult

if TYPE_CHECKING:
    import pandas as pd

    from autograder.assignment import Assignment
    from autograder.scores import StudentScore


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


def test_points(results: list[SubmissionResult], assignment: Assignment) -> pd.DataFrame:
    """student x hidden test: the points of each test, in the assignment's test order."""
    import pandas as pd

    test_names = [test.name for test in assignment.hidden.tests]
    long = tests_frame(results)
    if long.empty:
        return pd.DataFrame(columns=test_names, dtype=float)
    points = long.pivot(index="student_id", columns="test", values="points")
    return points.reindex(columns=test_names).astype(float)


SCORE_COLUMNS = ["autograded", "manual_adjustment", "extra_credit", "late_penalty", "total",
                 "max_score", "percent", "status", "reason", "late", "seconds_late", "missing",
                 "timestamp", "first_name", "last_name", "email", "lms_user_id"]


def scores_frame(scores: list[StudentScore], results: list[SubmissionResult],
                 assignment: Assignment) -> pd.DataFrame:
    """student x test points (our stored results), then the final scores: `total` is the
    score nbgrader's export gives (blank for a missing student exported blank)."""
    import pandas as pd

    test_names = [test.name for test in assignment.hidden.tests]
    points = test_points(results, assignment)
    summary = pd.DataFrame(
        [{"student_id": s.student_id, "autograded": s.autograded,
          "manual_adjustment": s.manual_adjustment, "extra_credit": s.extra_credit,
          "late_penalty": s.late_penalty, "total": s.score, "max_score": s.max_score,
          "status": s.status, "reason": s.reason, "late": s.late,
          "seconds_late": s.seconds_late, "missing": s.missing, "timestamp": s.timestamp,
          "first_name": s.first_name, "last_name": s.last_name, "email": s.email,
          "lms_user_id": s.lms_user_id} for s in scores],
        columns=["student_id", *[c for c in SCORE_COLUMNS if c != "percent"]],
    ).set_index("student_id")
    for column in ("autograded", "total", "max_score"):
        summary[column] = summary[column].astype(float)
    table = points.join(summary, how="right")
    table["percent"] = (100 * table["total"] / table["max_score"]).round(1)
    table = table[[*test_names, *SCORE_COLUMNS]]
    table.index.name = "student_id"
    return table.sort_index()


def by_cell(table: pd.DataFrame, assignment: Assignment) -> pd.DataFrame:
    """The gradebook with test columns summed per nbgrader grade cell: a terminal-wide view
    (with the manual adjustment, extra credit and late penalty when the table has them)."""
    cells: dict[str, list[str]] = {}
    for test in assignment.hidden.tests:
        cells.setdefault(test.cell, []).append(test.name)
    summary = table[[]].copy()
    for cell, tests in cells.items():
        summary[cell] = table[tests].sum(axis=1, min_count=1)
    extra = [c for c in ("manual_adjustment", "extra_credit", "late_penalty")
             if c in table.columns]
    summary = summary.join(table[extra].rename(columns={
        "manual_adjustment": "manual", "extra_credit": "extra", "late_penalty": "penalty"}))
    return summary.join(table[["total", "max_score", "percent", "status", "reason"]])
