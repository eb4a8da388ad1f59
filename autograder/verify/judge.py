"""Run the hidden tests on what came back from the student's process; decide every verdict here."""

from __future__ import annotations

import logging
from typing import Any

from autograder.messages import SEE_ABOVE
from autograder.results import TestResult
from autograder.verify.hidden import HiddenTests, Probe, ProbeFailed, Probes

log = logging.getLogger(__name__)

NOT_DONE_HINT = ("the exercise is not done yet: replace `raise NotImplementedError()` "
                 "with your code")


def judge(hidden: HiddenTests, values: dict[str, Any], failures: dict[str, str],
          declared: dict[str, Probe]) -> list[TestResult]:
    """One TestResult per hidden test. `values`: probe name -> data; `failures`: name -> reason;
    `declared`: the probes as called for this submission (their inputs)."""
    probes = Probes(values, failures, declared)
    results = []
    for test in hidden.tests:
        passed, detail, hint = _run_one(test.check, probes)
        message = "" if passed else _compose(detail, test.message if hint else "")
        results.append(TestResult(name=test.name, cell=test.cell,
                                  points=test.points if passed else 0.0,
                                  max_points=test.points, passed=passed, message=message,
                                  title=test.title))
    return results


def _run_one(check, probes: Probes) -> tuple[bool, str, bool]:
    """(passed, detail, whether the test's own hint is worth adding to the detail)."""
    try:
        check(probes)
    except AssertionError as error:
        return False, str(error), True
    except ProbeFailed as error:
        reason = str(error)
        if "NotImplementedError" in reason:
            return False, f"{reason}: {NOT_DONE_HINT}", False
        if SEE_ABOVE in reason:  # an echo of an error told at its cell: no hint about the test
            return False, reason, False
        return False, reason, True
    except Exception:
        # A bug in the test or data it did not expect: the student sees no test internals.
        log.exception("hidden test %s failed unexpectedly", check.__name__)
        return False, "This check could not run on what your code returned", True
    return True, "", False


def _compose(detail: str, message: str) -> str:
    detail = detail.strip()
    if not detail:
        return message
    if not detail.endswith((".", "!", "?")):
        detail += "."
    return f"{detail} {message}".strip()
