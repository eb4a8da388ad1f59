"""Gradebook exports: the full table as CSV, and the CSV that Canvas imports.

Student ids and reasons come from students. A spreadsheet runs a cell that starts with = + - @
(or a tab or carriage return before one) as a formula (`=HYPERLINK(...)` phones home), so every
text cell that starts so is written with a leading single quote, as OWASP advises for CSV
injection; the numbers we computed are written as numbers, a negative one included.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder.results import clean_text

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "canvas")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    """A text cell made inert for spreadsheets (cleaned, and quoted if it could be a formula);
    anything that is not text is returned as it is."""
    if not isinstance(value, str):
        return value
    value = clean_text(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def write_export(table: pd.DataFrame, assignment: str, fmt: str, path: Path) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if fmt == "csv":
        _safe_table(table).to_csv(partial)
    else:
        _write_canvas(table, assignment, partial)
    partial.replace(path)
    return path


def _safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its text cells and its index (student ids) neutralised; numeric
    columns untouched."""
    from pandas.api.types import is_numeric_dtype

    safe = table.copy()
    safe.index = safe.index.map(neutralised).rename(table.index.name)
    for column in safe.columns:
        if not is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(neutralised)
    return safe


def _write_canvas(table: pd.DataFrame, assignment: str, path: Path) -> None:
    """Canvas's gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, <assignment>;
    the second row gives the points possible, with Canvas's four leading spaces."""
    max_score = float(table["max_score"].max()) if len(table) else 0.0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment])
        writer.writerow(["    Points Possible", "", "", "", "", f"{max_score:g}"])
        for student_id, row in table.iterrows():
            student = neutralised(str(student_id))
            writer.writerow([student, "", "", student, "", f"{row['total']:g}"])
