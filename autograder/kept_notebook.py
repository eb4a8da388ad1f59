"""The notebook kept for formgrader (`autograded/<student>/<assignment>/<notebook>.ipynb`): the
one that was graded, its student HTML and Markdown sanitized (autograder/sanitize.py), and in
each grade cell, as its only output, what the hidden tests found there, so that a TA who sees
"1 / 3" in formgrader sees why.

Before that, its nbgrader cells are taken from the release (restore_from_release), as
nbgrader's autograde does for its own copy: the student's metadata cannot choose which cell
formgrader shows as graded, what it is worth, or what a locked cell says.

The report is a plain-text stream output: nbconvert shows it escaped, and its student-derived
parts (messages, the reason) are cleaned text (results.clean_text). Whatever the student's own
run printed in a grade cell is replaced, and an output elsewhere carrying the report's heading
is dropped, so nothing can pose as the grader's verdict.
The CLI and formgrader's Autograde button (autograder/nbgrader_plugins.py) both build it here,
so either leaves the same notebook.
"""

from __future__ import annotations

import copy
import json
import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder.assemble import grade_id, is_solution, is_test, nbgrader_metadata
from autograder.results import GRADED, SubmissionResult, clean_text

if TYPE_CHECKING:
    from autograder.assignment import Assignment
    from autograder.course import Course

REPORT_HEADING = "Autograder, hidden tests"
# What formgrader shows instead of student text imitating the report (the original stays in
# submitted/).
IMITATION = "*[The autograder removed this cell from this copy: it imitated its report.]*"


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


def restore_from_release(notebook: Any, release: Any) -> Any:
    """`notebook` with its nbgrader cells taken from `release`, in place, as nbgrader's
    autograde does for its own copy (OverwriteCells, DeduplicateIds), so that the student's
    metadata cannot say which cell formgrader shows as graded, nor what it is worth:

    * each release grade id is held by one cell: among the cells claiming it, the first whose
      source is the release's (a locked cell's copy runs from there: autograder/assemble.py),
      else the first; with no claim, the first unclaimed cell whose source is a locked release
      cell's (its metadata was lost); a test cell nobody holds is put back from the release,
      after the release cell before it;
    * a holder gets the release's metadata, and a locked one its source and type; a test cell
      loses every output (the report becomes its only one);
    * every other cell loses its nbgrader metadata (a copy, an id or points the release does
      not have), and its outputs if it claimed to be graded or copies a test cell."""
    import nbformat

    released = {gid: cell for cell in release.get("cells", []) if (gid := grade_id(cell))}
    order = list(released)
    cells = [cell for cell in notebook.get("cells", []) if isinstance(cell, dict)]
    holder = _holders(cells, released)
    test_sources = {_source(cell).strip() for cell in released.values() if is_test(cell)}
    for index, cell in enumerate(cells):
        gid = holder.get(index)
        if gid is not None:
            _overwrite(cell, released[gid])
            continue
        metadata = cell.get("metadata")
        claim = metadata.pop("nbgrader", None) if isinstance(metadata, dict) else None
        posing = claim is not None and (not isinstance(claim, dict) or bool(
            claim.get("grade") or "points" in claim
            or (claim.get("grade_id") in released and is_test(released[claim["grade_id"]]))))
        if cell.get("cell_type") == "code" and (posing or _source(cell).strip() in test_sources):
            cell["outputs"] = []
    # Test cells nobody holds come back, as nbgrader's OverwriteCells(add_missing_cells) does.
    position = {gid: index for index, gid in holder.items()}
    ids = {cell.get("id") for cell in cells}
    for gid in order:
        if gid in position or not is_test(released[gid]):
            continue
        at = next((position[g] + 1 for g in reversed(order[:order.index(gid)]) if g in position),
                  0)
        cell = nbformat.from_dict(copy.deepcopy(released[gid]))
        cell["source"] = f"{MISSING_NOTE}\n{_source(cell)}"
        cell["outputs"] = []
        if notebook.get("nbformat_minor", 0) < 5:
            cell.pop("id", None)
        elif cell.get("id") in ids:
            cell["id"] = _new_cell_id(ids)
        ids.add(cell.get("id"))
        cells.insert(at, cell)
        position = {g: i + (i >= at) for g, i in position.items()} | {gid: at}
    notebook["cells"] = cells
    return notebook


# First line of a test cell put back (nbgrader's own add_missing_cells says the same).
MISSING_NOTE = "# This test cell was missing from the submission: the release's is back."


def _holders(cells: list[Any], released: dict[str, Any]) -> dict[int, str]:
    """Cell index -> the release grade id it holds (see restore_from_release)."""
    claims: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        gid = grade_id(cell)
        if gid in released:
            claims.setdefault(gid, []).append(index)
    holder: dict[int, str] = {}
    for gid, indexes in claims.items():
        source = _source(released[gid]).strip()
        chosen = next((i for i in indexes if _source(cells[i]).strip() == source), indexes[0])
        holder[chosen] = gid
    by_source: dict[str, str] = {}
    for gid, cell in released.items():
        if gid not in claims and not is_solution(cell):
            by_source.setdefault(_source(cell).strip(), gid)
    for index, cell in enumerate(cells):
        gid = by_source.get(_source(cell).strip())
        if gid is not None and grade_id(cell) not in released and gid not in holder.values():
            holder[index] = gid
    return holder


def _overwrite(cell: Any, released: Any) -> None:
    """`cell` as the release has it: its nbgrader metadata, and if locked its type and source;
    a test cell without outputs."""
    if not isinstance(cell.get("metadata"), dict):
        cell["metadata"] = {}
    cell["metadata"]["nbgrader"] = copy.deepcopy(released["metadata"]["nbgrader"])
    if not is_solution(released) or cell.get("cell_type") != released.get("cell_type"):
        cell["cell_type"] = released.get("cell_type")
        cell["source"] = released.get("source", "")
    if cell["cell_type"] == "code":
        if is_test(released) or not isinstance(cell.get("outputs"), list):
            cell["outputs"] = []
        cell.setdefault("execution_count", None)
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


def _new_cell_id(taken: set[Any]) -> str:
    from nbformat.corpus.words import generate_corpus_id

    while (new := generate_corpus_id()) in taken:
        pass
    return new


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def annotate(notebook: Any, result: SubmissionResult,
             grade_cells: Mapping[str, float] | None = None) -> Any:
    """`notebook` (nbformat v4) with each grade cell's outputs replaced by its report, in
    place, and no other output carrying the report's heading (nothing can pose as it).
    `grade_cells`: the release's grade ids and points; the cells carrying those ids are
    annotated, whatever else their metadata says (restore_from_release has made them the
    release's). None takes the notebook's own test cells and points (a copy nbgrader has
    already restored from its gradebook)."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            if _HEADING in _skeleton(_source(cell)):  # Markdown posing as a report
                cell["source"] = IMITATION
            continue
        cell_id = grade_id(cell)
        if grade_cells is not None:
            graded = cell_id in grade_cells
            max_points = grade_cells.get(cell_id) if graded else None
        else:
            graded = cell_id is not None and is_test(cell)
            try:
                max_points = float(nbgrader_metadata(cell).get("points"))
            except (TypeError, ValueError):
                max_points = None
        if graded:
            cell["outputs"] = [_stream(cell_report(result, cell_id, max_points))]
        elif isinstance(cell.get("outputs"), list):
            cell["outputs"] = [output for output in cell["outputs"] if not _poses(output)]
    return notebook


def _skeleton(text: str) -> str:
    """`text` reduced to what a reader sees: compatibility forms folded (NFKC), invisible
    format characters dropped, Cyrillic and Greek letters that look Latin read as the Latin
    letter their Unicode name gives (CYRILLIC SMALL LETTER A -> a), case folded, and only
    letters kept -- so a look-alike of the report's heading cannot pass for it."""
    letters = []
    for char in unicodedata.normalize("NFKC", text):
        if unicodedata.category(char) == "Cf":
            continue
        if not char.isascii() and char.isalpha():
            name = unicodedata.name(char, "")
            words = name.split()
            if words[:1] in (["CYRILLIC"], ["GREEK"]) and "LETTER" in words and \
                    len(words[-1]) == 1:
                char = words[-1]
        if char.isalpha():
            letters.append(char.casefold())
    return "".join(letters)


_HEADING = _skeleton(REPORT_HEADING)


def _poses(output: Any) -> bool:
    """An output whose text looks like the report's heading (any case, spacing, invisible
    characters or look-alike letters)."""
    return _HEADING in _skeleton(json.dumps(output, ensure_ascii=False)) or \
        _HEADING in _skeleton(_text_of(output))


def _text_of(output: Any) -> str:
    """The text of an output, its pieces joined (a stream's list of lines, a traceback)."""
    if not isinstance(output, dict):
        return ""
    parts: list[Any] = [output.get("text"), output.get("evalue"), output.get("traceback")]
    data = output.get("data")
    if isinstance(data, dict):
        parts.extend(data.values())
    return "".join(piece if isinstance(piece, str) else
                   "".join(p for p in piece if isinstance(p, str)) if isinstance(piece, list)
                   else "" for piece in parts)


def _stream(text: str) -> Any:
    import nbformat

    return nbformat.v4.new_output("stream", name="stdout", text=text)


def build_kept_notebook(submitted: Path, release_notebook: Any,
                        grade_cells: Mapping[str, float], result: SubmissionResult) -> Any:
    """The kept notebook of `result` from the submitted notebook at `submitted`: its nbgrader
    cells restored from the release, sanitized and annotated. Read without following a link,
    bounded. Raises KeptNotebookError saying why it cannot be built."""
    import nbformat

    from autograder.errors import SubmissionError
    from autograder.files import read_regular_file
    from autograder.sanitize import sanitize_notebook
    from autograder.submissions import MAX_NOTEBOOK_BYTES

    try:
        text = read_regular_file(submitted, MAX_NOTEBOOK_BYTES).decode("utf-8")
        raw = json.loads(text)
        # A v4 notebook is taken as it is (nbformat's schema validation would cost more than
        # the rest: the sanitizer keeps only what it knows); older ones are converted.
        notebook = (nbformat.from_dict(raw) if isinstance(raw, dict) and raw.get("nbformat") == 4
                    else nbformat.reads(text, as_version=4))
        notebook = restore_from_release(notebook, release_notebook)
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
    from autograder.files import write_atomic

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
