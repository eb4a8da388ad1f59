"""Which cells run for a submission: the student's order, the release's locked cells."""

from __future__ import annotations

import copy

import nbformat

from autograder.assemble import assemble, grade_id
from autograder.author import with_answers


def _names(plan) -> list[str]:
    return [cell.name for cell in plan.cells]


def _index(notebook, gid: str) -> int:
    return next(i for i, c in enumerate(notebook.cells) if grade_id(c) == gid)


def test_the_release_runs_its_code_cells_but_not_its_checks(release_notebook) -> None:
    plan = assemble(release_notebook, release_notebook)
    assert _names(plan) == ["imports", "forward_backward", "part1_run", "chain_rule",
                            "part2_run", "train_step", "train", "part3_run"]
    assert plan.notes == []


def test_cells_the_student_added_run_where_they_are_even_after_a_check(release_notebook,
                                                                        solution) -> None:
    notebook = with_answers(release_notebook, solution)
    notebook.cells.insert(_index(notebook, "check_forward_backward") + 1,
                          nbformat.v4.new_code_cell("helper = 1"))
    notebook.cells.append(nbformat.v4.new_code_cell("at_the_end = 2"))
    plan = assemble(release_notebook, notebook)
    sources = [cell.source for cell in plan.cells]
    assert sources.index("helper = 1") == _names(plan).index("part1_run") + 1
    assert sources[-1] == "at_the_end = 2"
    assert plan.cells[-1].name == "your cell after 'check_train'"


def test_locked_cells_run_the_release_version(release_notebook, solution) -> None:
    notebook = with_answers(release_notebook, solution)
    notebook.cells[_index(notebook, "train")].source = "def train(*a):\n    return None\n"
    plan = assemble(release_notebook, notebook)
    train = next(cell for cell in plan.cells if cell.name == "train")
    assert "torch.manual_seed(seed)" in train.source


def test_a_deleted_locked_cell_runs_in_its_place(release_notebook, solution) -> None:
    notebook = with_answers(release_notebook, solution)
    del notebook.cells[_index(notebook, "imports")]
    del notebook.cells[_index(notebook, "train")]
    plan = assemble(release_notebook, notebook)
    assert _names(plan) == ["imports", "forward_backward", "part1_run", "chain_rule",
                            "part2_run", "train_step", "train", "part3_run"]


def test_a_retyped_answer_is_not_overwritten_by_the_empty_one(release_notebook,
                                                              solution) -> None:
    notebook = with_answers(release_notebook, solution)
    position = _index(notebook, "forward_backward")
    retyped = nbformat.v4.new_code_cell(solution["forward_backward"])
    notebook.cells[position] = retyped  # same code, but the cell lost its nbgrader metadata
    plan = assemble(release_notebook, notebook)
    assert "NotImplementedError" not in "".join(cell.source for cell in plan.cells)
    # Matched by the function it defines, it is that answer cell, in its place: nothing is
    # said to be missing (issue 8: a 10/10 notebook was told "answer cell ... is missing").
    assert plan.notes == []
    names = [cell.name for cell in plan.cells]
    assert names.index("forward_backward") == names.index("imports") + 1


def test_a_deleted_answer_is_reported_with_the_function_it_defines(release_notebook,
                                                                   solution) -> None:
    notebook = with_answers(release_notebook, solution)
    del notebook.cells[_index(notebook, "forward_backward")]
    plan = assemble(release_notebook, notebook)
    assert plan.notes == ["The answer cell 'forward_backward' is missing from your notebook "
                          "(no cell of yours defines forward_backward); only the cells you "
                          "wrote yourself ran in its place."]


def test_a_copied_answer_cell_runs_twice_the_later_one_last(release_notebook,
                                                            solution) -> None:
    notebook = with_answers(release_notebook, solution)
    position = _index(notebook, "chain_rule")
    copy_cell = copy.deepcopy(notebook.cells[position])
    copy_cell.source = "def chain_rule(x_value):\n    return 'second'\n"
    notebook.cells.insert(position + 1, copy_cell)
    plan = assemble(release_notebook, notebook)
    runs = [cell.source for cell in plan.cells if cell.name == "chain_rule"]
    assert len(runs) == 2 and "second" in runs[1]


def test_malformed_metadata_is_treated_as_a_cell_of_the_student(release_notebook) -> None:
    notebook = copy.deepcopy(release_notebook)
    notebook.cells.append(nbformat.from_dict({"cell_type": "code", "metadata": ["odd"],
                                              "source": ["x = 1"], "outputs": [],
                                              "execution_count": None}))
    plan = assemble(release_notebook, notebook)
    assert plan.cells[-1].source == "x = 1"
