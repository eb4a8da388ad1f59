"""Grade one notebook: assemble (the release's locked cells around the student's answers)
-> execute (the student's process, in the sandbox) -> verify (here, on the trusted side).

`grade_submission` never raises for anything the student did: a bad notebook, an exception, a
hang or a crash all become a SubmissionResult with a status and a reason. Running many at once
is `autograder.grader.Grader`'s job (a local pool or a Dask cluster), which both call this.
Where the job runs is the `Executor` given: a warm sandboxed slot, or in tests a fake.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from autograder.assemble import InvalidNotebook, assemble, parse_notebook
from autograder.assignment import Assignment
from autograder.errors import SubmissionError
from autograder.execute.executor import Executor
from autograder.execute.runner import Budgets, Execution, Job, ProbeCall
from autograder.messages import explain_cell_errors, explain_undefined
from autograder.results import (
    ERROR,
    GRADED,
    INVALID,
    SubmissionResult,
    TestResult,
    cleaned,
)
from autograder.submissions import Submission
from autograder.verify.hidden import HiddenTests
from autograder.verify.judge import judge

log = logging.getLogger(__name__)

OUTPUT_SHOWN = 5_000  # characters of the notebook's output kept in the result


def fingerprint(assignment: Assignment, submission: Submission) -> str:
    """Same notebook, same grader: same result. Anything else is graded again."""
    content = None
    if submission.notebook is not None:
        try:
            content = submission.read()
        except SubmissionError:
            content = None
    return _fingerprint(assignment, content)


def _fingerprint(assignment: Assignment, content: bytes | None) -> str:
    digest = hashlib.sha256(assignment.fingerprint.encode())
    if content is not None:
        digest.update(content)
    return digest.hexdigest()


def grade_submission(assignment: Assignment, submission: Submission, timeout: float | Budgets,
                     executor: Executor) -> SubmissionResult:
    """`timeout`: the notebook's limit in seconds, or every budget (see runner.Budgets);
    `executor` runs the assembled job (a warm slot)."""
    budgets = timeout if isinstance(timeout, Budgets) else Budgets(notebook=timeout)
    try:
        return cleaned(_with_parts(_grade(assignment, submission, budgets, executor),
                                   assignment))
    except Exception as error:  # one submission's trouble must not stop the batch
        log.exception("grading %s failed", submission.student_id)
        return _with_parts(failed_result(assignment, submission, error), assignment)


def _with_parts(result: SubmissionResult, assignment: Assignment) -> SubmissionResult:
    """Each test named by its part's title, as the student knows it (feedback headings)."""
    titles = assignment.part_titles
    for test in result.tests:
        test.part = titles.get(test.cell, "")
    return result


def _grade(assignment: Assignment, submission: Submission, budgets: Budgets,
           executor: Executor) -> SubmissionResult:
    result = SubmissionResult(student_id=submission.student_id, assignment=assignment.name,
                              notebook=assignment.notebook_name, status=GRADED,
                              timestamp=submission.timestamp, lms_late=submission.lms_late)
    if submission.notebook is None:
        result.fingerprint = _fingerprint(assignment, None)
        return _zero(result, assignment, INVALID,
                     submission.reason or "no notebook was submitted")
    try:
        content = submission.read()  # once: hashed, seeded, parsed
    except SubmissionError as error:
        result.fingerprint = _fingerprint(assignment, None)
        return _zero(result, assignment, INVALID, str(error))
    result.fingerprint = _fingerprint(assignment, content)
    try:
        student_notebook = parse_notebook(content, submission.notebook.name)
    except InvalidNotebook as error:
        return _zero(result, assignment, INVALID, str(error))
    plan = assemble(assignment.release_notebook, student_notebook)
    hidden = assignment.hidden
    seed = assignment.seed_for(content)
    declared = hidden.probes_for(seed)
    job = Job(cells=plan.cells,
              probes=[ProbeCall(name, probe.function, probe.inputs)
                      for name, probe in declared.items()],
              probes_source=hidden.probes_source, budgets=budgets)
    execution = executor.run(job)
    values, failures = _probe_outcomes(execution, declared)
    failures = explain_undefined(failures, plan.cells, execution.cells)
    result.tests = judge(hidden, values, failures, declared)
    result.status = execution.status
    result.reason = "; ".join(filter(None, [execution.reason, *plan.notes]))
    result.cell_errors = explain_cell_errors(execution.cells, plan.cells)
    printed = [cell["output"] for cell in execution.cells]
    printed += [record.output for record in execution.probes.values()]
    result.output = "".join(printed)[:OUTPUT_SHOWN]
    result.seconds = round(execution.seconds, 3)
    result.sandbox_off = executor.layers_off
    result.graded_on = _graded_on(hidden, seed, declared)
    return result


def _graded_on(hidden: HiddenTests, seed: int, declared: dict) -> dict:
    """For the instructor only (appeals): the inputs this notebook was graded on, and what a
    right answer gives on them."""
    inputs = {name: probe.inputs for name, probe in declared.items()}
    record = {"seed": f"{seed:016x}", "inputs": _as_json(inputs)}
    if hidden.expected is not None:
        try:
            record["expected"] = _as_json(hidden.expected(inputs))
        except Exception:  # a bug in the instructor's function must not cost the grade
            log.exception("expected_values of %s failed", hidden.assignment)
    return record


def _as_json(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors
        return value.tolist()
    if isinstance(value, dict):
        return {str(key): _as_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json(item) for item in value]
    return value


def failed_result(assignment: Assignment, submission: Submission,
                  error: BaseException) -> SubmissionResult:
    """The result of a submission the grader itself failed on: 0, and a reason."""
    log.error("grading %s failed: %r", submission.student_id, error)
    result = SubmissionResult(student_id=submission.student_id, assignment=assignment.name,
                              notebook=assignment.notebook_name, status=ERROR,
                              timestamp=submission.timestamp, lms_late=submission.lms_late)
    return _zero(result, assignment, ERROR,
                 f"the grader failed on this submission ({type(error).__name__}); "
                 "it has been logged for the instructor")


def _probe_outcomes(execution: Execution, probes: dict) -> tuple[dict, dict[str, str]]:
    values, failures = {}, {}
    for name in probes:
        record = execution.probes.get(name)
        if record is None:
            failures[name] = execution.reason or "your code did not return a result"
        elif record.ok:
            values[name] = record.value
        else:
            failures[name] = record.error
    return values, failures


def _zero(result: SubmissionResult, assignment: Assignment, status: str,
          reason: str) -> SubmissionResult:
    result.status = status
    result.reason = reason
    result.tests = [TestResult(name=test.name, cell=test.cell, points=0.0,
                               max_points=test.points, passed=False, message=reason,
                               title=test.title)
                    for test in assignment.hidden.tests]
    return result
