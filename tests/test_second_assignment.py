"""The engine knows nothing of backprop: a second, tiny assignment goes through the same
commands (release, grade from a zip and from one notebook, export) and nbgrader's gradebook."""

from __future__ import annotations

import csv
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tests.conftest import AUTOGRADER


def _meta(grade_id: str, **flags) -> dict:
    meta = {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
            "solution": False, "task": False}
    meta.update(flags)
    return {"nbgrader": meta}


PROBES = '''
def square(student, inputs):
    return {"values": [student["square"](x) for x in inputs["xs"]]}
'''

TESTS = '''
from autograder.verify import as_number, hidden_test, probe

PROBES = {"squares": probe("square", xs=[3, -4, 0.5])}


@hidden_test(cell="check_square", points=1, message="square(x) should return x * x.")
def positive_numbers(probes):
    """square() of a positive number"""
    got = as_number(probes["squares"]["values"][0], "square(3)")
    assert got == 9, f"square(3) returned {got:g}"


@hidden_test(cell="check_square", points=2, message="Negative numbers square to positive ones.")
def negative_and_fractions(probes):
    """square() of negative numbers and fractions"""
    values = probes["squares"]["values"]
    assert as_number(values[1], "square(-4)") == 16, "square(-4) is not positive"
    assert abs(as_number(values[2], "square(0.5)") - 0.25) < 1e-12
'''


def _answer(body: str):
    return new_code_cell(f"def square(x):\n{body}",
                         metadata=_meta("square", solution=True, locked=False))


@pytest.fixture(scope="module")
def squares_course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("squares-course")
    (root / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "squares-course"\n'
        "c.Autograder.timeout = 30\n")
    notebook = new_notebook(cells=[
        new_markdown_cell("# Squares", metadata=_meta("intro")),
        _answer("    ### BEGIN SOLUTION\n    return x ** 2\n    ### END SOLUTION\n"),
        new_code_cell("assert square(2) == 4\nprint('ok')",
                      metadata=_meta("check_square", grade=True, points=3)),
    ])
    (root / "source" / "squares").mkdir(parents=True)
    nbformat.write(notebook, root / "source" / "squares" / "squares.ipynb")
    (root / "hidden_tests" / "squares").mkdir(parents=True)
    (root / "hidden_tests" / "squares" / "probes.py").write_text(PROBES)
    (root / "hidden_tests" / "squares" / "tests.py").write_text(TESTS)
    run(root, "release", "squares")
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*AUTOGRADER, "--course", str(root), *args], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return done


def _student_notebook(root: Path, body: str) -> str:
    release = nbformat.read(root / "release" / "squares" / "squares.ipynb", as_version=4)
    for cell in release.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "square":
            cell.source = f"def square(x):\n{body}"
    return nbformat.writes(release)


def test_release_strips_the_solution(squares_course: Path) -> None:
    text = (squares_course / "release" / "squares" / "squares.ipynb").read_text()
    assert "return x ** 2" not in text and "NotImplementedError" in text


def test_grade_a_canvas_zip_and_one_notebook_then_export(squares_course: Path,
                                                         tmp_path: Path) -> None:
    download = tmp_path / "submissions.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("lovelaceada_101_9001_squares.ipynb",
                         _student_notebook(squares_course, "    return x * x\n"))
        archive.writestr("babbagecharles_LATE_102_9002_squares-1.ipynb",
                         _student_notebook(squares_course, "    return abs(x) * 2 if x else 0\n"))
        archive.writestr("__MACOSX/._lovelaceada_101_9001_squares.ipynb", "junk")
    printed = run(squares_course, "grade", "squares", str(download)).stdout
    assert "[2/2]" in printed

    single = tmp_path / "mine.ipynb"
    single.write_text(_student_notebook(squares_course, "    return x ** 2 + 0\n"))
    run(squares_course, "grade", "squares", str(single), "--student", "hopper")

    exported = squares_course / "exports" / "squares.csv"
    run(squares_course, "export", "squares")
    rows = {row["student_id"]: row for row in csv.DictReader(exported.open())}
    # Keyed by the Canvas user id (issue 8), not by the name in the file.
    assert {sid: float(row["total"]) for sid, row in rows.items()} == {
        "101": 3.0, "102": 0.0, "hopper": 3.0}
    assert float(rows["102"]["positive_numbers"]) == 0.0
    feedback = (squares_course / "feedback" / "102" / "squares" / "squares.md")
    assert "square(3) returned 6" in feedback.read_text()
    assert (squares_course / "submitted" / "hopper" / "squares" / "squares.ipynb").is_file()
