"""gradebook.db rows written with plain SQL are the rows nbgrader's own API writes."""

from __future__ import annotations

import io
import sqlite3
import warnings

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder import commands, results
from autograder.assignment import Assignment
from autograder.author import solution_answers, with_answers
from autograder.course import Course
from autograder.gradebook_db import GradebookError, NbgraderGradebook
from autograder.timestamps import parse_utc
from tests.conftest import REPO, make_course, write_submissions

CELL_POINTS = {"check_forward_backward": 3.0, "check_chain_rule": 3.0, "check_train": 4.0}


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    return make_course(tmp_path_factory.mktemp("gradebook-db"))


def _result(student: str, scores: dict[str, float],
            timestamp: str | None) -> results.SubmissionResult:
    tests = [results.TestResult(name=f"t_{cell}", cell=cell, points=points,
                        max_points=CELL_POINTS[cell], passed=points == CELL_POINTS[cell],
                        message="", title="")
             for cell, points in scores.items()]
    return results.SubmissionResult(student_id=student, assignment="backprop", notebook="backprop",
                            status="graded", timestamp=timestamp, tests=tests)


def _record_with_nbgraders_api(course: Course, result: results.SubmissionResult) -> None:
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradebook.update_or_create_student(result.student_id)
        gradebook.update_or_create_submission("backprop", result.student_id,
                                              timestamp=result.timestamp)
        for cell, score in result.cell_scores().items():
            grade = gradebook.find_grade(cell, "backprop", "backprop", result.student_id)
            grade.auto_score = score
            grade.needs_manual_grade = False
        gradebook.db.commit()


def _as_nbgrader_reads_it(course: Course, student: str) -> dict:
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook:
        submission = gradebook.find_submission("backprop", student)
        notebook = submission.notebooks[0]
        return {
            "timestamp": submission.timestamp,
            "score": submission.score,
            "max_score": submission.max_score,
            "needs_manual_grade": submission.needs_manual_grade,
            "grades": sorted((g.name, g.auto_score, g.manual_score, g.needs_manual_grade,
                              g.max_score) for g in notebook.grades),
            "comments": sorted((c.name, c.auto_comment, c.manual_comment)
                               for c in notebook.comments),
            "flagged": notebook.flagged,
        }


def _row_counts(course: Course) -> dict[str, int]:
    with sqlite3.connect(course.root / "gradebook.db") as db:
        return {table: db.execute(f"select count(*) from {table}").fetchone()[0]
                for table in ("student", "submitted_assignment", "submitted_notebook",
                              "grade", "comment")}


def test_our_rows_read_exactly_like_the_rows_nbgrader_writes(course) -> None:
    scores = {"check_forward_backward": 3.0, "check_chain_rule": 1.0, "check_train": 0.0}
    stamp = "2026-11-20 12:00:00.250000 UTC"
    _record_with_nbgraders_api(course, _result("by-nbgrader", scores, stamp))
    before = _row_counts(course)
    with NbgraderGradebook(course, Assignment.load(course, "backprop")) as gradebook:
        gradebook.record(_result("by-us", scores, stamp))
    added = {table: count - before[table] for table, count in _row_counts(course).items()}

    ours, theirs = _as_nbgrader_reads_it(course, "by-us"), _as_nbgrader_reads_it(course,
                                                                                "by-nbgrader")
    assert ours == theirs
    assert ours["score"] == 4.0 and ours["max_score"] == 10.0
    assert added == {"student": 1, "submitted_assignment": 1, "submitted_notebook": 1,
                     "grade": len(ours["grades"]), "comment": len(ours["comments"])}


def test_a_regrade_updates_the_rows_it_wrote_and_adds_none(course) -> None:
    assignment = Assignment.load(course, "backprop")
    first = {"check_forward_backward": 0.0, "check_chain_rule": 0.0, "check_train": 0.0}
    with NbgraderGradebook(course, assignment) as gradebook:
        gradebook.record(_result("regraded", first, "2026-11-20 12:00:00 UTC"))
    before = _row_counts(course)
    with NbgraderGradebook(course, assignment) as gradebook:  # a later run, as after --regrade
        gradebook.record(_result("regraded", CELL_POINTS, "2026-11-21 08:30:00 Europe/Paris"))
    assert _row_counts(course) == before
    seen = _as_nbgrader_reads_it(course, "regraded")
    assert seen["score"] == 10.0
    assert seen["timestamp"] == parse_utc("2026-11-21 07:30:00 UTC")


def test_a_gradebook_that_does_not_know_the_assignment_is_refused(course, tmp_path) -> None:
    empty = Course(root=tmp_path, course_id=course.course_id)
    with pytest.raises(GradebookError, match="does not exist"):
        NbgraderGradebook(empty, Assignment.load(course, "backprop"))
    (tmp_path / "gradebook.db").write_bytes((course.root / "gradebook.db").read_bytes())
    with sqlite3.connect(tmp_path / "gradebook.db") as db:
        db.execute("update assignment set name = 'other'")
    with pytest.raises(GradebookError, match="does not know assignment 'backprop'"):
        NbgraderGradebook(empty, Assignment.load(course, "backprop"))


def test_an_assignment_added_with_a_due_date_but_not_released_is_named_so(course,
                                                                          tmp_path) -> None:
    """`nbgrader db assignment add --duedate` makes the assignment's row but no notebook: the
    grade is refused saying it was not released, not that gradebook.db does not know it."""
    import shutil
    import subprocess

    from tests.conftest import AUTOGRADER, COURSE_FILES, run_nbgrader

    root = tmp_path / "course"
    root.mkdir()
    for name in (*COURSE_FILES, "release"):  # release/ as a course repository ships it
        source = course.root / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy(source, root / name)
    fresh = Course.load(root)
    run_nbgrader(fresh, "db", "assignment", "add", "backprop",
                 "--duedate=2026-11-20 17:00:00 UTC")
    notebook = course.release_dir("backprop") / "backprop.ipynb"
    done = subprocess.run([*AUTOGRADER, "--course", str(root), "grade", "backprop",
                           str(notebook), "--student", "10001"],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'backprop' is in gradebook.db" in done.stderr
    assert "has not been released" in done.stderr and "does not know" not in done.stderr
    assert "autograder release backprop" in done.stderr
    released = subprocess.run([*AUTOGRADER, "--course", str(root), "release", "backprop"],
                              capture_output=True, text=True)
    assert released.returncode == 0, released.stderr
    with Gradebook(fresh.db_url) as gradebook:  # as the message says: the due date is kept
        assert gradebook.find_assignment("backprop").duedate == parse_utc("2026-11-20 17:00:00")


def test_a_new_notebook_flags_the_earlier_manual_grades_for_review(tmp_path) -> None:
    """A TA graded a cell by hand; the student's next notebook is graded: the manual grade
    still counts (as in nbgrader), but formgrader flags it for review and the run says so."""
    course = make_course(tmp_path)
    release_notebook = nbformat.read(course.release_dir("backprop") / "backprop.ipynb",
                                     as_version=4)
    solution = solution_answers(nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb",
                                              as_version=4))
    first = write_submissions(tmp_path / "in-first", {"ta-flag": with_answers(release_notebook,
                                                                           solution)})
    commands.grade(course, "backprop", first)
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradebook.find_grade("check_train", "backprop", "backprop", "ta-flag").manual_score = 4
        gradebook.db.commit()
    unchanged = io.StringIO()
    commands.grade(course, "backprop", first, out=unchanged)  # same notebook: nothing to review
    assert "flagged for review" not in unchanged.getvalue()
    second = write_submissions(tmp_path / "in-second", {"ta-flag": with_answers(
        release_notebook, dict(solution, train_step=solution["train_step"].replace(
            "optimizer.step()", "pass")))})
    out = io.StringIO()
    commands.grade(course, "backprop", second, out=out)
    assert "ta-flag: a new notebook, and 1 manual grade(s) a TA gave the earlier one still " \
           "count: flagged for review in formgrader" in out.getvalue()
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook:
        grade = gradebook.find_grade("check_train", "backprop", "backprop", "ta-flag")
        assert grade.manual_score == 4 and grade.needs_manual_grade


def test_gradebook_tables_are_read_again_when_the_schema_changes(tmp_path) -> None:
    """nbgrader's tables are read once per version of gradebook.db's schema (the service's
    worker opens it for every batch): a changed schema (`nbgrader db upgrade`) is read anew."""
    course = make_course(tmp_path)
    assignment = Assignment.load(course, "backprop")
    with NbgraderGradebook(course, assignment) as gradebook:
        assert "upgraded" not in gradebook._tables["grade"].c
    with sqlite3.connect(course.root / "gradebook.db") as db:
        db.execute("ALTER TABLE grade ADD COLUMN upgraded TEXT")
    with NbgraderGradebook(course, assignment) as gradebook:
        assert "upgraded" in gradebook._tables["grade"].c
