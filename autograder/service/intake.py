"""Checks an upload before it is stored: is this a notebook the grader can read, of this
assignment? Bad input gets a clear 4xx naming what is wrong, and nothing is stored.

Each check is bounded, in the order of its cost: the size before anything is parsed (413);
UTF-8 JSON, whose nesting depth is bounded by the parser's recursion limit (400); the shape of a
notebook (400); its nbformat version and a bounded number of cells (422); bounded counts of
outputs and of JSON values in all (422: nbformat's validation costs grow with them); then
nbformat itself reads it as the grader will (autograder.assemble.parse_notebook: 422 if it
cannot); last, the notebook must hold one of the assignment's answer cells, matched as the
grader matches them (by nbgrader grade id, else by the functions an answer cell defines:
assemble's own matching), so that another assignment's notebook is refused here rather than
graded as a zero (422).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from autograder.assemble import (
    InvalidNotebook,
    _defined_functions,
    _matched_by_content,
    _source,
    grade_id,
    is_solution,
    parse_notebook,
)
from autograder.assignment import Assignment
from autograder.errors import UserError
from autograder.results import clean_text

MAX_CELLS = 5_000  # far above any real notebook; nbformat's validation costs ~40 us a cell
# nbformat's validation costs ~20 us an output and ~5 us a JSON value: 90,000 one-character
# outputs (4.7 MB) took 2-3 s of CPU and ~75 MB, so the counts are bounded before it runs.
# A real notebook holds a few hundred outputs and a few thousand values (a plot is one string).
MAX_OUTPUTS = 10_000
MAX_VALUES = 150_000  # every object, list, string, number... in the JSON
SUPPORTED_MAJOR = 4


class BadUpload(UserError):
    """An upload refused; `status_code` is the HTTP status to answer with, `message` says
    what is wrong (clean text)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(status_code, message)  # both: a copy or a pickle keeps both
        self.status_code = status_code
        self.message = message

    def __str__(self) -> str:
        return self.message


def _size(count: int) -> str:
    return f"{count / 1048576:.1f} MB" if count >= 1048576 else f"{count / 1024:.0f} KB" \
        if count >= 1024 else f"{count} bytes"


def _read_json(content: bytes) -> Any:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadUpload(400, f"this is not a notebook: not UTF-8 text (byte {error.start})"
                        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BadUpload(400, "this is not a notebook: its JSON is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError
        where = (f" (line {error.lineno}, column {error.colno}: {error.msg})"
                 if isinstance(error, json.JSONDecodeError) else "")
        raise BadUpload(400, f"this is not a notebook: not JSON{clean_text(where, 200)}"
                        ) from None


def _check_shape(data: Any) -> None:
    if not isinstance(data, dict):
        raise BadUpload(400, "this is not a notebook: the JSON is not an object")
    cells = data.get("cells")
    major = data.get("nbformat")
    if not isinstance(cells, list):
        if isinstance(major, int) and not isinstance(major, bool) and major < SUPPORTED_MAJOR \
                and "worksheets" in data:
            raise BadUpload(422, f"this notebook is in nbformat {major}, which the grader does "
                                 "not read: open it in Jupyter and save it again (nbformat 4)")
        raise BadUpload(400, "this is not a notebook: the JSON has no list of cells")
    if not isinstance(major, int) or isinstance(major, bool):
        raise BadUpload(400, "this is not a notebook: it has no nbformat version")
    if major != SUPPORTED_MAJOR:
        raise BadUpload(422, f"this notebook is in nbformat {major}; the grader reads nbformat "
                             f"{SUPPORTED_MAJOR} (save it from a current Jupyter)")
    if len(cells) > MAX_CELLS:
        raise BadUpload(422, f"this notebook has {len(cells)} cells; at most {MAX_CELLS} are "
                             "accepted")


def _check_counts(data: dict[str, Any]) -> None:
    """Bound what nbformat's validation will walk: outputs in all, then values in all (the
    walk stops as soon as the bound is passed)."""
    outputs = sum(len(cell["outputs"]) for cell in data["cells"]
                  if isinstance(cell, dict) and isinstance(cell.get("outputs"), list))
    if outputs > MAX_OUTPUTS:
        raise BadUpload(422, f"this notebook holds {outputs} outputs; at most {MAX_OUTPUTS} "
                             "are accepted (the grader runs the notebook again and does not "
                             "need them): clear its outputs (Edit > Clear Outputs of All "
                             "Cells), save, and submit again")
    seen, stack = 0, [data]
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise BadUpload(422, f"this notebook's JSON holds more than {MAX_VALUES} values "
                                 "(lists, strings, numbers...); no real notebook does: clear "
                                 "its outputs, save, and submit again")
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _answer_cells(release: Any) -> dict[str, Any]:
    """The release's answer cells (solution cells), by grade id."""
    return {gid: cell for cell in release.cells
            if is_solution(cell) and (gid := grade_id(cell)) is not None}


def _holds_an_answer_cell(notebook: Any, release: Any) -> bool:
    answers = _answer_cells(release)
    if any(grade_id(cell) in answers for cell in notebook.cells):
        return True
    release_code = {gid: cell for cell in release.cells
                    if cell.get("cell_type") == "code" and (gid := grade_id(cell)) is not None}
    return any(gid in answers for gid in _matched_by_content(release_code, notebook).values())


def check_upload(content: bytes, assignment: Assignment, max_bytes: int) -> None:
    """Raise BadUpload (400, 413 or 422) unless `content` is a notebook of `assignment` that
    the grader can read."""
    if len(content) > max_bytes:
        raise BadUpload(413, f"this upload is {_size(len(content))}; at most "
                             f"{_size(max_bytes)} is accepted")
    if not content.strip():
        raise BadUpload(400, "this is not a notebook: the upload is empty")
    data = _read_json(content)
    _check_shape(data)
    _check_counts(data)
    del data  # nbformat reads the bytes again: only one parse held at a time
    try:
        with warnings.catch_warnings():  # nbformat warns of missing cell ids: not our news
            warnings.simplefilter("ignore")
            notebook = parse_notebook(content, "this notebook")
    except InvalidNotebook as error:
        raise BadUpload(422, clean_text(error, 400)) from None
    except RecursionError:
        raise BadUpload(422, "this notebook cannot be read: it is nested too deeply") from None
    answers = _answer_cells(assignment.release_notebook)
    if answers and not _holds_an_answer_cell(notebook, assignment.release_notebook):
        functions = sorted(set().union(*(_defined_functions(_source(cell))
                                         for cell in answers.values())))
        named = ", ".join(sorted(answers))
        defining = (f"; nor a cell defining {', '.join(f + '()' for f in functions)}"
                    if functions else "")
        raise BadUpload(422, clean_text(
            f"this is not a notebook of {assignment.name}: none of its answer cells ({named}) "
            f"were found{defining}. Submit the notebook of {assignment.name} "
            f"({assignment.notebook_name}.ipynb)", 1000))
