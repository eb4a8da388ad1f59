"""Course policy per assignment, in configuration: `c.AssignmentPolicy.*` in nbgrader_config.py.

The defaults apply to every assignment; `c.AssignmentPolicy.per_assignment` overrides them for
one, e.g. ``{"backprop": {"budget_capacity": 5, "results_shown": "exam"}}``. Everything is
checked when read: a typo'd setting, an assignment the course does not have, or a test name
its hidden tests do not define would otherwise be ignored without a word (and an exam's
results shown), so each is a PolicyError naming it.
"""

from __future__ import annotations

import ast
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, TraitError, validate
from traitlets.config import Config, Configurable

from autograder.config_check import check_settings
from autograder.course import Course
from autograder.errors import UserError
from autograder.late import due_and_extensions, extended_due
from autograder.results import clean_text

SHOWN = ("always", "exam")


class PolicyError(UserError):
    """A `c.AssignmentPolicy` setting is not usable; the message names it."""


class AssignmentPolicy(Configurable):
    """How students may submit an assignment and what they see of its results."""

    budget_capacity = Int(3, help=(
        "Submissions a student may make at once (the size of the token bucket); each charged "
        "submission takes one, and one comes back every `budget_refill_minutes`. 0: no limit."
    )).tag(config=True)
    budget_refill_minutes = Float(60.0, help=(
        "Minutes after which one spent submission comes back (one at a time, while the bucket "
        "is below `budget_capacity`).")).tag(config=True)
    last_hour_grace = Bool(True, help=(
        "A student whose budget is empty may still submit once more (once per assignment) in "
        "the hour before their due date (their extension included).")).tag(config=True)
    counts = Enum(("last", "best"), default_value="last", help=(
        "Which graded submission counts for the gradebook: the last one, or the best score."
    )).tag(config=True)
    results_shown = Enum(SHOWN, default_value="always", help=(
        "'always': feedback as soon as graded. 'exam': the student sees only 'received' (no "
        "pass/fail, points or messages) until the due date, plus their extension, plus "
        "`late_window_hours`.")).tag(config=True)
    tests_shown = Dict(value_trait=Enum(SHOWN), default_value={}, help=(
        "Per hidden test (its name in tests.py, or a grade cell's id for all of its tests): "
        "'always' or 'exam' (see `results_shown`), e.g. {'fits_an_unseen_line': 'exam'}. "
        "A test not named follows `results_shown`.")).tag(config=True)
    late_window_hours = Float(0.0, help=(
        "Exam mode: hours after a student's due date (extension included) during which "
        "results stay hidden, while late work may still come in.")).tag(config=True)
    per_assignment = Dict(default_value={}, help=(
        "{assignment: {setting: value}}: the settings above for one assignment, over the "
        "defaults, e.g. {'backprop': {'budget_capacity': 5}}.")).tag(config=True)

    @validate("budget_capacity")
    def _not_negative(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"must be 0 or more, got {proposal['value']!r}")
        return proposal["value"]

    @validate("budget_refill_minutes")
    def _positive(self, proposal: Any) -> float:
        if not proposal["value"] > 0 or proposal["value"] == float("inf"):  # NaN too
            raise TraitError(f"must be a positive number of minutes, got {proposal['value']!r}")
        return proposal["value"]

    @validate("late_window_hours")
    def _window(self, proposal: Any) -> float:
        if not 0 <= proposal["value"] < float("inf"):
            raise TraitError(f"must be 0 or more hours, got {proposal['value']!r}")
        return proposal["value"]

    def shown(self, test_name: str, cell: str = "") -> str:
        """'always' or 'exam' for one test (by its name, else its grade cell's id)."""
        if test_name in self.tests_shown:
            return self.tests_shown[test_name]
        if cell in self.tests_shown:
            return self.tests_shown[cell]
        return self.results_shown

    @property
    def any_exam(self) -> bool:
        """Whether anything of this assignment's results can be hidden."""
        return self.results_shown == "exam" or "exam" in self.tests_shown.values()


SETTINGS = tuple(sorted(set(AssignmentPolicy.class_trait_names(config=True))
                        - {"per_assignment"}))


def assignments_of(course: Course) -> set[str]:
    """The course's assignments: folders of source/ or release/."""
    names = set()
    for folder in (course.root / "source", course.root / "release"):
        if folder.is_dir():
            names |= {path.name for path in folder.iterdir() if path.is_dir()}
    return names


_parsed: dict[tuple[Path, int, int], set[str]] = {}
_parsing = threading.Lock()  # CPython 3.11's ast.parse is not safe from two threads at once


def hidden_test_names(course: Course, assignment: str) -> set[str]:
    """Names a `tests_shown` key may take: each @hidden_test function of the assignment's
    tests.py and each grade cell it scores, read without running it (it imports torch).
    Parsed once per version of the file (the service asks on every request), under a lock."""
    path = course.hidden_dir(assignment) / "tests.py"
    with _parsing:
        try:
            state = path.stat()
            key = (path, state.st_mtime_ns, state.st_size)
            if key not in _parsed:
                _parsed[key] = _test_names(ast.parse(path.read_text(encoding="utf-8")))
            return set(_parsed[key])
        except (OSError, SyntaxError, ValueError):
            return set()  # no tests to name; grading reports the problem with the tests itself


def _test_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and _called(decorator) == "hidden_test":
                names.add(node.name)
                names |= {keyword.value.value for keyword in decorator.keywords
                          if keyword.arg == "cell" and isinstance(keyword.value, ast.Constant)
                          and isinstance(keyword.value.value, str)}
    return names


def _called(call: ast.Call) -> str:
    function = call.func
    return (function.id if isinstance(function, ast.Name)
            else function.attr if isinstance(function, ast.Attribute) else "")


def _config_path(course: Course) -> Path:
    return course.root / "nbgrader_config.py"


def _check_settings(course: Course, settings: dict[str, Any], where: str,
                    assignments: list[str]) -> None:
    """Each setting is known and its value usable (one at a time, so the error names it);
    tests_shown names tests of `assignments`."""
    check_settings(AssignmentPolicy, settings.items(), where, _config_path(course),
                   PolicyError, exclude=["per_assignment"])
    for name, value in settings.items():
        if name == "tests_shown" and assignments:
            known = set().union(*(hidden_test_names(course, a) for a in assignments))
            for test in value:
                if test not in known:
                    raise PolicyError(
                        f"{_config_path(course)}: {where}tests_shown names "
                        f"'{clean_text(test, 100)}', which is no hidden test (nor grade cell) "
                        f"of {', '.join(assignments)} (known: {', '.join(sorted(known))})")


def policy_for(course: Course, assignment: str) -> AssignmentPolicy:
    """The policy of one assignment: the defaults, then its `per_assignment` entry. Raises
    PolicyError for any unusable setting of the course (not only this assignment's): a
    mistake shows at the service's start, not when a student first meets it."""
    config = course.config if course.config is not None else Config()
    given = dict(config.AssignmentPolicy.items()) if "AssignmentPolicy" in config else {}
    per_assignment = given.pop("per_assignment", {})
    known = sorted(assignments_of(course))
    _check_settings(course, given, "c.AssignmentPolicy.", known)
    if not isinstance(per_assignment, dict):
        raise PolicyError(f"{_config_path(course)}: c.AssignmentPolicy.per_assignment must be "
                          "{assignment: {setting: value}}")
    for name, settings in per_assignment.items():
        where = f"c.AssignmentPolicy.per_assignment[{clean_text(repr(name), 100)}]"
        if name not in known:
            raise PolicyError(f"{_config_path(course)}: {where} names no assignment of the "
                              f"course (known: {', '.join(known) or 'none'})")
        if not isinstance(settings, dict):
            raise PolicyError(f"{_config_path(course)}: {where} must be {{setting: value}}")
        _check_settings(course, settings, f"{where}.", [name])
    merged = {**given, **per_assignment.get(assignment, {})}
    return AssignmentPolicy(config=Config({"AssignmentPolicy": merged}))


def student_due(course: Course, assignment: str, student_id: str) -> datetime | None:
    """The student's due date (timezone-aware UTC): nbgrader's due date in gradebook.db plus
    the student's extension (autograder.late), or None when the assignment has none."""
    due, extensions = due_and_extensions(course, assignment)
    if due is None:
        return None
    return extended_due(due, extensions.get(student_id)).replace(tzinfo=UTC)
