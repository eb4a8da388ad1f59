"""Gradebook exports: the full table as CSV, and the CSV that Canvas imports."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "canvas")


def write_export(table: pd.DataFrame, assignment: str, fmt: str, path: Path) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if fmt == "csv":
        table.to_csv(partial)
    else:
        _write_canvas(table, assignment, partial)
    partial.replace(path)
    return path


def _write_canvas(table: pd.DataFrame, assignment: str, path: Path) -> None:
    """Canvas's gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, <assignment>;
    the second row gives the points possible, with Canvas's four leading spaces."""
    max_score = float(table["max_score"].max()) if len(table) else 0.0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment])
        writer.writerow(["    Points Possible", "", "", "", "", f"{max_score:g}"])
        for student_id, row in table.iterrows():
            writer.writerow([student_id, "", "", student_id, "", f"{row['total']:g}"])
