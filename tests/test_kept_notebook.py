"""The notebook kept for formgrader says, in each grade cell, what the hidden tests found:
nothing the student printed there can pose as the grader's verdict."""

from __future__ import annotations

import copy

import nbformat

from autograder.assignment import grade_cells_of
from autograder.kept_notebook import REPORT_HEADING, annotate
from autograder.results import SubmissionResult
from autograder.results import TestResult as Check


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
