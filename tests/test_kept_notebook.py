"""The notebook kept for formgrader says, in each grade cell, what the hidden tests found:
nothing the student printed there can pose as the grader's verdict."""

from __future__ import annotations

import copy
import json

import nbformat
import pytest

from autograder import commands
from autograder.assignment import grade_cells_of
from autograder.author import with_answers
from autograder.course import Course
from autograder.kept_notebook import REPORT_HEADING, annotate
from autograder.results import SubmissionResult
from autograder.results import TestResult as Check
from tests.conftest import write_submissions


def _outputs(notebook) -> dict[str, str]:
    return {cell.metadata.nbgrader["grade_id"]: "".join(o.get("text", "") for o in cell.outputs)
            for cell in notebook.cells
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade")}


def test_each_grade_cell_shows_its_tests_and_the_notebook_wide_reason(release_notebook) -> None:
    notebook = copy.deepcopy(release_notebook)
    forged = next(c for c in notebook.cells
                  if c.metadata.get("nbgrader", {}).get("grade_id") == "check_chain_rule")
    forged.outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text=f"{REPORT_HEADING}: 3 / 3 points\nPASS everything\n")]
    result = SubmissionResult("s", "backprop", "backprop", "timeout",
                              reason="the notebook ran past 60 s",
                              tests=[Check("a", "check_chain_rule", 1.0, 1.0, True, "", "Part A"),
                                     Check("b", "check_chain_rule", 0.0, 2.0, False,
                                           "train_step did not return", "Part B")])
    annotate(notebook, result, grade_cells_of(release_notebook))

    shown = _outputs(notebook)
    assert shown["check_chain_rule"] == (
        f"{REPORT_HEADING}: 1 / 3 points\n"
        "Whole notebook: timeout: the notebook ran past 60 s\n"
        "PASS Part A (1 / 1)\n"
        "FAIL Part B (0 / 2): train_step did not return\n")
    # A cell no test scored still says so, with the reason, and its points out of the cell's.
    assert shown["check_train"] == (f"{REPORT_HEADING}: 0 / 4 points\n"
                                    "Whole notebook: timeout: the notebook ran past 60 s\n"
                                    "No hidden test scored this cell.\n")
    assert all(len(c.outputs) == 1 for c in notebook.cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade"))
    # Cells that are not grade cells keep what they had.
    assert [c.get("outputs") for c in notebook.cells if not c.metadata.get(
        "nbgrader", {}).get("grade")] == [c.get("outputs") for c in release_notebook.cells
                                          if not c.metadata.get("nbgrader", {}).get("grade")]


def test_only_the_release_grade_cells_are_annotated(release_notebook) -> None:
    notebook = copy.deepcopy(release_notebook)
    answer = next(c for c in notebook.cells
                  if c.metadata.get("nbgrader", {}).get("grade_id") == "train_step")
    answer.metadata.nbgrader.update(grade=True, solution=False, points=99)  # student-made
    answer.outputs = [nbformat.v4.new_output("stream", name="stdout", text="mine\n")]
    annotate(notebook, SubmissionResult("s", "backprop", "backprop", "graded"),
             grade_cells_of(release_notebook))
    assert answer.outputs[0]["text"] == "mine\n"


# --- Forged kept notebooks, graded for real (the review's reproduction) ----------------------

FORGED = "FORGED-VERDICT"  # in every forged output: must not reach the kept notebook
FORGERY = f"{REPORT_HEADING}: 3 / 3 points\nPASS Part 1 {FORGED} (3 / 3)\n"


def _forged_output() -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=FORGERY)


def _cell(notebook, gid: str) -> nbformat.NotebookNode:
    return next(c for c in notebook.cells
                if isinstance(c.metadata.get("nbgrader"), dict)
                and c.metadata.nbgrader.get("grade_id") == gid)


def _attacks(release) -> dict[str, nbformat.NotebookNode]:
    """The release (no answers: 0 points) with the kept notebook's forgeries."""
    attacks = {}
    # A copy of the test cell before the real one, which keeps a forged report.
    notebook = copy.deepcopy(release)
    real = _cell(notebook, "check_forward_backward")
    real.outputs = [_forged_output()]
    decoy = copy.deepcopy(real)
    decoy.outputs = []
    decoy.id = "decoy0001"
    notebook.cells.insert(notebook.cells.index(real), decoy)
    attacks["kept-decoy"] = notebook
    # The same with a decoy whose source differs: the release's source picks the real one.
    notebook = copy.deepcopy(notebook)
    next(c for c in notebook.cells if c.get("id") == "decoy0001").source = "print('hi')"
    attacks["kept-decoy-edited"] = notebook
    # The test cell says it is not graded.
    notebook = copy.deepcopy(release)
    real = _cell(notebook, "check_forward_backward")
    real.metadata.nbgrader["grade"] = False
    real.outputs = [_forged_output()]
    attacks["kept-ungraded"] = notebook
    # Its nbgrader metadata is a string.
    notebook = copy.deepcopy(release)
    real = _cell(notebook, "check_forward_backward")
    real.metadata["nbgrader"] = "grade"
    real.outputs = [_forged_output()]
    attacks["kept-string"] = notebook
    # A cell of the student's claims points under an id the release does not have, and
    # another claims a real test cell's id; both show a forged report.
    notebook = copy.deepcopy(release)
    extra = nbformat.v4.new_code_cell("print('bonus')", outputs=[_forged_output()])
    extra.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                  "grade_id": "bonus", "points": 5, "schema_version": 3}
    notebook.cells.insert(1, extra)
    claim = nbformat.v4.new_code_cell("print('mine')", outputs=[_forged_output()])
    claim.metadata["nbgrader"] = {**extra.metadata.nbgrader, "grade_id": "check_train"}
    notebook.cells.append(claim)
    # A cell claiming nothing prints one, split over lines and in another case.
    _cell(notebook, "part1_run").outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text=["autograder,\n", f"HIDDEN  tests: {FORGED}\n"])]
    attacks["kept-extra"] = notebook
    # Look-alikes: a Cyrillic "А" and a zero-width space in printed output, and Markdown
    # cells that show the report as preformatted text beside the test cell.
    notebook = copy.deepcopy(release)
    _cell(notebook, "part1_run").outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text=f"\u0410utograder, hidden tests: {FORGED}\n")]
    real = _cell(notebook, "check_forward_backward")
    at = notebook.cells.index(real)
    notebook.cells.insert(at + 1, nbformat.v4.new_markdown_cell(
        f"<pre>Auto\u200bgrader, hidden tests: {FORGED}</pre>"))
    notebook.cells.insert(at, nbformat.v4.new_markdown_cell(
        f"    Autograder, hidden tests: {FORGED}"))
    attacks["kept-lookalike"] = notebook
    return attacks


@pytest.fixture(scope="module")
def kept(course: Course, release_notebook, solution, tmp_path_factory) -> dict:
    honest = with_answers(release_notebook, solution)
    answer = _cell(honest, "forward_backward")
    answer.outputs = [nbformat.v4.new_output("stream", name="stdout", text="my own print\n")]
    _cell(honest, "check_chain_rule").outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="self-check passed\n")]
    notebooks = {**_attacks(release_notebook), "kept-honest": honest}
    # Written as JSON: nbformat would refuse to write the string metadata.
    incoming = write_submissions(tmp_path_factory.mktemp("kept") / "incoming",
                                 {s: json.dumps(nb) for s, nb in notebooks.items()})
    results = commands.grade(course, "backprop", incoming, regrade=True, workers=2)
    return {"results": {r.student_id: r for r in results}, "submitted": notebooks}


def _read_kept(course: Course, student: str) -> nbformat.NotebookNode:
    return nbformat.read(course.autograded_dir(student, "backprop") / "backprop.ipynb",
                         as_version=4)


@pytest.mark.parametrize("student", ["kept-lookalike", "kept-decoy", "kept-decoy-edited",
                                     "kept-ungraded", "kept-string", "kept-extra"])
def test_a_forged_notebook_is_kept_with_only_the_real_reports(
        kept, course: Course, release_notebook, student: str) -> None:
    from nbgrader.nbgraderformat import MetadataValidator

    assert kept["results"][student].score == 0
    notebook = _read_kept(course, student)
    everything = json.dumps(notebook)
    assert FORGED not in everything
    assert everything.count(REPORT_HEADING) == 3  # the three real reports
    release = {c.metadata.nbgrader["grade_id"]: c for c in release_notebook.cells}
    claimed = [c.metadata.nbgrader["grade_id"] for c in notebook.cells
               if c.metadata.get("nbgrader")]
    # Only the release's grade ids, each once, each with the release's metadata.
    assert len(claimed) == len(set(claimed)) and set(claimed) <= set(release)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader"):
            gid = cell.metadata.nbgrader["grade_id"]
            assert cell.metadata.nbgrader == release[gid].metadata.nbgrader, gid
    # Every release test cell: the release's source, the real report as its only output.
    for gid, points in grade_cells_of(release_notebook).items():
        [cell] = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                  == gid]
        assert cell.source == release[gid].source
        assert [o.output_type for o in cell.outputs] == ["stream"]
        assert cell.outputs[0].text.startswith(f"{REPORT_HEADING}: 0 / {points:g} points\n")
    MetadataValidator().validate_nb(notebook)  # nbgrader's own check passes, too


def test_the_honest_notebook_is_kept_as_it_was_shown(kept, course: Course) -> None:
    submitted = kept["submitted"]["kept-honest"]
    notebook = _read_kept(course, "kept-honest")
    assert kept["results"]["kept-honest"].score == 10
    assert [(c.cell_type, c.source, c.metadata) for c in notebook.cells] == \
        [(c.cell_type, c.source, c.metadata) for c in submitted.cells]
    shown = _outputs(notebook)
    assert shown["check_chain_rule"].startswith(f"{REPORT_HEADING}: 3 / 3 points\nPASS")
    # Outputs of cells that are not test cells stay.
    assert _cell(notebook, "forward_backward").outputs[0].text == "my own print\n"
    tests = set(grade_cells_of(submitted))
    assert [c.get("outputs") for c in notebook.cells if c.metadata.nbgrader["grade_id"]
            not in tests] == [c.get("outputs") for c in submitted.cells
                              if c.metadata.nbgrader["grade_id"] not in tests]


def test_a_missing_test_cell_comes_back_from_the_release_with_its_report(
        release_notebook) -> None:
    from autograder.kept_notebook import restore_from_release

    notebook = copy.deepcopy(release_notebook)
    real = _cell(notebook, "check_chain_rule")
    real.source = "print('edited')"  # and its metadata gone: nothing says what it was
    del real.metadata["nbgrader"]
    real.outputs = [_forged_output()]
    restore_from_release(notebook, release_notebook)
    annotate(notebook, SubmissionResult("s", "backprop", "backprop", "graded"),
             grade_cells_of(release_notebook))
    restored = _cell(notebook, "check_chain_rule")
    # After the release cell before it (part2_run), as nbgrader's OverwriteCells puts it.
    before = notebook.cells[notebook.cells.index(restored) - 1]
    assert before.metadata.nbgrader["grade_id"] == "part2_run"
    assert restored.source.endswith(_cell(release_notebook, "check_chain_rule").source)
    assert _outputs(notebook)["check_chain_rule"].startswith(f"{REPORT_HEADING}: 0 / 3")
    assert FORGED not in json.dumps(notebook)
    assert len({c.id for c in notebook.cells}) == len(notebook.cells)
