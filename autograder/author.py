"""Authoring helpers: the answers in an instructor notebook, and a notebook with answers in.

Used to build example submissions and to check that the release, with the solutions pasted
back, passes its own visible checks in a real kernel.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from autograder.assemble import grade_id, is_solution

_SOLUTION_REGION = re.compile(
    r"^([ \t]*)### BEGIN SOLUTION[ \t]*\n(.*?)^[ \t]*### END SOLUTION[ \t]*\n?",
    re.MULTILINE | re.DOTALL)


def solution_answers(source_notebook: Any) -> dict[str, str]:
    """grade_id -> the answer cell's source as a student would write it (markers removed)."""
    answers = {}
    for cell in source_notebook.cells:
        if cell.cell_type == "code" and is_solution(cell):
            answers[grade_id(cell)] = _SOLUTION_REGION.sub(lambda m: m.group(2), cell.source)
    return answers


def with_answers(release_notebook: Any, answers: dict[str, str]) -> Any:
    """A copy of the release notebook with answer cells replaced by `answers` (by grade_id)."""
    notebook = copy.deepcopy(release_notebook)
    unknown = set(answers) - {grade_id(c) for c in notebook.cells if is_solution(c)}
    if unknown:
        raise KeyError(f"no answer cell named {', '.join(sorted(unknown))} in the notebook")
    for cell in notebook.cells:
        if is_solution(cell) and grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    return notebook
