"""What grading produces: one result per hidden test, gathered per submission, stored as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# A submission's status: graded normally, or why its process gave no (complete) results.
GRADED = "graded"
TIMEOUT = "timeout"
CRASHED = "crashed"
INVALID = "invalid"  # the notebook could not be read or run at all
ERROR = "error"  # the grader itself failed on this submission (a bug to report, not the student's)


@dataclass
class TestResult:
    name: str
    cell: str  # the nbgrader grade cell whose score this test contributes to
    points: float
    max_points: float
    passed: bool
    message: str = ""  # student-facing; never contains test code or expected values
    title: str = ""


@dataclass
class SubmissionResult:
    student_id: str
    assignment: str
    notebook: str
    status: str
    reason: str = ""  # why the status is not GRADED, or what went wrong around the tests
    timestamp: str | None = None
    tests: list[TestResult] = field(default_factory=list)
    cell_errors: list[dict[str, str]] = field(default_factory=list)  # errors raised by the cells
    output: str = ""  # what the notebook printed, capped; shown back, never parsed for scores
    seconds: float = 0.0
    sandbox_off: list[str] = field(default_factory=list)  # layers that were not on, and why
    fingerprint: str = ""  # of the notebook and the grader: unchanged means no need to regrade
    graded_on: dict = field(default_factory=dict)  # instructor only: inputs, expected values

    @property
    def score(self) -> float:
        return sum(test.points for test in self.tests)

    @property
    def max_score(self) -> float:
        return sum(test.max_points for test in self.tests)

    def cell_scores(self) -> dict[str, float]:
        scores: dict[str, float] = {}
        for test in self.tests:
            scores[test.cell] = scores.get(test.cell, 0.0) + test.points
        return scores

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionResult:
        data = dict(data)
        data["tests"] = [TestResult(**test) for test in data.get("tests", [])]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        return cls.from_dict(json.loads(text))


def clean_text(text: str) -> str:
    """Text that came (partly) from student code, made safe to encode anywhere as UTF-8."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def cleaned(result: SubmissionResult) -> SubmissionResult:
    result.reason = clean_text(result.reason)
    result.output = clean_text(result.output)
    result.cell_errors = [{key: clean_text(str(value)) for key, value in error.items()}
                          for error in result.cell_errors]
    for test in result.tests:
        test.message = clean_text(test.message)
    return result


RESULT_FILE = "results.json"


def save_result(result: SubmissionResult, directory: Path) -> Path:
    """Write atomically: a reader sees the old result or the new one, never half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULT_FILE
    partial = path.with_suffix(".json.partial")
    partial.write_text(result.to_json(), encoding="utf-8")
    os.replace(partial, path)
    return path


def load_results(root: Path, assignment: str) -> list[SubmissionResult]:
    """All stored results for an assignment under autograded/<student>/<assignment>/."""
    results = []
    for path in sorted((root / "autograded").glob(f"*/{assignment}/{RESULT_FILE}")):
        results.append(SubmissionResult.from_json(path.read_text(encoding="utf-8")))
    return results
