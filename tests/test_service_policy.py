"""Course policy per assignment, read from nbgrader_config.py: defaults, per-assignment
overrides, and an error naming each unusable setting (a typo must not silently show an exam's
results)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autograder.course import Course
from autograder.errors import UserError
from autograder.service.policy import PolicyError, hidden_test_names, policy_for
from tests.conftest import REPO


def course_with(root: Path, config: str) -> Course:
    """A course directory with the real backprop hidden tests and this configuration."""
    (root / "nbgrader_config.py").write_text("c = get_config()\n" + config)
    (root / "source" / "backprop").mkdir(parents=True)
    (root / "source" / "squares").mkdir(parents=True)
    shutil.copytree(REPO / "hidden_tests" / "backprop", root / "hidden_tests" / "backprop")
    return Course.load(root)


def test_defaults(tmp_path: Path) -> None:
    rules = policy_for(course_with(tmp_path, ""), "backprop")
    assert (rules.budget_capacity, rules.budget_refill_minutes, rules.last_hour_grace) == \
        (3, 60.0, True)
    assert (rules.counts, rules.results_shown, rules.tests_shown) == ("last", "always", {})
    assert rules.late_window_hours == 0
    assert not rules.any_exam


def test_per_assignment_over_the_defaults(tmp_path: Path) -> None:
    course = course_with(tmp_path, """
c.AssignmentPolicy.budget_capacity = 4
c.AssignmentPolicy.counts = "best"
c.AssignmentPolicy.per_assignment = {
    "backprop": {"budget_capacity": 5, "results_shown": "exam", "late_window_hours": 24,
                 "tests_shown": {"fits_an_unseen_line": "always", "check_chain_rule": "exam"}},
}
""")
    backprop, squares = policy_for(course, "backprop"), policy_for(course, "squares")
    assert (backprop.budget_capacity, backprop.counts, backprop.results_shown) == \
        (5, "best", "exam")
    assert backprop.late_window_hours == 24
    assert backprop.shown("fits_an_unseen_line", "check_train") == "always"
    assert backprop.shown("trained_weight_near_two", "check_train") == "exam"
    assert backprop.shown("gradient_at_two", "check_chain_rule") == "exam"  # by its grade cell
    assert (squares.budget_capacity, squares.counts, squares.results_shown) == \
        (4, "best", "always")
    assert squares.any_exam is False and backprop.any_exam is True


def test_one_test_in_exam_mode(tmp_path: Path) -> None:
    course = course_with(tmp_path, 'c.AssignmentPolicy.tests_shown = '
                                   '{"fits_an_unseen_line": "exam"}\n')
    rules = policy_for(course, "backprop")
    assert rules.any_exam
    assert rules.shown("fits_an_unseen_line", "check_train") == "exam"
    assert rules.shown("returns_the_loss", "check_forward_backward") == "always"


@pytest.mark.parametrize(("config", "named"), [
    ("c.AssignmentPolicy.budget_capcity = 5", "c.AssignmentPolicy.budget_capcity is not a "
                                              "setting"),
    ("c.AssignmentPolicy.budget_capacity = -1", "budget_capacity = -1"),
    ("c.AssignmentPolicy.budget_refill_minutes = 0", "budget_refill_minutes = 0"),
    ("c.AssignmentPolicy.budget_refill_minutes = float('nan')", "budget_refill_minutes = nan"),
    ("c.AssignmentPolicy.late_window_hours = -2", "late_window_hours = -2"),
    ("c.AssignmentPolicy.counts = 'worst'", "counts = 'worst'"),
    ("c.AssignmentPolicy.results_shown = 'never'", "results_shown = 'never'"),
    ("c.AssignmentPolicy.tests_shown = {'fits_an_unseen_lien': 'exam'}",
     "tests_shown names 'fits_an_unseen_lien', which is no hidden test"),
    ("c.AssignmentPolicy.tests_shown = {'fits_an_unseen_line': 'later'}", "'later'"),
    ("c.AssignmentPolicy.per_assignment = {'backprob': {'budget_capacity': 5}}",
     "per_assignment['backprob'] names no assignment of the course"),
    ("c.AssignmentPolicy.per_assignment = {'backprop': {'budget_capasity': 5}}",
     "per_assignment['backprop'].budget_capasity is not a setting"),
    ("c.AssignmentPolicy.per_assignment = {'backprop': {'per_assignment': {}}}",
     "per_assignment['backprop'].per_assignment is not a setting"),
    ("c.AssignmentPolicy.per_assignment = {'backprop': 5}", "must be {setting: value}"),
    # squares has no hidden tests named so: a test name is checked against its own assignment
    ("c.AssignmentPolicy.per_assignment = {'squares': {'tests_shown': "
     "{'fits_an_unseen_line': 'exam'}}}", "which is no hidden test"),
])
def test_an_unusable_setting_is_named(tmp_path: Path, config: str, named: str) -> None:
    course = course_with(tmp_path, config + "\n")
    with pytest.raises(PolicyError) as error:
        policy_for(course, "squares")  # any assignment: the whole policy is checked
    assert named in str(error.value)
    assert str(tmp_path / "nbgrader_config.py") in str(error.value)
    assert isinstance(error.value, UserError)


def test_test_names_are_read_without_running_the_tests(tmp_path: Path) -> None:
    course = course_with(tmp_path, "")
    (course.hidden_dir("backprop") / "tests.py").write_text(
        (REPO / "hidden_tests" / "backprop" / "tests.py").read_text()
        + "\nraise SystemExit('tests.py was run')\n")
    names = hidden_test_names(course, "backprop")
    assert {"fits_an_unseen_line", "returns_the_loss", "check_train"} <= names
    assert "expected_values" not in names and "_check_fit" not in names
    assert hidden_test_names(course, "squares") == set()


def test_the_policy_is_read_from_many_threads_at_once(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The service reads the policy on every request, from its worker threads: per-test exam
    mode names tests read from tests.py, and parsing it from two threads at once raised
    SystemError on CPython 3.11 (a 500 for every few requests, found by an attack). It is
    parsed once per version of the file, under a lock."""
    import ast
    import threading
    from concurrent.futures import ThreadPoolExecutor

    parse, parsing, overlaps, parsed = ast.parse, threading.Lock(), [], []

    def watched_parse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not parsing.acquire(blocking=False):
            overlaps.append(1)
            return parse(*args, **kwargs)
        try:
            parsed.append(1)
            return parse(*args, **kwargs)
        finally:
            parsing.release()

    monkeypatch.setattr(ast, "parse", watched_parse)

    course = course_with(tmp_path, 'c.AssignmentPolicy.per_assignment = {"backprop": '
                                   '{"tests_shown": {"fits_an_unseen_line": "exam"}}}\n')
    with ThreadPoolExecutor(8) as threads:
        policies = list(threads.map(lambda _: policy_for(course, "backprop"), range(400)))
    assert all(policy.any_exam for policy in policies)
    assert overlaps == [] and len(parsed) == 1
