"""Shared fixtures: a throw-away copy of the course, released once with the real nbgrader."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import commands
from autograder.author import solution_answers, with_answers
from autograder.course import Course
from autograder.results import SubmissionResult

REPO = Path(__file__).resolve().parent.parent
AUTOGRADER = [sys.executable, "-m", "autograder.cli"]
COURSE_FILES = ("nbgrader_config.py", "source", "hidden_tests")


def train_step_calling(*calls: str) -> str:
    """A student's train_step: the forward pass and loss, then `calls` in this order."""
    body = "".join(f"    {call}\n" for call in calls)
    return ("def train_step(model, optimizer, criterion, X, y):\n"
            "    loss = criterion(model(X), y)\n" + body + "    return loss\n")


def make_course(root: Path, assignment: str = "backprop") -> Course:
    """Copy the course's inputs to `root` and release `assignment` there with nbgrader."""
    for name in COURSE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    done = subprocess.run([*AUTOGRADER, "--course", str(root), "release", assignment],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return Course.load(root)


@pytest.fixture(scope="session")
def course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    return make_course(tmp_path_factory.mktemp("course"))


@pytest.fixture(scope="session")
def release_notebook(course: Course):
    return nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)


@pytest.fixture(scope="session")
def solution(course: Course) -> dict[str, str]:
    source = nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb", as_version=4)
    return solution_answers(source)


def write_submissions(folder: Path, notebooks: dict[str, object],
                      assignment: str = "backprop") -> Path:
    """nbgrader's submitted/ layout: <folder>/<student>/<assignment>/<assignment>.ipynb."""
    for student, notebook in notebooks.items():
        target = folder / student / assignment
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{assignment}.ipynb"
        if isinstance(notebook, str | bytes):
            path.write_bytes(notebook if isinstance(notebook, bytes) else notebook.encode())
        else:
            nbformat.write(notebook, path)
    return folder


def grade_answers(course: Course, release_notebook, tmp_path: Path,
                  submissions: dict[str, dict[str, str] | str | bytes], timeout: float = 60,
                  workers: int | None = None,
                  timestamps: dict[str, bytes] | None = None) -> dict[str, SubmissionResult]:
    """Grade {student: answers-by-grade-id (or raw notebook text)} in one batch, for real."""
    notebooks = {student: (answers if isinstance(answers, str | bytes)
                           else with_answers(release_notebook, answers))
                 for student, answers in submissions.items()}
    folder = write_submissions(tmp_path / "incoming", notebooks)
    for student, stamp in (timestamps or {}).items():
        (folder / student / "backprop" / "timestamp.txt").write_bytes(stamp)
    results = commands.grade(course, "backprop", folder, timeout=timeout, workers=workers)
    return {result.student_id: result for result in results}
