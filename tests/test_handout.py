"""The student's side (issue 8, item 6): `autograder handout` gives the release notebook and a
README, and nothing else of the course; `make lab` opens that folder, not the repository."""

from __future__ import annotations

import shutil
import subprocess

import nbformat
import pytest

from autograder.assignment import AssignmentError
from autograder.course import Course
from autograder.handout import build_handout
from tests.conftest import AUTOGRADER, REPO, make_course, run_nbgrader


def test_the_handout_holds_the_release_notebook_and_a_readme_only(course, solution) -> None:
    done = subprocess.run([*AUTOGRADER, "handout", "backprop", "--course", str(course.root)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    handout = course.root / "handout" / "backprop"
    assert sorted(path.name for path in handout.rglob("*")) == ["README.md", "backprop.ipynb"]
    released = course.release_dir("backprop") / "backprop.ipynb"
    assert (handout / "backprop.ipynb").read_bytes() == released.read_bytes()

    text = "\n".join(path.read_text() for path in handout.iterdir())
    notebook = nbformat.read(handout / "backprop.ipynb", as_version=4)
    sources = [cell.source for cell in notebook.cells]
    for answer in solution.values():  # no answer of the solution, whole
        assert not [source for source in sources if answer.strip() in source]
    assert "BEGIN SOLUTION" not in text and "NotImplementedError" in text
    for secret in ("hidden_tests", "draw_probes", "reference_mlp", "step_outcomes",
                   "ORDER_MISTAKES", "examples/"):
        assert secret not in text, secret
    for example in (REPO / "examples" / "submitted").glob("*/backprop/backprop.ipynb"):
        if example.parent.parent.name != "blank":
            assert example.read_bytes() != (handout / "backprop.ipynb").read_bytes()

    readme = (handout / "README.md").read_text()
    for told in ("jupyter lab backprop.ipynb", "self-check", "Restart Kernel and Run All",
                 "inputs you never see", "nbgrader submit backprop", "LMS"):
        assert told in readme, told


def test_a_release_that_still_holds_a_solution_is_not_handed_out(tmp_path) -> None:
    shutil.copy(REPO / "nbgrader_config.py", tmp_path)
    release = tmp_path / "release" / "backprop"
    release.mkdir(parents=True)
    shutil.copy(REPO / "source" / "backprop" / "backprop.ipynb", release)  # the instructor's
    with pytest.raises(AssignmentError, match="BEGIN SOLUTION"):
        build_handout(Course.load(tmp_path), "backprop")
    assert not (tmp_path / "handout").exists()


def test_make_lab_opens_the_handout_not_the_repository() -> None:
    plan = subprocess.run(["make", "-n", "lab"], cwd=REPO, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    lab = [line for line in plan.stdout.splitlines() if "jupyter lab" in line]
    assert len(lab) == 1 and lab[0].startswith("cd handout/backprop && ")
    assert "release/" not in lab[0]
    assert "autograder handout backprop" in plan.stdout


def test_the_handout_says_the_due_date_set_in_nbgrader(tmp_path) -> None:
    course = make_course(tmp_path)
    assert "Due:" not in (build_handout(course, "backprop") / "README.md").read_text()
    run_nbgrader(course, "db", "assignment", "add", "backprop",
                 "--duedate=2026-11-20 17:00:00 UTC")
    readme = (build_handout(course, "backprop") / "README.md").read_text()
    assert "**Due: Friday 20 November 2026, 17:00 UTC.**" in readme
