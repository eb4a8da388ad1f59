"""Gradebook exports: the full table as CSV (the LMSs' own files: autograder.lms.gradebook_files).

Student ids and reasons come from students. A spreadsheet runs a cell that starts with = + - @
(or a tab or carriage return before one) as a formula (`=HYPERLINK(...)` phones home), so every
text cell that starts so is written with a leading single quote, as OWASP advises for CSV
injection; the numbers we computed are written as numbers, a negative one included. A cell of
an LMS template that cannot be a formula (a number, a lone "-") is written as the LMS gave it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder.errors import UserError
from autograder.files import write_atomic
from autograder.results import clean_text

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "canvas", "moodle")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class ExportError(UserError):
    """An export cannot be written as asked (a template that is not what it should be, a
    setting that is missing): the message names the file or the setting and what is wrong."""


def neutralised(value: Any) -> Any:
    """A text cell made inert for spreadsheets (cleaned, and quoted if it could be a formula);
    anything that is not text is returned as it is."""
    if not isinstance(value, str):
        return value
    value = clean_text(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def neutralised_cell(text: str) -> str:
    """A cell of a file someone else wrote (an LMS template): what cannot be a formula -- a
    plain number ("-1.5") or a lone "-" (Moodle's "no date", Canvas's "no grade") -- is written
    as the LMS gave it, so a re-import sees no change there; any other text is neutralised."""
    return text if text == "-" or _NUMBER.fullmatch(text) else neutralised(text)


def number_cell(value: float) -> str:
    """A score as a CSV number: at most two decimals, no exponent, no trailing zeros."""
    text = format(round(float(value), 2), ".2f").rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    """The full table (autograder.gradebook.scores_frame) as CSV, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _safe_table(table).to_csv().encode("utf-8"))
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
