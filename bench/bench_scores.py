"""Benchmark: final scores for a class read with SQL (autograder.scores) and with nbgrader's
`Gradebook` API, side by side, on the same gradebook.db.

    .venv/bin/python bench/bench_scores.py [--n 300]

Releases the assignment in a scratch course, records N students' results into gradebook.db,
gives a third of them a manual score and a late penalty, then times both readers (the API's
import counted apart) and checks that they give the same final scores. A benchmark, not a
test: it asserts nothing timed.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scores-") as scratch:
        from autograder.course import Course
        from autograder.demo import scratch_course

        root = scratch_course(Course.load(REPO), Path(scratch)).root
        subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(root),
                        "release", "backprop"], check=True, capture_output=True)
        from autograder.assignment import Assignment
        from autograder.gradebook_db import NbgraderGradebook
        from autograder.results import SubmissionResult, TestResult
        from autograder.scores import final_scores

        course = Course.load(root)
        assignment = Assignment.load(course, "backprop")
        with NbgraderGradebook(course, assignment) as gradebook:
            for i in range(args.n):
                tests = [TestResult(f"t_{cell}", cell, float(i % (int(points) + 1)), points,
                                    False) for cell, points in assignment.grade_cells.items()]
                gradebook.record(SubmissionResult(f"s{i:04d}", "backprop", "backprop",
                                                  "graded", tests=tests))
        with sqlite3.connect(root / "gradebook.db") as db:
            db.execute("UPDATE grade SET manual_score = 1.5 WHERE rowid % 9 = 0")
            db.execute("UPDATE submitted_notebook SET late_submission_penalty = 1.0 "
                       "WHERE rowid % 3 = 0")

        started = time.perf_counter()
        ours = {row.student_id: row.score for row in final_scores(course, "backprop", [])}
        sql_seconds = time.perf_counter() - started

        started = time.perf_counter()
        from nbgrader.api import Gradebook
        import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        theirs = {}
        with Gradebook(course.db_url, course_id=course.course_id) as gradebook, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for student in gradebook.students:
                submission = gradebook.find_submission("backprop", student.id)
                theirs[student.id] = max(0.0, submission.score
                                         - submission.late_submission_penalty)
        api_seconds = time.perf_counter() - started
        assert ours == theirs, "the two readers disagree"
        print(f"{args.n} students: SQL {sql_seconds * 1000:.0f} ms; nbgrader Gradebook API "
              f"{api_seconds * 1000:.0f} ms (+ {import_seconds * 1000:.0f} ms import); "
              f"SQL {api_seconds / sql_seconds:.0f}x faster "
              f"({(api_seconds + import_seconds) / sql_seconds:.0f}x with the import); "
              "same final scores")


if __name__ == "__main__":
    main()
