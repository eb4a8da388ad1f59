"""What a student may see of a result, and when.

A stored Result holds the whole SubmissionResult, instructor fields included. A student's view
is built field by field from an allow-list (never by removing fields from the whole: a field
added to SubmissionResult later stays the instructor's until someone decides otherwise), every
student-derived text cleaned and capped. Never shown: `graded_on` (the inputs drawn and the
expected values), the fingerprint, the sandbox's layers, hidden test code.

Exam mode (policy.results_shown = "exam", or a test in policy.tests_shown set to "exam"):
until `hidden_until`, the whole result, or that test, is only {"status": "received"}. With a
test hidden, the totals and the late penalty (which can equal the score) and the printed output
(it holds what the hidden tests' calls printed) are withheld too, or they would give it away.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from autograder.course import Course
from autograder.late import due_and_extensions
from autograder.results import OUTPUT_CAP, SubmissionResult, cleaned
from autograder.service.models import Result
from autograder.service.policy import AssignmentPolicy, student_due

RECEIVED = {"status": "received"}
# Exam mode on an assignment with no due date: hidden until one is set.
NOT_YET = datetime.max.replace(tzinfo=UTC)


def hidden_until(course: Course, policy: AssignmentPolicy, assignment: str,
                 student_id: str) -> datetime | None:
    """When exam-mode results of `assignment` are shown (None: no exam mode, shown now): the
    due date plus the latest extension any student has (results shown to one student would
    reach those still working) plus `late_window_hours`; NOT_YET without a due date. At least
    `student_id`'s own due date."""
    if not policy.any_exam:
        return None
    due, extensions = due_and_extensions(course, assignment)
    if due is None:
        return NOT_YET
    deltas = [found.delta(due) for found in extensions.values()]
    latest = max((delta for delta in deltas if delta), default=timedelta(0))
    until = due.replace(tzinfo=UTC) + latest
    own = student_due(course, assignment, student_id)
    if own is not None:
        until = max(until, own)
    return until + timedelta(hours=policy.late_window_hours)


def exam_hides_results(course: Course, assignment: str,
                       now: datetime | None = None) -> str | None:
    """While exam mode hides some of `assignment`'s results from every student (the due date
    plus the latest extension plus the late window not past yet): until when (ISO 8601, or
    "a due date is set" without one); None when nothing is hidden."""
    from autograder.service.policy import policy_for

    until = hidden_until(course, policy_for(course, assignment), assignment, "")
    if until is None or (now or datetime.now(UTC)) >= until:
        return None
    return "a due date is set" if until == NOT_YET else until.isoformat()


def _test_view(test: Any) -> dict[str, Any]:
    return {"name": test.name, "title": test.title, "part": test.part, "points": test.points,
            "max_points": test.max_points, "passed": test.passed, "message": test.message}


def student_result(result_row: Result, policy: AssignmentPolicy, now: datetime,
                   hidden_until: datetime | None) -> dict[str, Any]:
    """The student's view of one stored result (see the module's docstring)."""
    hiding = hidden_until is not None and now < hidden_until
    if hiding and policy.results_shown == "exam":
        return dict(RECEIVED)
    result = cleaned(SubmissionResult.from_json(result_row.result_json))
    hidden = {id(test) for test in result.tests
              if hiding and policy.shown(test.name, test.cell) == "exam"}
    view: dict[str, Any] = {
        "status": str(result.status),
        "reason": result.reason,
        "max_score": result.max_score,
        "tests": [dict(RECEIVED) if id(test) in hidden else _test_view(test)
                  for test in result.tests],
        "cell_errors": result.cell_errors,
        "timestamp": result.timestamp,
        "due": result.due,
        "seconds_late": result.seconds_late,
        "lms_late": result.lms_late,
    }
    if hidden:
        view.update(score=None, late_penalty=None, score_after_penalty=None, output="")
    else:
        view.update(score=result.score, late_penalty=result.late_penalty,
                    score_after_penalty=result.score_after_penalty,
                    output=result.output[:OUTPUT_CAP])
    return view
