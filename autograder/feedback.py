"""Feedback for one student, as Markdown and HTML, from their result only.

It shows each test's title, points and, on failure, its student-facing message: never test code,
tracebacks of the grader, or expected values (those never leave the hidden tests).
"""

from __future__ import annotations

import html
from pathlib import Path

from autograder.results import GRADED, SubmissionResult


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


def render_markdown(result: SubmissionResult) -> str:
    lines = [f"# Feedback: {result.assignment}, {result.student_id}", "",
             f"**{_score_line(result)}**", ""]
    if result.status != GRADED or result.reason:
        lines += [f"> **{result.status}**: {result.reason}", ""]
    for cell, tests in _sections(result):
        lines += [f"## {cell}", ""]
        for passed, line, message in tests:
            lines.append(f"- {'PASS' if passed else 'FAIL'} {line}")
            if message:
                lines.append(f"  - {message}")
        lines.append("")
    if result.cell_errors:
        lines += ["## Errors in your notebook", ""]
        lines += [f"- cell `{e['cell']}`: {e['error']}" for e in result.cell_errors]
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
