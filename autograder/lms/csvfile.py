"""CSV files that come from an LMS or an instructor (rosters, gradebooks, grading worksheets):
read bounded and never through a link, as UTF-8 with or without the byte-order mark that
spreadsheets and Canvas write."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from autograder.errors import SubmissionError, UserError
from autograder.files import read_regular_file
from autograder.results import clean_text

BOM = b"\xef\xbb\xbf"


class CsvFileError(UserError):
    """The file is not a readable CSV file; the message names it and what is wrong."""


def read_csv_rows(path: Path, cap: int) -> tuple[list[list[str]], bool]:
    """The file's rows, and whether it began with a byte-order mark (kept when the file is
    written back). Refused, naming the file: a link or not a regular file, larger than `cap`
    bytes, not UTF-8, not CSV, or without a non-empty first row."""
    name = clean_text(path, 300)
    try:
        data = read_regular_file(Path(path), cap)
    except SubmissionError as error:
        raise CsvFileError(str(error)) from None
    bom = data.startswith(BOM)
    try:
        text = data[len(BOM) if bom else 0:].decode("utf-8")
    except UnicodeDecodeError as error:
        raise CsvFileError(f"{name} is not UTF-8 text (byte {error.start}): download it from "
                           "the LMS again, or save it as CSV UTF-8") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise CsvFileError(f"{name} is not a readable CSV file: {error}") from None
    if not rows or not any(rows[0]):
        raise CsvFileError(f"{name} is empty")
    return rows, bom
