"""Decide which code runs for a submission: the release's cells, with the student's answers in.

Like nbgrader's autograde, the instructor's version wins for every cell the student was not
meant to change: locked cells come from release/, whatever the submission holds. Test cells do
not run at all: their verdicts are decided outside the student's process. Code cells that the
student added run where the student put them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.errors import UserError
from autograder.execute.runner import Cell


class InvalidNotebook(UserError):
    """A notebook file that cannot be read as a Jupyter notebook."""


@dataclass
class Plan:
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)  # told to the student in the feedback


def read_notebook(path: Path) -> Any:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise InvalidNotebook(f"{path.name} cannot be read: {error.strerror}") from None
    return parse_notebook(content, path.name)


def parse_notebook(content: bytes, name: str) -> Any:
    """A notebook from its bytes; InvalidNotebook names `name` and the problem."""
    import nbformat

    try:
        notebook = nbformat.reads(content.decode("utf-8"), as_version=4)
    except Exception as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise InvalidNotebook(f"{name} is not a readable Jupyter notebook: "
                              f"{first_line[:200]}") from None
    cells = notebook.get("cells")
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        raise InvalidNotebook(f"{name} is not a readable Jupyter notebook: "
                              "it has no list of cells")
    return notebook


def nbgrader_metadata(cell: Any) -> dict[str, Any]:
    metadata = cell.get("metadata")
    metadata = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def is_solution(cell: Any) -> bool:
    return bool(nbgrader_metadata(cell).get("solution"))


def is_test(cell: Any) -> bool:
    metadata = nbgrader_metadata(cell)
    return bool(metadata.get("grade")) and not metadata.get("solution")


def grade_id(cell: Any) -> str | None:
    value = nbgrader_metadata(cell).get("grade_id")
    return value if isinstance(value, str) and value else None


def part_titles(release: Any) -> dict[str, str]:
    """grade_id of each graded test cell -> the heading above it in the release notebook
    (e.g. "Part 1: Watching gradients"): what students call that part."""
    titles: dict[str, str] = {}
    major = minor = ""  # the last heading of level 1 or 2 ("## Part 1: ..."), of any level
    for cell in release.cells:
        if cell.get("cell_type") == "markdown":
            for line in _source(cell).splitlines():
                text = line.lstrip("#").strip()
                if line.startswith("#") and text:
                    minor = text
                    if len(line) - len(line.lstrip("#")) <= 2:
                        major = text
        elif is_test(cell) and grade_id(cell) and (major or minor):
            titles[grade_id(cell)] = major or minor
    return titles


def assemble(release: Any, submission: Any) -> Plan:
    """The cells to run, in the student's order, as Jupyter's "run all" would run them, except:

    * a cell carrying the grade_id of a locked release cell runs the release's source;
    * test cells do not run (their verdicts are decided outside the student's process);
    * a locked release cell the student deleted runs anyway, after the release cell before it.
    """
    release_code = {grade_id(c): c for c in release.cells if c.cell_type == "code" and grade_id(c)}
    inferred = _matched_by_content(release_code, submission)
    plan = Plan(cells=[])
    placed: dict[str, int] = {}  # release grade_id -> position of its last cell in the plan
    previous_label = "the top of your notebook"
    for index, cell in enumerate(submission.cells):
        if cell.get("cell_type") != "code":
            continue
        gid = inferred.get(index, grade_id(cell))
        released = release_code.get(gid) if gid else None
        if released is None:  # a cell the student added: it runs as written
            if _source(cell).strip():
                plan.cells.append(Cell(f"your cell after {previous_label}", _source(cell)))
            continue
        previous_label = f"'{gid}'"
        if is_test(released):
            continue
        if is_solution(released):
            plan.cells.append(Cell(gid, _source(cell)))  # a copied answer cell runs twice, too
        elif gid not in placed:
            plan.cells.append(Cell(gid, _source(released), locked=True))
        placed[gid] = len(plan.cells)
    _restore_deleted_cells(plan, release, placed)
    return plan


_DEFINES = re.compile(r"^(?:async[ \t]+)?def[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def _defined_functions(source: str) -> set[str]:
    """Names of the functions a cell defines at its top level (read, never run)."""
    return set(_DEFINES.findall(source))


def _matched_by_content(release_code: dict[str, Any], submission: Any) -> dict[int, str]:
    """Code cells that lost their nbgrader metadata (cells copied into a fresh notebook), each
    matched to the release cell it stands for: a locked or self-check cell by its source, an
    answer cell by the functions it defines. Only for release cells the submission does not
    hold under their own grade_id; each matched once, the first cell in order."""
    present = {grade_id(cell) for cell in submission.cells if grade_id(cell) in release_code}
    by_source: dict[str, str] = {}
    by_functions: dict[str, set[str]] = {}
    for gid, cell in release_code.items():
        if gid in present:
            continue
        if is_solution(cell):
            functions = _defined_functions(_source(cell))
            if functions:
                by_functions[gid] = functions
        else:
            by_source.setdefault(_source(cell).strip(), gid)
    matched: dict[int, str] = {}
    taken: set[str] = set()
    for index, cell in enumerate(submission.cells):
        if cell.get("cell_type") != "code" or grade_id(cell) in release_code:
            continue
        source = _source(cell)
        gid = by_source.get(source.strip())
        if gid is None:
            defined = _defined_functions(source)
            gid = next((g for g, functions in by_functions.items()
                        if g not in taken and functions <= defined), None)
        if gid is not None and gid not in taken:
            matched[index] = gid
            taken.add(gid)
    return matched


def _restore_deleted_cells(plan: Plan, release: Any, placed: dict[str, int]) -> None:
    """Locked cells the student deleted run anyway; a deleted answer cell is only reported."""
    insert_at, inserted = 0, 0
    for cell in release.cells:
        gid = grade_id(cell)
        if cell.cell_type != "code" or gid is None or is_test(cell):
            continue
        if gid in placed:
            insert_at = placed[gid] + inserted
        elif is_solution(cell):
            functions = " or ".join(sorted(_defined_functions(_source(cell))))
            defines = f" (no cell of yours defines {functions})" if functions else ""
            plan.notes.append(f"The answer cell '{gid}' is missing from your notebook{defines}; "
                              "only the cells you wrote yourself ran in its place.")
        else:
            plan.cells.insert(insert_at, Cell(gid, _source(cell), locked=True))
            insert_at += 1
            inserted += 1


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)
