"""The notebook kept for formgrader (`autograded/<student>/<assignment>/<notebook>.ipynb`): the
one that was graded, its student HTML and Markdown sanitized (autograder/sanitize.py), and in
each grade cell, as its only output, what the hidden tests found there, so that a TA who sees
"1 / 3" in formgrader sees why.

The report is a plain-text stream output: nbconvert shows it escaped, and its student-derived
parts (messages, the reason) are cleaned text (results.clean_text). Whatever the student's own
run printed in a grade cell is replaced, so nothing there can pose as the grader's verdict.
The CLI and formgrader's Autograde button (autograder/nbgrader_plugins.py) both build it here,
so either leaves the same notebook.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder.assemble import grade_id, is_test
from autograder.results import GRADED, SubmissionResult, clean_text

if TYPE_CHECKING:
    from autograder.assignment import Assignment
    from autograder.course import Course

REPORT_HEADING = "Autograder, hidden tests"


class KeptNotebookError(Exception):
    """The submitted notebook cannot be kept for formgrader; the message says why."""


def cell_report(result: SubmissionResult, cell: str, max_points: float | None = None) -> str:
    """What the hidden tests found in grade cell `cell`: its score, a PASS/FAIL line per test
    with its message, and the notebook-wide reason, if any."""
    tests = [test for test in result.tests if test.cell == cell]
    score = sum(test.points for test in tests)
    if max_points is None:
        max_points = sum(test.max_points for test in tests)
    lines = [f"{REPORT_HEADING}: {score:g} / {max_points:g} points"]
    if result.status != GRADED or result.reason:
        lines.append(f"Whole notebook: {result.status}"
                     + (f": {clean_text(result.reason)}" if result.reason else ""))
    for test in tests:
        verdict = "PASS" if test.passed else "FAIL"
        line = f"{verdict} {clean_text(test.title or test.name, 500)} " \
               f"({test.points:g} / {test.max_points:g})"
        if test.message:
            line += f": {clean_text(test.message)}"
        lines.append(line)
    if not tests:
        lines.append("No hidden test scored this cell.")
    return "\n".join(lines) + "\n"


def annotate(notebook: Any, result: SubmissionResult,
             grade_cells: Iterable[str] | None = None) -> Any:
    """`notebook` (nbformat v4) with each grade cell's outputs replaced by its report, in
    place. `grade_cells`: the release's grade ids (the student's copy of the metadata is not
    trusted to say which cells are graded); None takes the notebook's own (a copy nbgrader
    has already restored from its gradebook). Only the first cell of an id is annotated."""
    wanted = None if grade_cells is None else set(grade_cells)
    done: set[str] = set()
    for cell in notebook.get("cells", []):
        cell_id = grade_id(cell)
        if (cell.get("cell_type") != "code" or not is_test(cell) or cell_id is None
                or cell_id in done or (wanted is not None and cell_id not in wanted)):
            continue
        done.add(cell_id)
        points = cell.get("metadata", {}).get("nbgrader", {}).get("points")
        try:
            max_points = float(points)
        except (TypeError, ValueError):
            max_points = None
        cell["outputs"] = [_stream(cell_report(result, cell_id, max_points))]
    return notebook


def _stream(text: str) -> Any:
    import nbformat

    return nbformat.v4.new_output("stream", name="stdout", text=text)


def build_kept_notebook(submitted: Path, release_notebook: Any,
                        grade_cells: Iterable[str], result: SubmissionResult) -> Any:
    """The kept notebook of `result` from the submitted notebook at `submitted`: sanitized
    and annotated. Read without following a link, bounded. Raises KeptNotebookError saying
    why it cannot be built."""
    import nbformat

    from autograder.sanitize import sanitize_notebook
    from autograder.submissions import MAX_NOTEBOOK_BYTES, SubmissionError, read_regular_file

    try:
        text = read_regular_file(submitted, MAX_NOTEBOOK_BYTES).decode("utf-8")
        raw = json.loads(text)
        # A v4 notebook is taken as it is (nbformat's schema validation would cost more than
        # the rest: the sanitizer keeps only what it knows); older ones are converted.
        notebook = (nbformat.from_dict(raw) if isinstance(raw, dict) and raw.get("nbformat") == 4
                    else nbformat.reads(text, as_version=4))
        notebook = sanitize_notebook(notebook, release_notebook)
        return annotate(notebook, result, grade_cells)
    except Exception as error:
        why = (str(error) if isinstance(error, SubmissionError)
               else f"it is not a readable Jupyter notebook ({type(error).__name__})")
        raise KeptNotebookError("the notebook was not kept for formgrader: "
                                f"{clean_text(why, 300)}") from None


def keep_graded_notebook(course: Course, assignment: Assignment,
                         result: SubmissionResult) -> str | None:
    """Write the kept notebook of `result`'s student from their submitted one, atomically.
    Returns why it was not kept, or None (nothing to keep: no notebook was submitted)."""
    from autograder.submissions import write_atomic

    folder = course.autograded_dir(result.student_id, assignment.name)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{assignment.notebook_name}.ipynb"
    submitted = course.submitted_dir(result.student_id, assignment.name) / name
    kept = folder / name
    if not os.path.lexists(submitted):
        return None
    try:
        notebook = build_kept_notebook(submitted, assignment.release_notebook,
                                       assignment.grade_cells, result)
    except KeptNotebookError as error:
        kept.unlink(missing_ok=True)  # an older submission's copy is not what was graded
        return str(error)
    write_atomic(kept, json.dumps(notebook, ensure_ascii=False).encode("utf-8"))
    return None
