"""The shipped examples, graded through the CLI: expected scores, teaching messages, and the
same scores in our CSV, our pandas table and nbgrader's own export."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from autograder import commands
from autograder.course import Course
from autograder.store import result_store
from tests.conftest import AUTOGRADER, REPO, nbgrader_export

EXPECTED = {k: v for k, v in json.loads((REPO / "examples" / "expected.json").read_text()).items()
            if not k.startswith("_")}


@pytest.fixture(scope="module")
def graded(course: Course) -> subprocess.CompletedProcess:
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "grade", "backprop",
                           str(REPO / "examples" / "submitted"), "--regrade"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_every_example_is_stored_under_submitted(course: Course, graded) -> None:
    for student in EXPECTED:
        assert (course.submitted_dir(student, "backprop") / "backprop.ipynb").is_file()
        assert result_store(course).load("backprop", student) is not None


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_example_gets_its_expected_score_and_message(course: Course, graded,
                                                     student: str) -> None:
    table = commands.gradebook_table(course, "backprop")
    assert table.loc[student, "total"] == EXPECTED[student]["score"]
    assert table.loc[student, "status"] == "graded"
    feedback = (course.feedback_dir(student, "backprop") / "backprop.md").read_text()
    assert EXPECTED[student]["feedback"] in feedback
    html = (course.feedback_dir(student, "backprop") / "backprop.html").read_text()
    assert html.startswith("<!DOCTYPE html>")


def test_csv_pandas_and_nbgrader_export_agree(course: Course, graded, tmp_path: Path) -> None:
    table = commands.gradebook_table(course, "backprop")
    with open(course.exports_dir() / "backprop.csv") as handle:
        ours = {row["student_id"]: float(row["total"]) for row in csv.DictReader(handle)}
    theirs = {student: float(row["score"])
              for student, row in nbgrader_export(course, tmp_path).items()}
    for student, expected in EXPECTED.items():
        assert ours[student] == theirs[student] == table.loc[student, "total"] \
            == expected["score"]
    assert set(ours) == set(theirs) == set(table.index)


def test_canvas_export_has_points_possible_row(course: Course, graded) -> None:
    config = copy.deepcopy(course.config)
    config.CanvasExport.assignment_id = "4242"  # Canvas matches the column by this id
    path = commands.export(replace(course, config=config), "backprop", "canvas")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                       "backprop (4242)"]
    assert rows[1][0] == "    Points Possible" and rows[1][-1] == "10"
    scores = {row[1]: float(row[5]) for row in rows[2:]}
    for student, expected in EXPECTED.items():
        assert scores[student] == expected["score"]


def test_feedback_holds_no_test_code_and_no_expected_values(course: Course, graded) -> None:
    hidden = (REPO / "hidden_tests" / "backprop" / "tests.py").read_text()
    code_lines = {line.strip() for line in hidden.splitlines()
                  if line.strip().startswith(("assert ", "def ", "return ", "raise ", "for "))}
    for student in EXPECTED:
        for suffix in ("md", "html"):
            text = (course.feedback_dir(student, "backprop") / f"backprop.{suffix}").read_text()
            assert not [line for line in code_lines if line in text]
            for secret in ("reference_mlp", "step_outcomes", "PROBES", "Traceback",
                           "144", "-31.5", "hidden_tests"):
                assert secret not in text, (student, secret)


def test_cli_prints_progress_and_the_table(graded) -> None:
    assert "[6/6]" in graded.stdout
    assert "percent" in graded.stdout and "wrote" in graded.stdout
