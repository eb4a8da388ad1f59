"""What grading produces: one result per hidden test, gathered per submission, stored as JSON."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """A submission's status: graded normally, or why its process gave no (complete) results.
    A str, so stored results, CSVs and comparisons with plain strings keep working."""

    GRADED = "graded"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    INVALID = "invalid"  # the notebook could not be read or run at all
    ERROR = "error"  # the grader itself failed on this one (a bug to report, not the student's)


GRADED, TIMEOUT, CRASHED, INVALID, ERROR = (Status.GRADED, Status.TIMEOUT, Status.CRASHED,
                                            Status.INVALID, Status.ERROR)


@dataclass
class TestResult:
    __test__ = False  # a result, not a test class for pytest to collect
    name: str
    cell: str  # the nbgrader grade cell whose score this test contributes to
    points: float
    max_points: float
    passed: bool
    message: str = ""  # student-facing; never contains test code or expected values
    title: str = ""
    part: str = ""  # the title of the notebook's part this test's grade cell closes


@dataclass
class SubmissionResult:
    student_id: str
    assignment: str
    notebook: str
    status: Status
    reason: str = ""  # why the status is not GRADED, or what went wrong around the tests
    timestamp: str | None = None
    tests: list[TestResult] = field(default_factory=list)
    cell_errors: list[dict[str, str]] = field(default_factory=list)  # errors raised by the cells
    output: str = ""  # what the notebook printed, capped; shown back, never parsed for scores
    seconds: float = 0.0
    sandbox_off: list[str] = field(default_factory=list)  # layers that were not on, and why
    fingerprint: str = ""  # of the notebook and the grader: unchanged means no need to regrade
    graded_on: dict = field(default_factory=dict)  # instructor only: inputs, expected values
    # Late work (see autograder/late.py): the due date that applied to this student (their
    # extension included), how late the submission was, and what nbgrader's
    # LateSubmissionPlugin took off. Times are ISO 8601 in UTC; None where unknown.
    due: str | None = None
    seconds_late: float = 0.0
    late_penalty: float = 0.0  # points taken off the score (never below zero in all)
    lms_late: bool = False  # the LMS marked the submission late (e.g. Canvas's _LATE_)

    @property
    def score(self) -> float:
        return sum(test.points for test in self.tests)

    @property
    def score_after_penalty(self) -> float:
        """The autograded score less the late penalty, never below 0 (manual grades and extra
        credit live in gradebook.db: autograder.scores has the final score)."""
        return max(0.0, self.score - self.late_penalty)

    @property
    def max_score(self) -> float:
        return sum(test.max_points for test in self.tests)

    def cell_scores(self) -> dict[str, float]:
        scores: dict[str, float] = {}
        for test in self.tests:
            scores[test.cell] = scores.get(test.cell, 0.0) + test.points
        return scores

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(asdict(self), indent=indent)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionResult:
        data = {key: value for key, value in data.items() if key in _FIELDS}
        data["tests"] = [TestResult(**test) for test in data.get("tests", [])]
        data["status"] = Status(data["status"])  # an unknown status is a broken result
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        return cls.from_dict(json.loads(text))


MESSAGE_CAP = 2_000  # characters of one student-derived message (a reason, a test message)
OUTPUT_CAP = 5_000  # characters of the notebook's printed output kept in a result

# Terminal escape sequences (CSI such as colours and cursor moves, OSC such as window titles and
# hyperlinks) are removed whole, so no half of one is left to be shown as text.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x9b[0-?]*[ -/]*[@-~]?"
                      r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?")
# What is left that can move the cursor, ring, clear, or hide or reorder text: C0 and C1 controls
# but newline and tab, and the Unicode format characters (category Cf: bidi embeddings,
# overrides and isolates, zero-width characters, soft hyphen, invisible tag characters...),
# plus the line and paragraph separators.
_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891"
    "\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
    "\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]")


def clean_text(text: object, cap: int = MESSAGE_CAP) -> str:
    """The one sanitizer for text that came from student code or student input: terminal
    escapes, control characters (but newline and tab) and characters that hide or reorder text
    removed, encodable as UTF-8 (a lone surrogate becomes "?"), and at most `cap` characters,
    the end replaced by a visible "[... N more characters]". Idempotent: cleaning clean text
    changes nothing, so every layer may clean again."""
    text = text if isinstance(text, str) else str(text)
    # Bound the work before the regexes run: a 25 MB message costs a slice, not a full pass.
    window = cap * 4 + 64
    rest = max(0, len(text) - window)
    shown = _HIDDEN.sub("", _ESCAPES.sub("", text[:window]))
    shown = shown.encode("utf-8", errors="replace").decode("utf-8")
    if len(shown) <= cap and not rest:
        return shown
    total, keep = len(shown) + rest, cap
    for _ in range(3):  # the marker counts towards the cap; its length depends on the count
        marker = f"[... {total - keep} more characters]"
        keep = max(0, cap - len(marker))
    return shown[:keep] + marker


def one_line(text: object, cap: int = MESSAGE_CAP) -> str:
    """`clean_text` on one line: newlines and tabs become spaces (a terminal row, a CSV-safe
    summary)."""
    return clean_text(text, cap).replace("\n", " ").replace("\t", " ")


def cleaned(result: SubmissionResult) -> SubmissionResult:
    """`result` with every field that can carry student text cleaned (in place, and returned)."""
    result.student_id = clean_text(result.student_id, 200)
    result.reason = clean_text(result.reason)
    result.output = clean_text(result.output, OUTPUT_CAP)
    result.cell_errors = [{clean_text(key, 100): clean_text(value)
                           for key, value in error.items()}
                          for error in result.cell_errors[:100]]
    for test in result.tests:
        test.message = clean_text(test.message)
        test.title = clean_text(test.title, 500)
        test.part = clean_text(test.part, 200)
    return result


_FIELDS = set(SubmissionResult.__dataclass_fields__)
