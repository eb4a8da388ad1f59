"""Messages that point at the cause, not at its echoes (trusted side).

What comes back from the student's process says what failed where; read together with the
cells that ran, some failures have a cause elsewhere: a function whose cell has a syntax error
was never defined, so every probe that calls it fails with a NameError. That is said once, at
the cell, and the tests that needed the function point there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autograder.execute.runner import Cell

# IPython's name for a cell ("<ipython-input-6-1f2e...>"): meaningless to a student.
_IPYTHON_FILE = re.compile(r"<ipython-input-\d+-[0-9a-f]+>")
_UNDEFINED = re.compile(r"NameError: name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")
_DEFINED = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
_SYNTAX = ("SyntaxError", "IndentationError", "TabError")

# A failure that is an echo of an error reported elsewhere: the test's own hint would mislead.
SEE_ABOVE = "(see above)"


def without_ipython_names(text: str) -> str:
    return _IPYTHON_FILE.sub("your cell", text)


def cells_with_syntax_errors(cells: Iterable[Cell],
                             reports: Iterable[dict[str, Any]]) -> dict[str, str]:
    """function name -> the cell (its name) that defines it and could not be parsed."""
    sources: dict[str, list[str]] = {}
    for cell in cells:
        sources.setdefault(cell.name, []).append(cell.source)
    undefined: dict[str, str] = {}
    for report in reports:
        error = report.get("error") or ""
        if not isinstance(error, str) or not error.startswith(_SYNTAX):
            continue
        for source in sources.get(report.get("name"), []):
            for function in _DEFINED.findall(source):
                undefined.setdefault(function, report["name"])
    return undefined


def cells_not_run(cells: Iterable[Cell], reports: Iterable[dict[str, Any]]) -> dict[str, str]:
    """function name -> the cell that defines it and never ran (the notebook's time ran out
    before it)."""
    ran = {report.get("name") for report in reports}
    return {function: cell.name for cell in cells if cell.name not in ran
            for function in _DEFINED.findall(cell.source)}


def _explained(why: str, broken: dict[str, str], not_run: dict[str, str]) -> str:
    match = _UNDEFINED.search(why)
    function = match.group(1) if match else None
    if function in broken:
        cell = broken[function]
        where = "its cell" if cell == function else f"its cell '{cell}'"
        why = f"{function} is not defined because {where} has a syntax error {SEE_ABOVE}"
    elif function in not_run:
        cell = not_run[function]
        where = "its cell" if cell == function else f"its cell '{cell}'"
        why = f"not run: {function} is not defined because {where} never ran {SEE_ABOVE}"
    return without_ipython_names(why)


def explain_undefined(failures: dict[str, str], cells: list[Cell],
                      reports: list[dict[str, Any]]) -> dict[str, str]:
    """`failures` (probe -> why it has no value), where a NameError for a function whose cell
    has a syntax error, or never ran, says so instead; IPython's cell names replaced."""
    broken = cells_with_syntax_errors(cells, reports)
    not_run = cells_not_run(cells, reports)
    return {probe: _explained(why, broken, not_run) for probe, why in failures.items()}


def explain_cell_errors(reports: list[dict[str, Any]],
                        cells: list[Cell]) -> list[dict[str, str]]:
    """The errors of the cells that ran, [{"cell", "error"}] in order: the syntax error is
    told where it is; a later cell that failed only because of it (calling the function it
    would have defined) points there."""
    broken = cells_with_syntax_errors(cells, reports)
    not_run = cells_not_run(cells, reports)
    return [{"cell": report["name"], "error": _explained(report["error"], broken, not_run)}
            for report in reports if report.get("error")]

