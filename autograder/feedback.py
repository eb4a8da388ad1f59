"""Feedback for one student, as Markdown and HTML, from their result only.

It shows each test's title, points and, on failure, its student-facing message: never test code,
tracebacks of the grader, or expected values (those never leave the hidden tests).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from autograder.results import GRADED, SubmissionResult, clean_text


def _sections(result: SubmissionResult) -> list[tuple[str, list[tuple[bool, str, str]]]]:
    """[(grade cell, [(passed, "title (p / m points)", message)])], in test order."""
    sections: dict[str, list[tuple[bool, str, str]]] = {}
    for test in result.tests:
        line = f"{test.title} ({test.points:g} / {test.max_points:g})"
        sections.setdefault(test.cell, []).append((test.passed, line, test.message))
    return list(sections.items())


def _score_line(result: SubmissionResult) -> str:
    percent = 100 * result.score / result.max_score if result.max_score else 0.0
    return f"Score: {result.score:g} / {result.max_score:g} ({percent:.0f} %)"


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


def render_markdown(result: SubmissionResult) -> str:
    """The feedback as Markdown. Everything that can come from the student (id, reason,
    messages, cell names and errors) is in code spans or fenced blocks: it shows as text and
    cannot add a heading, a score line, a link, an image or HTML."""
    lines = [f"# Feedback: {result.assignment}, {_code_span(clean_text(result.student_id))}",
             "", f"**{_score_line(result)}**", ""]
    if result.status != GRADED or result.reason:
        lines += [*_student_text(f"**{result.status}**:", result.reason), ""]
    for cell, tests in _sections(result):
        lines += [f"## {cell}", ""]
        for passed, line, message in tests:
            lines += _student_text(f"- {'PASS' if passed else 'FAIL'} {line}"
                                   + (":" if message else ""), message)
        lines.append("")
    if result.cell_errors:
        lines += ["## Errors in your notebook", ""]
        for error in result.cell_errors:
            lines += _student_text(f"- cell {_code_span(clean_text(error.get('cell', '')))}:",
                                   error.get("error", ""))
        lines.append("")
    return "\n".join(lines)


def render_html(result: SubmissionResult) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>Feedback: {e(result.assignment)}, {e(result.student_id)}</title>",
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}"
        ".pass{color:#176c2c}.fail{color:#a4161a}li{margin:.4em 0}"
        ".reason{background:#fff3cd;padding:.5em}</style></head><body>",
        f"<h1>Feedback: {e(result.assignment)}, {e(result.student_id)}</h1>",
        f"<p><strong>{e(_score_line(result))}</strong></p>",
    ]
    if result.status != GRADED or result.reason:
        parts.append(f"<p class='reason'><strong>{e(result.status)}</strong>: "
                     f"{e(result.reason)}</p>")
    for cell, tests in _sections(result):
        parts.append(f"<h2>{e(cell)}</h2><ul>")
        for passed, line, message in tests:
            kind = "pass" if passed else "fail"
            parts.append(f"<li class='{kind}'>{'PASS' if passed else 'FAIL'} {e(line)}")
            if message:
                parts.append(f"<br><span>{e(message)}</span>")
            parts.append("</li>")
        parts.append("</ul>")
    if result.cell_errors:
        parts.append("<h2>Errors in your notebook</h2><ul>")
        parts += [f"<li>cell <code>{e(err['cell'])}</code>: {e(err['error'])}</li>"
                  for err in result.cell_errors]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_feedback(result: SubmissionResult, directory: Path) -> list[Path]:
    """feedback/<student>/<assignment>/<notebook>.html (nbgrader's place for it) and .md."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".html", render_html(result)), (".md", render_markdown(result))):
        path = directory / f"{result.notebook}{suffix}"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        written.append(path)
    return written
