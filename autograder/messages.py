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


def explain_undefined(failures: dict[str, str], cells: Iterable[Cell],
                      reports: list[dict[str, Any]]) -> dict[str, str]:
    """`failures` (probe -> why it has no value), where a NameError for a function whose cell
    has a syntax error says so instead; IPython's cell names replaced throughout."""
    broken = cells_with_syntax_errors(cells, reports)
    explained = {}
    for probe, why in failures.items():
        match = _UNDEFINED.search(why)
        if match and match.group(1) in broken:
            function, cell = match.group(1), broken[match.group(1)]
            where = "its cell" if cell == function else f"its cell '{cell}'"
            why = f"{function} is not defined because {where} has a syntax error {SEE_ABOVE}"
        explained[probe] = without_ipython_names(why)
    return explained

