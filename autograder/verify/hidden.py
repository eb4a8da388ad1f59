"""How an assignment declares its hidden tests, and how they are loaded and checked for sanity.

An assignment's grader side lives in hidden_tests/<assignment>/:

* probes.py -- functions `f(student, inputs) -> data` that run *inside the student's process*:
  they call the student's functions on inputs and return what came out. Inputs only, no verdicts.
* tests.py  -- trusted: the probes to run, and test functions decorated with
  `@hidden_test(cell=..., points=..., message=...)` that take a `Probes` and `assert`.
  Probes are declared as `PROBES = {name: probe("f", **inputs)}` (the same inputs for every
  submission: fine for the lesson's own, public values) and/or by
  `draw_probes(rng: torch.Generator) -> {name: probe(...)}`, called for each submission with a
  generator seeded from the course's secret and the notebook's hash: inputs no student can know
  in advance, and the same ones whenever the same notebook is graded again. A test reads a
  probe's data as `probes[name]` and the inputs it was called with as `probes.inputs(name)`.
  An optional `expected_values(inputs) -> {name: data}` states, for the instructor's record of
  each submission (appeals), the values a right answer gives on those inputs.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from autograder.errors import UserError

TESTS_FILE = "tests.py"
PROBES_FILE = "probes.py"


class HiddenTestsError(UserError):
    """The hidden tests of an assignment are missing or do not fit its notebook."""


class ProbeFailed(Exception):
    """The student's code raised, or never returned, when a probe called it."""


@dataclass(frozen=True)
class Probe:
    function: str
    inputs: dict[str, Any]


def probe(function: str, **inputs: Any) -> Probe:
    """Declare a call of `function` from probes.py with these inputs (plain data only)."""
    return Probe(function=function, inputs=inputs)


@dataclass(frozen=True)
class HiddenTest:
    name: str
    title: str
    cell: str
    points: float
    message: str
    check: Callable[[Probes], None]


def hidden_test(*, cell: str, points: float, message: str) -> Callable:
    """Mark a function as a hidden test worth `points` towards nbgrader grade cell `cell`.

    `message` teaches what to fix when the test fails; an assertion's own text, if any, is shown
    before it, so write assertion messages that show the student's values, never expected ones.
    """
    if points <= 0:
        raise ValueError("a hidden test must be worth a positive number of points")

    def mark(function: Callable[[Probes], None]) -> Callable[[Probes], None]:
        title = (function.__doc__ or function.__name__).strip().splitlines()[0]
        function.__hidden_test__ = HiddenTest(function.__name__, title, cell, float(points),
                                              message, function)
        return function

    return mark


class Probes:
    """What the tests read: each probe's data, or ProbeFailed saying why there is none, and
    the inputs each probe was called with."""

    def __init__(self, values: dict[str, Any], failures: dict[str, str],
                 declared: dict[str, Probe] | None = None) -> None:
        self._values = values
        self._failures = failures
        self._declared = declared or {}

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        raise ProbeFailed(self._failures.get(name, "your code did not return a result"))

    def inputs(self, name: str) -> dict[str, Any]:
        return self._declared[name].inputs

    def names(self) -> list[str]:
        return list(self._declared)


@dataclass
class HiddenTests:
    assignment: str
    tests: list[HiddenTest]
    fixed_probes: dict[str, Probe]  # PROBES: the same for every submission
    draw: Callable[[Any], dict[str, Probe]] | None  # draw_probes(rng): per submission
    probes_file: Path
    expected: Callable[[dict[str, dict]], dict] | None = None

    @classmethod
    def load(cls, directory: Path, assignment: str) -> HiddenTests:
        tests_file, probes_file = directory / TESTS_FILE, directory / PROBES_FILE
        for path in (tests_file, probes_file):
            if not path.is_file():
                raise HiddenTestsError(f"hidden tests for '{assignment}' need {path}")
        _check_probes_file(probes_file)
        module = _import_file(tests_file, f"autograder_hidden_tests_{assignment}")
        fixed = getattr(module, "PROBES", {})
        draw = getattr(module, "draw_probes", None)
        if not isinstance(fixed, dict) or not all(isinstance(p, Probe) for p in fixed.values()):
            raise HiddenTestsError(f"{tests_file}: PROBES must be {{name: probe(...)}}")
        if not fixed and not callable(draw):
            raise HiddenTestsError(f"{tests_file} must define PROBES = {{name: probe(...)}} "
                                   "or draw_probes(rng)")
        tests = [value.__hidden_test__ for value in vars(module).values()
                 if callable(value) and hasattr(value, "__hidden_test__")]
        if not tests:
            raise HiddenTestsError(f"{tests_file} defines no @hidden_test function")
        expected = getattr(module, "expected_values", None)
        hidden = cls(assignment, tests, fixed, draw if callable(draw) else None, probes_file,
                     expected if callable(expected) else None)
        probe_functions = _top_level_functions(probes_file)
        for name, declared in hidden.probes_for(0).items():
            if declared.function not in probe_functions:
                raise HiddenTestsError(f"probe '{name}' calls {declared.function}(), "
                                       f"which {probes_file} does not define")
        return hidden

    @cached_property
    def probes_source(self) -> str:
        return self.probes_file.read_text(encoding="utf-8")

    def probes_for(self, seed: int) -> dict[str, Probe]:
        """The probes of one submission: the fixed ones, then those drawn from `seed`."""
        probes = dict(self.fixed_probes)
        if self.draw is not None:
            import torch

            drawn = self.draw(torch.Generator().manual_seed(seed))
            if not isinstance(drawn, dict) or not all(isinstance(p, Probe)
                                                      for p in drawn.values()):
                raise HiddenTestsError(f"draw_probes of '{self.assignment}' must return "
                                       "{name: probe(...)}")
            probes.update(drawn)
        return probes

    def max_points_by_cell(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for test in self.tests:
            totals[test.cell] = totals.get(test.cell, 0.0) + test.points
        return totals

    def check_against(self, grade_cells: dict[str, float], notebook: str) -> None:
        """Each grade cell's points must be exactly what its hidden tests can award."""
        ours = self.max_points_by_cell()
        problems = []
        for cell in sorted(set(ours) - set(grade_cells)):
            problems.append(f"tests name grade cell '{cell}', which {notebook} does not have")
        for cell in sorted(set(grade_cells) - set(ours)):
            problems.append(f"grade cell '{cell}' ({grade_cells[cell]:g} points) "
                            "has no hidden test")
        for cell in sorted(set(ours) & set(grade_cells)):
            if abs(ours[cell] - grade_cells[cell]) > 1e-9:
                problems.append(f"grade cell '{cell}' is worth {grade_cells[cell]:g} points in "
                                f"{notebook}, but its hidden tests add up to {ours[cell]:g}")
        if problems:
            raise HiddenTestsError(f"hidden tests of '{self.assignment}' do not fit {notebook}: "
                                   + "; ".join(problems))


def _import_file(path: Path, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise HiddenTestsError(
            f"{path} failed to import: {type(error).__name__}: {error}") from error
    return module


def _check_probes_file(path: Path) -> None:
    try:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise HiddenTestsError(f"{path} is not valid Python: {error}") from error


def _top_level_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
