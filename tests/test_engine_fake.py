"""The engine around execution -- assembling, drawing inputs, judging, messages, feedback --
with a FakeExecutor in place of the sandboxed process: real hidden tests judge scripted
executions, in milliseconds. The probe values of a "student" are computed here, in this
process, by the assignment's real probes.py calling trusted code (the solution, or a known
mistake); no student code runs in these tests."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat  # noqa: I001  (after torch, as the grader imports them)
import pytest
import torch
from torch import nn, optim

from autograder.assignment import Assignment
from autograder.author import with_answers
from autograder.engine import grade_submission
from autograder.execute.executor import Executor
from autograder.execute.fake import FakeExecutor
from autograder.execute.runner import ProbeCall
from autograder.feedback import render_feedback
from autograder.grader import Grader
from autograder.results import GRADED, TIMEOUT
from autograder.submissions import Submission


@pytest.fixture(scope="module")
def assignment(course) -> Assignment:
    return Assignment.load(course, "backprop")


@pytest.fixture(scope="module")
def probes_module(course) -> Any:
    path = course.hidden_dir("backprop") / "probes.py"
    spec = importlib.util.spec_from_file_location("fake_test_probes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answering(probes_module: Any, answers: dict[str, str]) -> Callable[[ProbeCall], Any]:
    """Each probe's value as the real probe computes it, on functions defined by `answers`
    (trusted sources) in a namespace of this process."""
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "optim": optim}
    for source in answers.values():
        exec(source, namespace)  # trusted: the solution or a mistake written here
    return lambda call: getattr(probes_module, call.function)(namespace, call.inputs)


def submission_of(release_notebook, answers: dict[str, str], student: str = "s1") -> Submission:
    content = nbformat.writes(with_answers(release_notebook, answers)).encode()
    return Submission(student, Path("backprop.ipynb"), "2026-01-01 10:00:00 UTC",
                      content=content)


def by_name(result) -> dict:
    return {test.name: test for test in result.tests}


def test_the_fake_is_an_executor() -> None:
    assert isinstance(FakeExecutor(), Executor)


def test_right_values_pass_every_test(assignment, probes_module, release_notebook,
                                      solution) -> None:
    fake = FakeExecutor(answering(probes_module, solution))
    started = time.monotonic()
    result = grade_submission(assignment, submission_of(release_notebook, solution), 60, fake)
    assert time.monotonic() - started < 2  # no process, no sandbox
    assert result.status == GRADED, result.reason
    assert result.score == result.max_score == 10
    assert all(test.passed for test in result.tests)
    assert result.sandbox_off == []
    [job] = fake.jobs  # the assembled notebook and this submission's drawn inputs
    assert {cell.name for cell in job.cells} >= set(solution)
    assert {call.name for call in job.probes} >= {"cr_lesson", "cr_near", "step_stale"}
    assert "expected" in result.graded_on  # the instructor's record, never the student's


def test_a_wrong_value_fails_its_test_with_the_students_value(
        assignment, probes_module, release_notebook, solution) -> None:
    cubed = {**solution, "chain_rule": solution["chain_rule"].replace("x ** 2", "x ** 3")}
    assert cubed != solution
    fake = FakeExecutor(answering(probes_module, cubed))
    result = grade_submission(assignment, submission_of(release_notebook, cubed), 60, fake)
    tests = by_name(result)
    assert result.status == GRADED
    assert not tests["graph_values"].passed and tests["graph_values"].points == 0
    # The student's value and the rule to check, then the test's teaching message.
    assert "At x = 2 your y is 8; check y = x ** 2" in tests["graph_values"].message
    assert "Build the graph step by step" in tests["graph_values"].message
    assert not tests["gradient_at_two"].passed
    # What does not use chain_rule still scores: forward_backward's and train_step's tests.
    untouched = [test for test in result.tests if test.cell != "check_chain_rule"]
    assert untouched and all(test.passed for test in untouched)
    assert result.score == 10 - sum(t.max_points for t in result.tests
                                    if t.cell == "check_chain_rule")
    # Feedback shows the message, never the expected value nor the hidden tests' code.
    pages = render_feedback(result, None)
    assert "your y is 8" in pages[".html"]
    assert result.graded_on["seed"] and result.graded_on["expected"]
    for page in pages.values():
        assert "@hidden_test" not in page and "chain_rule_gradient" not in page
        assert result.graded_on["seed"] not in page  # the instructor's record stays theirs


def test_a_timeout_keeps_what_ran_and_says_why(assignment, probes_module, release_notebook,
                                               solution) -> None:
    right = answering(probes_module, solution)
    why = "the notebook's time limit (60 s) ran out"

    def only_forward_backward(call: ProbeCall) -> Any:
        if call.function != "forward_backward":
            raise AssertionError("not scripted")  # never reached: errors come first
        return right(call)

    # forward_backward's probes came back; the time ran out before the others.
    fake = FakeExecutor(only_forward_backward, status=TIMEOUT, reason=why,
                        errors={call: f"not run: {why}" for call in
                                ("cr_lesson", "cr_near", "cr_unseen_0", "cr_unseen_1",
                                 "cr_unseen_2", "step_stale", "train_lesson",
                                 "train_unseen_line")})
    result = grade_submission(assignment, submission_of(release_notebook, solution), 60, fake)
    tests = by_name(result)
    assert result.status == TIMEOUT
    assert why in result.reason
    fb = [test for test in result.tests if test.cell == "check_forward_backward"]
    assert fb and all(test.passed for test in fb)  # partial credit for what ran
    assert result.score == sum(test.max_points for test in fb) < 10
    assert not tests["graph_values"].passed
    assert why in tests["graph_values"].message


def test_a_syntax_error_is_told_at_its_cell_and_the_tests_point_there(
        assignment, probes_module, release_notebook, solution) -> None:
    broken = {**solution, "chain_rule": solution["chain_rule"].replace("):", ")", 1)}
    syntax = "SyntaxError at line 1 of your cell: expected ':'"
    undefined = "Your code raised NameError: name 'chain_rule' is not defined"
    right = answering(probes_module, solution)
    fake = FakeExecutor(lambda call: right(call) if call.function != "chain_rule" else None,
                        cell_errors={"chain_rule": syntax},
                        errors={name: undefined for name in ("cr_lesson", "cr_near",
                                                             "cr_unseen_0", "cr_unseen_1",
                                                             "cr_unseen_2")})
    result = grade_submission(assignment, submission_of(release_notebook, broken), 60, fake)
    tests = by_name(result)
    assert result.status == GRADED
    assert [error["error"] for error in result.cell_errors] == [syntax]
    for name in ("graph_values", "gradient_at_two", "gradient_at_unseen_inputs"):
        assert not tests[name].passed
        assert ("chain_rule is not defined because its cell has a syntax error"
                in tests[name].message), tests[name].message
        assert "NameError" not in tests[name].message  # the cause, not its echo
    assert all(test.passed for test in result.tests if test.cell != "check_chain_rule")


def test_a_grader_on_injected_executors_grades_without_a_process(
        course, probes_module, release_notebook, solution) -> None:
    fakes: list[FakeExecutor] = []

    def make() -> FakeExecutor:
        fakes.append(FakeExecutor(answering(probes_module, solution)))
        return fakes[-1]

    submissions = [submission_of(release_notebook, solution, f"s{n}") for n in range(5)]
    with Grader(course, workers=2, executors=make) as grader:
        assert grader.size == 2 and grader.cluster is None
        assignment = grader.assignment("backprop")
        many = grader.grade_many(assignment, submissions)
        one = grader.grade_one(assignment, submissions[0])
    assert [r.student_id for r in many] == [f"s{n}" for n in range(5)]
    assert all(r.score == 10 for r in many) and one.score == 10
    assert len(fakes) == 2 and sum(len(fake.jobs) for fake in fakes) == 6
