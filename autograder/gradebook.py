"""Scores as tables (pandas), from the stored results.

`tests_frame` has one row per student and test; `gradebook_frame` one row per student with a
column per test and the totals. gradebook_db writes the same per-cell sums into nbgrader's
gradebook.db, so nbgrader export, formgrader and our CSV agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograder.results import SubmissionResult

if TYPE_CHECKING:
    import pandas as pd

    from autograder.assignment import Assignment


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


def by_cell(table: pd.DataFrame, assignment: Assignment) -> pd.DataFrame:
    """The gradebook with test columns summed per nbgrader grade cell: a terminal-wide view."""
    cells: dict[str, list[str]] = {}
    for test in assignment.hidden.tests:
        cells.setdefault(test.cell, []).append(test.name)
    summary = table[[]].copy()
    for cell, tests in cells.items():
        summary[cell] = table[tests].sum(axis=1, min_count=1)
    return summary.join(table[["total", "max_score", "percent", "status", "reason"]])
