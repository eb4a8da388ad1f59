"""Decide which code runs for a submission: the release's cells, with the student's answers in.

Like nbgrader's autograde, the instructor's version wins for every cell the student was not
meant to change: locked cells come from release/, whatever the submission holds. Test cells do
not run at all: their verdicts are decided outside the student's process. Code cells that the
student added run where the student put them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.execute.runner import Cell


class InvalidNotebook(Exception):
    """A notebook file that cannot be read as a Jupyter notebook."""


@dataclass
class Plan:
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)  # told to the student in the feedback


def read_notebook(path: Path) -> Any:
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:
        raise InvalidNotebook(f"{path.name} is not a readable Jupyter notebook: "
                              f"{str(error).splitlines()[0][:200]}") from None


def nbgrader_metadata(cell: Any) -> dict[str, Any]:
    metadata = cell.get("metadata", {}).get("nbgrader", {})
    return metadata if isinstance(metadata, dict) else {}


def is_solution(cell: Any) -> bool:
    return bool(nbgrader_metadata(cell).get("solution"))


def is_test(cell: Any) -> bool:
    metadata = nbgrader_metadata(cell)
    return bool(metadata.get("grade")) and not metadata.get("solution")


def grade_id(cell: Any) -> str | None:
    value = nbgrader_metadata(cell).get("grade_id")
    return value if isinstance(value, str) and value else None


def assemble(release: Any, submission: Any) -> Plan:
    release_code = [cell for cell in release.cells if cell.cell_type == "code"]
    known_ids = {grade_id(cell) for cell in release_code} - {None}
    answers: dict[str, str] = {}
    added_after: dict[str | None, list[str]] = {}  # student-added cells, by the cell before them
    previous: str | None = None
    for cell in submission.cells:
        if cell.get("cell_type") != "code":
            continue
        gid = grade_id(cell)
        if gid in known_ids:
            answers.setdefault(gid, _source(cell))
            previous = gid
        else:
            added_after.setdefault(previous, []).append(_source(cell))

    plan = Plan(cells=[])
    _add_student_cells(plan, added_after.get(None, []), "your cell at the top")
    for cell in release_code:
        gid = grade_id(cell)
        if is_test(cell):
            continue
        if is_solution(cell) and gid in answers:
            plan.cells.append(Cell(gid, answers[gid]))
        else:
            if is_solution(cell):
                plan.notes.append(f"The answer cell '{gid}' is missing from your notebook, "
                                  "so the empty version from the release was run instead.")
            plan.cells.append(Cell(gid or "release cell", _source(cell)))
        _add_student_cells(plan, added_after.get(gid, []), f"your cell after '{gid}'")
    return plan


def _add_student_cells(plan: Plan, sources: list[str], label: str) -> None:
    for source in sources:
        if source.strip():
            plan.cells.append(Cell(label, source))


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)
