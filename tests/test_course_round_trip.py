"""A whole course as an instructor runs it, through the command line, with real-shaped files:
the roster from Canvas's gradebook CSV, a due date set with nbgrader, an extension, a Canvas
"Download Submissions" zip graded, a manual score entered as formgrader does, the filled
Canvas gradebook and the feedback zip, and `nbgrader export` agreeing with ours."""

from __future__ import annotations

import csv
import io
import subprocess
import warnings
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.author import with_answers
from autograder.course import Course
from autograder.release import put_nbgrader_tools_on_path
from tests.conftest import AUTOGRADER, make_course, nbgrader_export, run_nbgrader

DUE = "2026-11-20 12:00:00 UTC"
# Canvas sets no member times (lib/content_zipper.rb): each is when the zip was made, here the
# instructor's download days after the due date. Lateness is Canvas's LATE flag alone, judged
# by c.LatePolicy.lms_flag_rule ("late": one second past the student's due date).
DOWNLOADED = (2026, 11, 23, 9, 0, 0)
BOM = "\ufeff"

# Canvas's gradebook as the instructor downloads it: a byte-order mark, the points row, two
# other assignments, the test student, and two students whose sortable names are equal.
CANVAS_ASSIGNMENT = "Backprop (4242)"
TEMPLATE_ROWS = [
    ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Quiz 1 (4100)",
     CANVAS_ASSIGNMENT, "Essay (4300)", "Current Score", "Final Score"],
    ["    Points Possible", "", "", "", "", "5", "20", "10", "(read only)", "(read only)"],
    ["Smith, Alice", "10001", "S1", "asmith", "ML 101", "5", "", "8", "", ""],
    ["Smith, John", "10010", "S10", "jsmith1", "ML 101", "4", "", "7", "", ""],
    ["Smith, John", "10011", "S11", "jsmith2", "ML 101", "3", "", "6", "", ""],
    ["Late, Larry", "10002", "S2", "llate", "ML 101", "5", "", "9", "", ""],
    ["Extended, Erin", "10003", "S3", "eext", "ML 101", "5", "", "9", "", ""],
    ["Missing, Mia", "10004", "S4", "mmiss", "ML 101", "2", "", "", "", ""],
    ["Student, Test", "99999", "", "test_student", "ML 101", "", "", "", "", ""],
]


def _canvas_csv(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return (BOM + text.getvalue()).encode("utf-8")


def _read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def _run(course: Course, *args: str) -> subprocess.CompletedProcess:
    put_nbgrader_tools_on_path()
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def course_round(tmp_path_factory, release_notebook, solution) -> dict:
    root = tmp_path_factory.mktemp("round-trip")
    course = make_course(root)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    course = Course.load(root)
    run_nbgrader(course, "db", "assignment", "add", "backprop", f"--duedate={DUE}")

    template = root / "canvas_gradebook.csv"
    template.write_bytes(_canvas_csv(TEMPLATE_ROWS))
    _run(course, "roster", "import", str(template))
    _run(course, "extension", "add", "backprop", "10003", "--days", "2")

    right = nbformat.writes(with_answers(release_notebook, solution))
    no_backward = dict(solution)
    no_backward["train_step"] = solution["train_step"].replace("loss.backward()", "pass")
    wrong = nbformat.writes(with_answers(release_notebook, no_backward))
    members = {  # Canvas: <sortable name>_[LATE_]<user id>_<submission id>_<file name>
        "smithalice_10001_900001_backprop.ipynb": right,
        "smithjohn_10010_900010_backprop.ipynb": right,
        "smithjohn_10011_900011_backprop.ipynb": wrong,
        "latelarry_LATE_10002_900002_backprop.ipynb": right,
        # Erin's two days were also given in Canvas (an "Assign to" date): Canvas does not
        # flag her; the flag cannot say how late, so an extension given here alone cannot
        # undo it.
        "extendederin_10003_900003_backprop.ipynb": right,
        "smithalice_10001_900001_report.pdf": "%PDF-1.4 not a notebook",
        "__MACOSX/._smithalice_10001_900001_backprop.ipynb": "junk",
    }
    download = root.parent / f"{root.name}-submissions.zip"
    with zipfile.ZipFile(download, "w") as archive:
        for name, text in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=DOWNLOADED), text)
    graded = _run(course, "grade", "backprop", str(download))

    # A TA gives Alice's chain rule cell a manual score in formgrader (nbgrader's own API).
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradebook.find_grade("check_chain_rule", "backprop", "backprop", "10001").manual_score = 2
        gradebook.db.commit()

    filled = root / "canvas_import.csv"
    _run(course, "export", "backprop", "--format", "canvas", "--template", str(template),
         "--output", str(filled))
    theirs = nbgrader_export(course, root.parent / f"{root.name}-nbgrader")
    feedback_zip = root / "feedback.zip"
    _run(course, "feedback-zip", "backprop", "--output", str(feedback_zip))
    return {"course": course, "graded": graded, "filled": filled, "nbgrader": theirs,
            "feedback": feedback_zip}


def _filled_scores(path: Path) -> dict[str, str]:
    rows = _read_csv(path)
    column = rows[0].index(CANVAS_ASSIGNMENT)
    return {row[1]: row[column] for row in rows[1:] if row[1]}


def test_every_rostered_student_is_matched_by_canvas_id(course_round) -> None:
    scores = _filled_scores(course_round["filled"])
    # Scaled to Canvas's 20 points: 10/10 -> 20. Alice: 10 - 3 + 2 (manual) = 9 -> 18.
    assert scores["10001"] == "18"
    assert scores["10010"] == "20"
    assert 0 < float(scores["10011"]) < 20  # same name part, a different student and score
    assert scores["10002"] == "0"  # flagged LATE by Canvas, penalty "zero"
    assert scores["10003"] == "20"  # not flagged: within the due date Canvas gave her
    assert scores["10004"] == "0"  # rostered, never submitted: 0, as nbgrader does
    assert scores.get("99999", "") == ""  # Canvas's test student is left alone


def test_nbgrader_export_agrees(course_round) -> None:
    ours = _filled_scores(course_round["filled"])
    theirs = {student: float(row["score"]) for student, row in course_round["nbgrader"].items()}
    for student in ("10001", "10010", "10011", "10002", "10003", "10004"):
        assert float(ours[student]) == pytest.approx(2 * theirs[student]), student


def test_the_pdf_is_listed_and_the_rest_graded(course_round) -> None:
    output = course_round["graded"].stdout
    assert "report.pdf" in output
    assert "skipped" in output


def test_feedback_zip_keeps_canvas_names(course_round) -> None:
    with zipfile.ZipFile(course_round["feedback"]) as archive:
        names = archive.namelist()
    for prefix in ("smithalice_10001_900001", "smithjohn_10010_900010",
                   "smithjohn_10011_900011"):
        assert any(name.startswith(prefix) for name in names), (prefix, names)
    assert not any("10004" in name for name in names)  # nothing submitted, no feedback
