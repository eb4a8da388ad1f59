"""Late work against the real nbgrader: a due date set with `nbgrader db assignment add
--duedate`, real grading, nbgrader's LateSubmissionPlugin (its methods and a custom class
defined in the course), extensions, the LMS late flag, and `nbgrader export` agreeing."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from autograder import commands, late
from autograder.author import with_answers
from autograder.course import Course
from autograder.lms.record import write_lms_record
from autograder.results import SubmissionResult
from autograder.store import load_results
from tests.conftest import AUTOGRADER, make_course, nbgrader_export, run_nbgrader, write_submissions

DUE = "2026-01-10 12:00:00 UTC"
DUE_ISO = "2026-01-10T12:00:00+00:00"
TIMES = {  # submission times (timestamp.txt) against DUE
    "ontime": "2026-01-10 11:59:00 UTC",  # a minute early
    "late36h": "2026-01-12 00:00:00 UTC",  # 36 hours late: two started days
    "late1h": "2026-01-10 13:00:00 UTC",  # one hour late
    "extended": "2026-01-11 12:00:00 UTC",  # a day late, but given two days
    "flagged": "2026-01-09 09:00:00 UTC",  # "on time", but the LMS flagged it, with no time
}
PER_DAY_PLUGIN = '''
import math

from nbgrader.plugins import LateSubmissionPlugin


class OnePointPerStartedDay(LateSubmissionPlugin):
    def late_submission_penalty(self, student_id, score, total_seconds_late):
        return float(math.ceil(total_seconds_late / 86400))
'''
BASE_CONFIG = "nbgrader_config.base"


@pytest.fixture(scope="module")
def graded(tmp_path_factory, release_notebook, solution) -> Course:
    """A private course with a due date and five students graded once (all 10/10 but late1h,
    who left out train_step)."""
    root = tmp_path_factory.mktemp("late")
    course = make_course(root)
    (root / "late_plugins.py").write_text(PER_DAY_PLUGIN)
    (root / BASE_CONFIG).write_text((root / "nbgrader_config.py").read_text())
    run_nbgrader(course, "db", "assignment", "add", "backprop", f"--duedate={DUE}")
    partial = {cell: answer for cell, answer in solution.items() if "train" not in cell}
    assert partial != solution
    notebooks = {student: with_answers(release_notebook,
                                       partial if student == "late1h" else solution)
                 for student in TIMES}
    folder = write_submissions(tmp_path_factory.mktemp("incoming"), notebooks)
    for student, stamp in TIMES.items():
        (folder / student / "backprop" / "timestamp.txt").write_text(stamp)
    late.save_extensions(course, "backprop", [late.make_extension("extended", days=2)],
                         force=True)  # before "extended" submits or is rostered
    commands.grade(course, "backprop", folder)
    # The LMS download's record for "flagged": late, and no usable time (contract 1).
    write_lms_record(course, "flagged", "backprop", {
        "lms": "canvas", "file": "flagged_LATE_1_2_backprop.ipynb", "name": "flagged",
        "user_id": "1", "submission_id": "2", "late": True, "submitted_at": None})
    return course


def _configure(course: Course, *lines: str) -> Course:
    """The course's config: the original plus `lines`; the course loaded again."""
    base = (course.root / BASE_CONFIG).read_text()
    (course.root / "nbgrader_config.py").write_text(base + "\n".join(lines) + "\n")
    return Course.load(course.root)


def _rerun(course: Course) -> dict[str, SubmissionResult]:
    """A plain `grade` of the course's submitted/: every result is kept (none regraded)."""
    results = commands.grade(course, "backprop")
    return {result.student_id: result for result in results}


def _agrees_withrun_nbgrader(course: Course, results: dict[str, SubmissionResult],
                          tmp_path: Path) -> None:
    exported = nbgrader_export(course, tmp_path)
    for student, result in results.items():
        row = exported[student]
        assert float(row["raw_score"]) == pytest.approx(result.score), student
        assert float(row["late_submission_penalty"]) == pytest.approx(result.late_penalty)
        assert float(row["score"]) == pytest.approx(max(0.0, result.score - result.late_penalty))


def test_penalty_none_marks_late_but_takes_nothing(graded: Course, tmp_path: Path) -> None:
    course = _configure(graded, 'c.LateSubmissionPlugin.penalty_method = "none"')
    results = _rerun(course)
    assert results["late1h"].score < 10  # the partial one
    assert {s: r.seconds_late for s, r in results.items()} == {
        "ontime": 0, "late36h": 36 * 3600, "late1h": 3600, "extended": 0, "flagged": 1}
    assert all(result.late_penalty == 0 for result in results.values())
    assert results["ontime"].due == DUE_ISO
    assert results["extended"].due == "2026-01-12T12:00:00+00:00"
    assert results["flagged"].lms_late and not results["late36h"].lms_late
    _agrees_withrun_nbgrader(course, results, tmp_path)


def test_penalty_zero_zeroes_late_work(graded: Course, tmp_path: Path) -> None:
    course = _configure(graded, 'c.LateSubmissionPlugin.penalty_method = "zero"')
    results = _rerun(course)
    penalties = {s: r.late_penalty for s, r in results.items()}
    assert penalties == {"ontime": 0, "late36h": 10, "late1h": results["late1h"].score,
                         "extended": 0, "flagged": 10}
    _agrees_withrun_nbgrader(course, results, tmp_path)
    with Gradebook(course.db_url) as gradebook:  # nbgrader's own view of the late rows
        extended = gradebook.find_submission("backprop", "extended")
        assert extended.extension == timedelta(days=2)
        assert extended.total_seconds_late == 0
        assert gradebook.find_submission("backprop", "late36h").total_seconds_late == 36 * 3600
        assert gradebook.find_submission("backprop", "flagged").total_seconds_late == 1


def test_custom_per_day_plugin_from_the_course(graded: Course, tmp_path: Path) -> None:
    course = _configure(graded, 'c.AssignLatePenalties.plugin_class = '
                                '"late_plugins.OnePointPerStartedDay"')
    results = _rerun(course)
    assert {s: r.late_penalty for s, r in results.items()} == {
        "ontime": 0, "late36h": 2, "late1h": 1, "extended": 0, "flagged": 1}
    _agrees_withrun_nbgrader(course, results, tmp_path)


def test_extension_changes_the_penalty_on_the_next_run(graded: Course, tmp_path: Path) -> None:
    course = _configure(graded, 'c.AssignLatePenalties.plugin_class = '
                                '"late_plugins.OnePointPerStartedDay"')
    try:
        done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "extension", "add",
                               "backprop", "late36h", "--until", "2026-01-12 06:00"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        results = _rerun(course)
        assert results["late36h"].late_penalty == 0
        assert results["late36h"].due == "2026-01-12T06:00:00+00:00"
        _agrees_withrun_nbgrader(course, results, tmp_path)
        feedback = (course.feedback_dir("late36h", "backprop") / "backprop.md")
        stored = {r.student_id: r for r in load_results(course.root, "backprop")}
        assert stored["late36h"].late_penalty == 0  # the kept result was rewritten
        assert feedback.is_file()
    finally:
        assert late.remove_extension(course, "backprop", "late36h")
    results = _rerun(course)
    assert results["late36h"].late_penalty == 2  # and back, once the extension is gone
    _agrees_withrun_nbgrader(course, results, tmp_path)


def test_lms_flag_rule_ignore(graded: Course, tmp_path: Path) -> None:
    course = _configure(graded, 'c.LateSubmissionPlugin.penalty_method = "zero"',
                        'c.LatePolicy.lms_flag_rule = "ignore"')
    results = _rerun(course)
    assert results["flagged"].lms_late
    assert results["flagged"].seconds_late == 0 and results["flagged"].late_penalty == 0
    assert results["late36h"].late_penalty == 10  # a real time still counts
    _agrees_withrun_nbgrader(course, results, tmp_path)


def test_penalty_uses_a_tas_manual_score(graded: Course, tmp_path: Path) -> None:
    """nbgrader gives its plugin the notebook's score with manual grades: so do we."""
    course = _configure(graded, 'c.LateSubmissionPlugin.penalty_method = "zero"')
    with Gradebook(course.db_url) as gradebook:
        grade = gradebook.find_grade("check_train", "backprop", "backprop", "late1h")
        grade.manual_score = 4.0
        gradebook.db.commit()
    try:
        results = _rerun(course)
        exported = nbgrader_export(course, tmp_path)["late1h"]
        assert float(exported["late_submission_penalty"]) == results["late1h"].late_penalty
        assert results["late1h"].late_penalty == float(exported["raw_score"]) > \
            results["late1h"].score
        assert float(exported["score"]) == 0
    finally:
        with Gradebook(course.db_url) as gradebook:
            grade = gradebook.find_grade("check_train", "backprop", "backprop", "late1h")
            grade.manual_score = None
            gradebook.db.commit()
        _rerun(_configure(graded))


def test_regrade_recomputes_the_penalty(graded: Course, tmp_path: Path) -> None:
    course = _configure(graded, 'c.AssignLatePenalties.plugin_class = '
                                '"late_plugins.OnePointPerStartedDay"')
    results = {r.student_id: r for r in commands.grade(course, "backprop", regrade=True)}
    assert results["late36h"].late_penalty == 2 and results["ontime"].late_penalty == 0
    _agrees_withrun_nbgrader(course, results, tmp_path)


def test_a_broken_plugin_setting_is_named(graded: Course) -> None:
    course = _configure(graded, 'c.AssignLatePenalties.plugin_class = "late_plugins.Nothing"')
    rules = late.LateRules(course, "backprop", None, {})
    with pytest.raises(late.LateError, match="late_plugins.Nothing"):
        rules.plugin()
    _configure(graded)


def test_extension_csv_bad_row_writes_nothing(graded: Course, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("student_id,days,hours,until\nontime,1,,\nlate1h,,5,\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("student_id,days,until\nontime,3,\nlate1h,,someday\n")
    done = subprocess.run([*AUTOGRADER, "--course", str(graded.root), "extension", "import",
                           "backprop", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "bad.csv, line 3" in done.stderr and "someday" in done.stderr
    assert {e.student_id for e in late.list_extensions(graded, "backprop")} == {"extended"}
    try:
        late.save_extensions(graded, "backprop", late.read_extensions_csv(good))
        found = {e.student_id: e.seconds for e in late.list_extensions(graded, "backprop")}
        assert found == {"extended": 2 * 86400, "ontime": 86400, "late1h": 5 * 3600}
    finally:
        for student in ("ontime", "late1h"):
            late.remove_extension(graded, "backprop", student)
    with pytest.raises(late.LateError, match="not after the due date"):
        late.save_extensions(graded, "backprop",
                             [late.make_extension("ontime", until="2026-01-01")])


def test_an_extension_for_an_unknown_student_is_refused_unless_forced(graded: Course,
                                                                      tmp_path: Path) -> None:
    """A typo ("1003" for "10003") would extend nobody, silently: refused, and an import with
    one such row writes nothing; --force gives it all the same."""
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*AUTOGRADER, "--course", str(graded.root), "extension", *args],
                              capture_output=True, text=True)

    before = late.list_extensions(graded, "backprop")
    done = cli("add", "backprop", "1003", "--days", "2")
    assert done.returncode == 2
    assert ("unknown student '1003' (not in the roster nor in submitted/): check the id, or "
            "import the roster first") in done.stderr
    rows = tmp_path / "extensions.csv"
    rows.write_text("student_id,days\nontime,1\nlate1,2\n")  # a graded one, a typo
    done = cli("import", "backprop", str(rows))
    assert done.returncode == 2 and "unknown student 'late1' (not in" in done.stderr
    assert "ontime" not in done.stderr
    assert late.list_extensions(graded, "backprop") == before  # nothing written
    try:
        assert cli("add", "backprop", "1003", "--days", "2", "--force").returncode == 0
        assert cli("add", "backprop", "late1h", "--hours", "3").returncode == 0  # submitted
        assert {e.student_id for e in late.list_extensions(graded, "backprop")} == \
            {"extended", "1003", "late1h"}
    finally:
        for student in ("1003", "late1h"):
            late.remove_extension(graded, "backprop", student)
