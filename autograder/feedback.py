"""Feedback for one student, as Markdown and HTML, from their result and their final score.

It shows the final score as nbgrader computes it from gradebook.db (`scores.final_score`), with
its parts (autograded, a TA's manual adjustment, extra credit, the late penalty) where they
differ from the autograded score, so the feedback never contradicts the gradebook; the due
date and lateness where known, a notebook-wide reason (a timeout, an invalid notebook) once
at the top, the errors of the notebook's cells, then each part of the notebook
under its title, with each test's title, points and, on failure, its student-facing message:
never test code, tracebacks of the grader, or expected values (those never leave the hidden
tests).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING

from autograder.files import write_atomic
from autograder.results import GRADED, SubmissionResult, clean_text, one_line

if TYPE_CHECKING:
    from autograder.scores import StudentScore


def _sections(result: SubmissionResult) -> list[tuple[str, list[tuple[bool, str, str]]]]:
    """[(part title, [(passed, "title (p / m points)", message)])], in test order. A part is
    headed by its title in the notebook ("Part 1: ..."), else by its grade cell's id."""
    sections: dict[str, list[tuple[bool, str, str]]] = {}
    echoes = _notebook_wide(result)
    for test in result.tests:
        line = f"{test.title} ({test.points:g} / {test.max_points:g})"
        message = test.message if test.passed else _unless_told_above(test.message, echoes)
        heading = _one_line(getattr(test, "part", "") or test.cell)
        sections.setdefault(heading, []).append((test.passed, line, message))
    return list(sections.items())


def _one_line(text: str) -> str:
    return one_line(text, 300).strip()


# How a failure that follows from the notebook-wide reason begins (runner and pipeline).
_FOLLOWING = ("not run: ", "not called again: ", "stopped: ")


def _notebook_wide(result: SubmissionResult) -> list[str]:
    """The parts of a notebook-wide reason (a timeout, a crash, an invalid notebook) that
    tests repeat: told once at the top, not under every test."""
    if result.status == GRADED or not result.reason:
        return []
    parts = []
    for part in result.reason.split("; "):
        for prefix in _FOLLOWING:
            part = part.removeprefix(prefix)
        if len(part) >= 12:  # long enough to be that reason, not a word of another
            parts.append(part.rstrip("."))
    return parts


def _unless_told_above(message: str, echoes: list[str]) -> str:
    """A failure that only follows from the notebook-wide reason points to it."""
    if echoes and message.startswith("not run: "):
        return "not run: see above"
    if not any(echo in message for echo in echoes):
        return message
    return "not run: see above" if message.startswith(_FOLLOWING) or any(
        message.rstrip(".") == echo for echo in echoes) else "stopped here: see above"


def _final(result: SubmissionResult, final: StudentScore | None
           ) -> tuple[float, float, list[str]]:
    """(final score, out of, its parts): `final` as gradebook.db gives it, else (gradebook.db
    not read) the result's own score less its late penalty. The parts are listed only when
    something changed the autograded score."""
    if final is None or final.score is None:
        autograded, adjustment, extra = result.score, 0.0, 0.0
        penalty, max_score = result.late_penalty, result.max_score
        score = result.score_after_penalty
    else:
        autograded = result.score if final.autograded is None else final.autograded
        adjustment, extra = final.manual_adjustment, final.extra_credit
        penalty, max_score, score = final.late_penalty, final.max_score or result.max_score, \
            final.score
    parts = []
    if adjustment or extra or penalty:
        parts.append(f"Autograded: {autograded:g} / {max_score:g}")
        if adjustment:
            parts.append(f"Manual adjustment by your grader: {adjustment:+g}")
        if extra:
            parts.append(f"Extra credit: {extra:+g}")
        if penalty:
            parts.append(f"Late penalty: {penalty:g} points off")
    return score, max_score, parts


def _score_line(score: float, max_score: float) -> str:
    percent = 100 * score / max_score if max_score else 0.0
    return f"Score: {score:g} / {max_score:g} ({percent:.0f} %)"


def _when(iso: str) -> str:
    """An ISO 8601 time as students read it: "2025-03-01 23:59 UTC"."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return clean_text(iso, 60)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} day{'s' * (days != 1)}" if days else "",
             f"{hours} h" if hours else "", f"{minutes} min" if minutes and not days else ""]
    return " ".join(part for part in parts if part)


def _late_lines(result: SubmissionResult) -> list[str]:
    """The due date and how late the submission was, where known (what it cost is a part of
    the score)."""
    lines = []
    if result.due:
        lines.append(f"Due: {_when(result.due)}")
    if result.seconds_late > 0:
        lines.append(f"Submitted {_duration(result.seconds_late)} late")
    elif result.lms_late:
        lines.append("Marked late by the LMS")
    elif result.due:
        lines.append("Submitted on time")
    return lines


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall("`+", text)), default=0)


def _code_span(text: str) -> str:
    """One line of student text as a Markdown code span: nothing in it is read as Markdown
    or HTML. Its delimiter is longer than any run of backticks inside, so it cannot be
    closed early; the padding spaces are removed by the renderer."""
    ticks = "`" * (_longest_backtick_run(text) + 1)
    return f"{ticks} {text} {ticks}"


def _code_block(text: str) -> list[str]:
    """Student text of several lines as a fenced block, at the top level of the document
    (in a list, a line that is not indented would leave the list and the block). Its fence is
    longer than any run of backticks inside, so no line of the text can close it."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return ["", f"{fence}text", *text.split("\n"), fence, ""]


def _student_text(lead: str, text: str) -> list[str]:
    """`lead` (our Markdown) followed by student text that cannot inject markup."""
    text = clean_text(text)
    if not text:
        return [lead]
    if "\n" not in text:
        return [f"{lead} {_code_span(text)}"]
    return [lead, *_code_block(text)]


def render_markdown(result: SubmissionResult, final: StudentScore | None = None) -> str:
    """The feedback as Markdown. Everything that can come from the student (id, reason,
    messages, cell names and errors) is in code spans or fenced blocks: it shows as text and
    cannot add a heading, a score line, a link, an image or HTML."""
    score, max_score, parts = _final(result, final)
    lines = [f"# Feedback: {result.assignment}, {_code_span(clean_text(result.student_id))}",
             "", f"**{_score_line(score, max_score)}**", ""]
    late = parts + _late_lines(result)
    if late:
        lines += [f"- {line}" for line in late] + [""]
    if result.status != GRADED or result.reason:
        lines += [*_student_text(f"**{result.status}**:", result.reason), ""]
    if result.cell_errors:  # before the tests: failures further down may follow from these
        lines += ["## Errors in your notebook", ""]
        for error in result.cell_errors:
            lines += _student_text(f"- cell {_code_span(clean_text(error.get('cell', '')))}:",
                                   error.get("error", ""))
        lines.append("")
    for part, tests in _sections(result):
        lines += [f"## {_code_span(part) if '`' in part else part}", ""]
        for passed, line, message in tests:
            lines += _student_text(f"- {'PASS' if passed else 'FAIL'} {line}"
                                   + (":" if message else ""), message)
        lines.append("")
    return "\n".join(lines)


def render_html(result: SubmissionResult, final: StudentScore | None = None) -> str:
    e = html.escape
    score, max_score, score_parts = _final(result, final)
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>Feedback: {e(result.assignment)}, {e(result.student_id)}</title>",
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}"
        ".pass{color:#176c2c}.fail{color:#a4161a}li{margin:.4em 0}"
        ".reason{background:#fff3cd;padding:.5em}</style></head><body>",
        f"<h1>Feedback: {e(result.assignment)}, {e(result.student_id)}</h1>",
        f"<p><strong>{e(_score_line(score, max_score))}</strong></p>",
    ]
    late = score_parts + _late_lines(result)
    if late:
        parts.append("<ul class='late'>" + "".join(f"<li>{e(line)}</li>" for line in late)
                     + "</ul>")
    if result.status != GRADED or result.reason:
        parts.append(f"<p class='reason'><strong>{e(result.status)}</strong>: "
                     f"{e(result.reason)}</p>")
    if result.cell_errors:
        parts.append("<h2>Errors in your notebook</h2><ul>")
        parts += [f"<li>cell <code>{e(err['cell'])}</code>: {e(err['error'])}</li>"
                  for err in result.cell_errors]
        parts.append("</ul>")
    for part, tests in _sections(result):
        parts.append(f"<h2>{e(part)}</h2><ul>")
        for passed, line, message in tests:
            kind = "pass" if passed else "fail"
            parts.append(f"<li class='{kind}'>{'PASS' if passed else 'FAIL'} {e(line)}")
            if message:
                parts.append(f"<br><span>{e(message)}</span>")
            parts.append("</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_feedback(result: SubmissionResult,
                    final: StudentScore | None = None) -> dict[str, str]:
    """{suffix: page} of one student's feedback: what grading, `autograder feedback-zip` and
    nbgrader's Generate Feedback (FeedbackExporter) all write, so the three always agree."""
    return {".html": render_html(result, final), ".md": render_markdown(result, final)}


def write_feedback(result: SubmissionResult, directory: Path,
                   final: StudentScore | None = None) -> list[Path]:
    """feedback/<student>/<assignment>/<notebook>.html (nbgrader's place for it) and .md."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in render_feedback(result, final).items():
        path = directory / f"{result.notebook}{suffix}"
        write_atomic(path, text.encode("utf-8"))
        written.append(path)
    return written
