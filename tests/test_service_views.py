"""What a student sees of a result: points per test and messages from real grading, never the
expected values, inputs or hidden test code; exam mode shows only "received" until the due
date, the latest extension and the late window have passed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from traitlets.config import Config

from autograder.course import Course
from autograder.late import make_extension, save_extensions
from autograder.results import GRADED, SubmissionResult, TestResult
from autograder.service.models import Result
from autograder.service.policy import AssignmentPolicy
from autograder.service.views import NOT_YET, hidden_until, student_result
from tests.conftest import REPO, grade_answers, make_course, train_step_calling

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TEST_KEYS = {"name", "title", "part", "points", "max_points", "passed", "message"}


def policy(**settings) -> AssignmentPolicy:
    return AssignmentPolicy(config=Config({"AssignmentPolicy": settings}))


def row(result: SubmissionResult) -> Result:
    """The stored Result as queue.complete writes it: the whole SubmissionResult as JSON."""
    return Result(job_id=1, submission_id="0" * 32, student_id=result.student_id,
                  assignment=result.assignment, status=str(result.status), score=result.score,
                  max_score=result.max_score, seconds=result.seconds,
                  result_json=result.to_json(), published=True)


@pytest.fixture(scope="module")
def graded(course: Course, release_notebook, solution, tmp_path_factory) -> dict:
    """Real results: a full solution, the blank release, and a train_step that steps before
    backward (some tests pass, some fail with messages)."""
    wrong = dict(solution, train_step=train_step_calling("optimizer.zero_grad()",
                                                         "optimizer.step()", "loss.backward()"))
    return grade_answers(course, release_notebook, tmp_path_factory.mktemp("views"),
                         {"good": solution, "blank": {}, "wrong": wrong})


def test_the_students_view_of_real_results(graded: dict) -> None:
    good = student_result(row(graded["good"]), policy(), NOW, None)
    assert good["status"] == "graded"
    assert good["score"] == good["max_score"] == graded["good"].max_score > 0
    assert good["score_after_penalty"] == good["score"]
    assert all(set(test) == TEST_KEYS and test["passed"] for test in good["tests"])
    assert {test["part"] for test in good["tests"]} >= {"Part 1: Watching gradients"}
    wrong = student_result(row(graded["wrong"]), policy(), NOW, None)
    failed = [test for test in wrong["tests"] if not test["passed"]]
    assert failed and all(test["message"] for test in failed)
    assert 0 < wrong["score"] < wrong["max_score"]
    assert not {"graded_on", "fingerprint", "sandbox_off", "seconds", "expected"} & set(wrong)


def _numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [number for item in value.values() for number in _numbers(item)]
    if isinstance(value, list):
        return [number for item in value for number in _numbers(item)]
    return [value] if isinstance(value, float) else []


def test_expected_values_and_hidden_code_never_appear(graded: dict, course: Course) -> None:
    released = (course.release_dir("backprop") / "backprop.ipynb").read_text()
    hidden_code = [line.strip() for name in ("tests.py", "probes.py")
                   for line in (REPO / "hidden_tests" / "backprop" / name).read_text()
                   .splitlines() if len(line.strip()) > 25 and not line.strip().startswith("#")
                   and json.dumps(line.strip())[1:-1] not in released]  # not the student's too
    for student, result in graded.items():
        graded_on = result.graded_on
        assert graded_on["expected"] and graded_on["inputs"], student
        # Distinctive values: a float with many digits cannot appear by chance.
        secrets = {repr(number) for number in _numbers(graded_on)
                   if len(repr(number)) >= 8}
        assert secrets, student
        stored = row(result).result_json
        assert any(secret in stored for secret in secrets)  # so this test can fail
        shown = json.dumps(student_result(row(result), policy(), NOW, None))
        leaked = sorted(secret for secret in secrets if secret in shown)
        assert leaked == [], f"{student}: expected values or inputs shown: {leaked[:5]}"
        assert graded_on["seed"] not in shown
        assert "graded_on" not in shown and "expected" not in shown
        assert result.fingerprint not in shown
        code = [line for line in hidden_code if line in shown]
        assert code == [], f"{student}: hidden test code shown: {code[:3]}"


def test_whole_result_in_exam_mode(graded: dict) -> None:
    exam = policy(results_shown="exam")
    until = NOW + timedelta(hours=2)
    for result in graded.values():
        assert student_result(row(result), exam, NOW, until) == {"status": "received"}
        assert student_result(row(result), exam, until - timedelta(seconds=1), until) == \
            {"status": "received"}
        after = student_result(row(result), exam, until, until)
        assert after == student_result(row(result), policy(), NOW, None)
        assert after["tests"] and after["score"] is not None


def test_one_test_in_exam_mode(graded: dict) -> None:
    exam = policy(tests_shown={"fits_an_unseen_line": "exam", "check_chain_rule": "exam"})
    until = NOW + timedelta(hours=1)
    result = graded["wrong"]
    before = student_result(row(result), exam, NOW, until)
    by_name = {test.name: shown for test, shown in zip(result.tests, before["tests"],
                                                       strict=True)}
    hidden = {name for name, shown in by_name.items() if shown == {"status": "received"}}
    assert hidden == {"fits_an_unseen_line"} | {test.name for test in result.tests
                                                if test.cell == "check_chain_rule"}
    assert all(set(shown) == TEST_KEYS for name, shown in by_name.items() if name not in hidden)
    # The totals and the penalty would give the hidden tests' points away.
    assert (before["score"], before["score_after_penalty"], before["late_penalty"]) == \
        (None, None, None)
    assert before["output"] == ""
    assert before["max_score"] == result.max_score
    after = student_result(row(result), exam, until, until)
    assert after == student_result(row(result), policy(), NOW, None)


def test_student_text_is_capped_and_clean() -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07\u202eevil" + "A" * 50_000
    result = SubmissionResult(
        student_id="10001", assignment="backprop", notebook="backprop", status=GRADED,
        reason=hostile, output=hostile * 3,
        tests=[TestResult(name="t", cell="c", points=0.0, max_points=1.0, passed=False,
                          message=hostile, title=hostile)],
        cell_errors=[{"cell": hostile, "error": hostile}] * 500,
        graded_on={"expected": {"x": 0.123456789}})
    view = student_result(row(result), policy(), NOW, None)
    dumped = json.dumps(view, ensure_ascii=False)
    assert not re.search("[\x1b\x07\u202e]", dumped)
    assert len(view["reason"]) <= 2000 and len(view["tests"][0]["message"]) <= 2000
    assert len(view["output"]) <= 5000
    assert len(view["cell_errors"]) == 100
    assert "0.123456789" not in dumped
    assert len(dumped) < 2_000_000


@pytest.fixture(scope="module")
def dated_course(tmp_path_factory) -> Course:
    return make_course(tmp_path_factory.mktemp("dated"))


def set_due(course: Course, due: str | None) -> None:
    engine = create_engine(course.db_url)
    with engine.begin() as db:
        db.execute(text("UPDATE assignment SET duedate = :due WHERE name = 'backprop'"),
                   {"due": due})
    engine.dispose()


def test_hidden_until(dated_course: Course) -> None:
    course = dated_course
    exam = policy(results_shown="exam", late_window_hours=6)
    assert hidden_until(course, policy(), "backprop", "10001") is None
    set_due(course, None)
    assert hidden_until(course, exam, "backprop", "10001") == NOT_YET
    set_due(course, "2026-11-20 17:00:00.000000")
    due = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
    assert hidden_until(course, exam, "backprop", "10001") == due + timedelta(hours=6)
    one_test = policy(tests_shown={"fits_an_unseen_line": "exam"})
    assert hidden_until(course, one_test, "backprop", "10001") == due
    save_extensions(course, "backprop", [make_extension("10002", days=2),
                                         make_extension("10003", hours=5)], force=True)
    # Another student's extension holds everyone's exam results back (they would reach him).
    expected = due + timedelta(days=2, hours=6)
    assert hidden_until(course, exam, "backprop", "10001") == expected
    assert hidden_until(course, exam, "backprop", "10002") == expected
    assert student_result(row(SubmissionResult("10001", "backprop", "backprop", GRADED)),
                          exam, expected - timedelta(minutes=1),
                          hidden_until(course, exam, "backprop", "10001")) == \
        {"status": "received"}


def test_student_due(dated_course: Course, tmp_path: Path) -> None:
    from autograder.service.policy import student_due

    set_due(dated_course, "2026-11-20 17:00:00.000000")
    save_extensions(dated_course, "backprop", [make_extension("10004", until="2026-11-21 "
                                                                            "17:00:00 UTC")],
                    force=True)
    due = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
    assert student_due(dated_course, "backprop", "10001") == due
    assert student_due(dated_course, "backprop", "10004") == due + timedelta(days=1)
    assert student_due(Course.load(REPO), "nope", "10001") is None


def test_due_dates_read_once_still_follow_every_change(dated_course: Course) -> None:
    """The service reads the due date and extensions once for each change of gradebook.db
    (every upload asks): changes a few microseconds apart, each the same size on disk, are
    each seen at once (a file's times can stay the same for both)."""
    from autograder.service.policy import student_due

    save_extensions(dated_course, "backprop", [], force=True)
    for day in range(1, 21):
        set_due(dated_course, f"2026-11-{day:02d} 17:00:00.000000")
        assert student_due(dated_course, "backprop", "10001") == datetime(
            2026, 11, day, 17, 0, tzinfo=UTC)
    save_extensions(dated_course, "backprop", [make_extension("10001", hours=3)], force=True)
    assert student_due(dated_course, "backprop", "10001") == datetime(
        2026, 11, 20, 20, 0, tzinfo=UTC)


def test_reading_the_due_date_keeps_the_locks_this_process_holds_on_gradebook_db(
        dated_course: Course) -> None:
    """The due-date cache looks at gradebook.db's header on every upload. Closing any
    descriptor of a file drops every POSIX lock the process holds on it: a write of this
    process's own (the course sync) would lose its lock, and another process could write
    under it. Another process must still find the database locked."""
    import sqlite3
    import subprocess
    import sys

    from autograder.late import due_and_extensions

    path = dated_course.root / "gradebook.db"
    due_and_extensions(dated_course, "backprop")
    holder = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(3):
            due_and_extensions(dated_course, "backprop")
        other = subprocess.run(
            [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], "
             "timeout=0.2); db.execute('UPDATE assignment SET duedate = NULL'); db.commit()",
             str(path)], capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and "locked" in other.stderr, other.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_gradebook_db_replaced_again_and_again_leaves_no_descriptor_open(
        dated_course: Course, tmp_path: Path) -> None:
    """gradebook.db put back from a copy (rsync, a restored backup) is a new file: the
    descriptor kept on the old one is closed (no lock on a replaced file guards anything),
    so a long-lived service does not run out of descriptors."""
    import os
    import shutil

    from autograder.late import due_and_extensions

    path = dated_course.root / "gradebook.db"
    due_and_extensions(dated_course, "backprop")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):
        shutil.copy(path, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", path)
        due_and_extensions(dated_course, "backprop")
    assert len(os.listdir("/proc/self/fd")) <= before + 1
