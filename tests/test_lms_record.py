"""lms.json counts only when this grader wrote it: submitted/ also receives every file of a
student's folder through nbgrader's exchange, so a planted record (an on-time flag, another
student's Canvas ids) must change nothing."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import commands
from autograder.author import with_answers
from autograder.course import Course
from autograder.lms.record import read_lms_record, write_lms_record
from tests.conftest import AUTOGRADER, make_course, run_nbgrader

RECORD = {"lms": "canvas", "file": "smithalice_10001_678901_backprop.ipynb",
          "name": "smithalice", "user_id": "10001", "submission_id": "678901", "late": True,
          "submitted_at": None}


def test_a_record_reads_back_only_where_and_as_it_was_written(course: Course) -> None:
    folder = course.submitted_dir("rec-alice", "backprop")
    folder.mkdir(parents=True)
    write_lms_record(course, "rec-alice", "backprop", RECORD)
    assert read_lms_record(course, "rec-alice", "backprop") == RECORD
    signed = json.loads((folder / "lms.json").read_text())

    elsewhere = course.submitted_dir("rec-mallory", "backprop")  # copied to another student
    elsewhere.mkdir(parents=True)
    (elsewhere / "lms.json").write_text(json.dumps(signed))
    assert read_lms_record(course, "rec-mallory", "backprop") is None

    (folder / "lms.json").write_text(json.dumps({**signed, "late": False}))  # edited
    assert read_lms_record(course, "rec-alice", "backprop") is None
    (folder / "lms.json").write_text(json.dumps(RECORD))  # never signed
    assert read_lms_record(course, "rec-alice", "backprop") is None


@pytest.fixture(scope="module")
def late_course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    course = make_course(tmp_path_factory.mktemp("lms-record"))
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    run_nbgrader(course, "db", "assignment", "add", "backprop",
                 "--duedate=2026-11-20 17:00:00 UTC")
    return Course.load(course.root)


def test_a_planted_record_neither_excuses_lateness_nor_takes_a_feedback_slot(
        late_course: Course, release_notebook, solution, tmp_path: Path) -> None:
    course = late_course
    notebook = nbformat.writes(with_answers(release_notebook, solution))
    for student, stamp in (("eve", "2026-11-25 17:00:00 UTC"), ("ctrl", "2026-11-25 17:00:00 UTC")):
        folder = course.submitted_dir(student, "backprop")  # as `nbgrader collect` leaves it
        folder.mkdir(parents=True)
        (folder / "backprop.ipynb").write_text(notebook)
        (folder / "timestamp.txt").write_text(stamp)
    # eve's own folder also held this: "not late, no time known", and Canvas user 10002's ids
    (course.submitted_dir("eve", "backprop") / "lms.json").write_text(json.dumps({
        "lms": "canvas", "file": "victim_10002_999_backprop.ipynb", "name": "victim",
        "user_id": "10002", "submission_id": "999", "late": False, "submitted_at": None}))

    results = {r.student_id: r for r in commands.grade(course, "backprop")}
    assert results["ctrl"].late_penalty == 10 and results["ctrl"].seconds_late > 0
    assert results["eve"].late_penalty == results["ctrl"].late_penalty
    assert results["eve"].seconds_late == results["ctrl"].seconds_late

    out = tmp_path / "feedback.zip"
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "feedback-zip",
                           "backprop", "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert "eve/backprop/feedback.html" in names
    assert not any("10002" in name for name in names)
