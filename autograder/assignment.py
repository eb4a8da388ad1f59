"""An assignment as the grader knows it: its released notebook and its hidden tests, checked
against each other before anything is graded."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import nbformat

from autograder.assemble import (
    InvalidNotebook,
    grade_id,
    is_test,
    nbgrader_metadata,
    part_titles,
    read_notebook,
)
from autograder.course import Course
from autograder.errors import UserError
from autograder.verify.hidden import HiddenTests


class AssignmentError(UserError):
    """The assignment is not ready to grade; the message says what is missing."""


@dataclass
class Assignment:
    name: str
    notebook_name: str  # without .ipynb, as nbgrader names notebooks
    release_notebook: Any
    grade_cells: dict[str, float]  # grade_id -> points, from the release notebook
    hidden: HiddenTests
    secret: bytes = b""  # the course's: draws each submission's unseen inputs

    @classmethod
    def load(cls, course: Course, name: str) -> Assignment:
        path = released_notebook(course, name)
        try:
            release_notebook = read_notebook(path)
        except InvalidNotebook as error:
            raise AssignmentError(str(error)) from None
        grade_cells = grade_cells_of(release_notebook)
        if not grade_cells:
            raise AssignmentError(f"{path} has no graded test cells")
        hidden = HiddenTests.load(course.hidden_dir(name), name)
        hidden.check_against(grade_cells, path.name)
        return cls(name, path.stem, release_notebook, grade_cells, hidden,
                   course.secret())

    @property
    def max_score(self) -> float:
        return sum(self.grade_cells.values())

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the release or the hidden tests change: results must be redone."""
        digest = hashlib.sha256()
        digest.update(nbformat.writes(self.release_notebook).encode())
        for path in (self.hidden.probes_file, self.hidden.probes_file.with_name("tests.py")):
            digest.update(path.read_bytes())
        return digest.hexdigest()


    @cached_property
    def part_titles(self) -> dict[str, str]:
        """{grade id: the title of the notebook part it belongs to}, read once."""
        return part_titles(self.release_notebook)

    def seed_for(self, notebook: bytes) -> int:
        """The seed of one notebook's unseen inputs: the same notebook always gets the same
        inputs (a rerun, a resume and a regrade give the same score), and nobody without the
        course's secret can know them."""
        message = self.name.encode() + b"\0" + hashlib.sha256(notebook).digest()
        return int.from_bytes(hmac.new(self.secret, message, "sha256").digest()[:8], "big")


def released_notebook(course: Course, name: str) -> Path:
    """The one notebook of release/<name>/ (AssignmentError if there is none, or several)."""
    release_dir = course.release_dir(name)
    notebooks = sorted(release_dir.glob("*.ipynb")) if release_dir.is_dir() else []
    if not notebooks:
        raise AssignmentError(f"no released notebook in {release_dir}: "
                              f"run `autograder release {name}` first")
    if len(notebooks) > 1:
        raise AssignmentError(f"{release_dir} holds {len(notebooks)} notebooks; "
                              "assignments with one notebook are supported")
    return notebooks[0]


def grade_cells_of(notebook: Any) -> dict[str, float]:
    return {grade_id(cell): float(nbgrader_metadata(cell).get("points", 0))
            for cell in notebook.cells if is_test(cell) and grade_id(cell)}
