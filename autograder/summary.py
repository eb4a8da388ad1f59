"""The end of a grading run, as the instructor reads it on a terminal: what happened to each
submission (graded, timed out, invalid, crashed, skipped with reasons), how often each hidden
test passed, and how the scores spread. Plain text, at most 80 columns, cleaned."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from autograder.results import (
    CRASHED,
    ERROR,
    GRADED,
    INVALID,
    TIMEOUT,
    SubmissionResult,
    one_line,
)
from autograder.submissions import Skipped

WIDTH = 80
STATUS_WORDS = ((GRADED, "graded"), (TIMEOUT, "timed out"), (INVALID, "invalid"),
                (CRASHED, "crashed"), (ERROR, "grader error"))


@dataclass
class GradeRun:
    """What one `grade` run did; `results` holds every submission it covered, kept ones too."""

    assignment: str
    results: list[SubmissionResult]
    graded_now: int = 0
    kept: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    sandbox_off: list[str] = field(default_factory=list)
    unsafe: bool = False


def _line(text: str, width: int = WIDTH) -> str:
    text = one_line(text, 2_000)
    return text if len(text) <= width else text[:width - 3] + "..."


def render(run: GradeRun) -> str:
    lines: list[str] = []
    if run.sandbox_off:
        lines.append("WARNING: student code ran with these sandbox layers off (see `autograder "
                     "doctor`):")
        lines += [f"  {_line(layer, WIDTH - 2)}" for layer in run.sandbox_off]
    if run.skipped:
        lines.append(f"{len(run.skipped)} not graded (skipped while collecting):")
        # Full reasons, one per line: the instructor needs the whole path to find the file.
        lines += [f"skipped: {_line(item.item, 300)}: {_line(item.reason, 500)}"
                  for item in run.skipped]
    results = run.results
    lines.append("")
    lines.append(_line(f"== {run.assignment}: {len(results)} submission"
                       f"{'' if len(results) == 1 else 's'} ({run.graded_now} graded now, "
                       f"{run.kept} kept), {len(run.skipped)} skipped"))
    counts = Counter(result.status for result in results)
    lines.append(", ".join(f"{word} {counts.get(status, 0)}" for status, word in STATUS_WORDS
                           if status in (GRADED, TIMEOUT, INVALID, CRASHED) or counts.get(status))
                 + f", skipped {len(run.skipped)}")
    lines += _late(results)
    if results:
        lines += _pass_rates(results)
        lines += _histogram(results)
    if run.unsafe:
        lines.append("UNSAFE: graded with --unsafe (layers off are listed above, if any)")
    return "\n".join(lines)


def _late(results: list[SubmissionResult]) -> list[str]:
    """How many were late and what the late policy took: the scores below are after it."""
    late = [result for result in results if result.seconds_late > 0]
    if not late:
        return []
    charged = [result for result in late if result.late_penalty > 0]
    taken = sum(result.late_penalty for result in charged)
    return [_line(f"late {len(late)}, penalised {len(charged)} ({taken:g} points in all); "
                  "scores below are after it")]


def _pass_rates(results: list[SubmissionResult]) -> list[str]:
    """Each hidden test's pass rate, grouped under its part, in the tests' order."""
    order: dict[str, tuple[str, str]] = {}  # test name -> (part, title)
    passed: Counter[str] = Counter()
    for result in results:
        for test in result.tests:
            order.setdefault(test.name, (getattr(test, "part", "") or test.cell,
                                         test.title or test.name))
            passed[test.name] += test.passed
    total = len(results)
    lines = ["", "tests passed (of all submissions):"]
    part = None
    for name, (test_part, title) in order.items():
        if test_part != part:
            part = test_part
            lines.append(f"  {_line(part, WIDTH - 2)}")
        rate = passed[name] / total
        bar = "#" * round(rate * 15)
        lines.append(f"    {_line(title, 42):42} {passed[name]:>4}/{total:<4} "
                     f"{100 * rate:>3.0f}% {bar}")
    return lines


def _histogram(results: list[SubmissionResult]) -> list[str]:
    """Scores in bins of one point (or a tenth of the maximum, past 20 points)."""
    top = max(result.max_score for result in results) or 1.0
    step = 1.0 if top <= 20 else top / 10
    bins = int(top // step) + 1
    counts = [0] * bins
    for result in results:
        counts[min(bins - 1, int(result.score_after_penalty // step))] += 1
    most = max(counts) or 1
    scores = sorted(result.score_after_penalty for result in results)
    middle = len(scores) // 2
    median = scores[middle] if len(scores) % 2 else (scores[middle - 1] + scores[middle]) / 2
    lines = ["", f"scores (out of {top:g}): mean {sum(scores) / len(scores):.2f}, "
                 f"median {median:g}"]
    for index, count in enumerate(counts):
        label = f"{index * step:g}" if step == 1.0 else f"{index * step:.0f}-"
        bar = "#" * (round(count / most * 60) if count else 0)
        lines.append(f"  {label:>5} | {bar}{' ' if bar else ''}{count if count else ''}".rstrip())
    return lines
