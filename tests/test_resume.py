"""A batch killed midway loses nothing: run again, it grades only what is missing and ends
with the same gradebook."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

from autograder import commands
from autograder.store import result_store
from tests.conftest import AUTOGRADER, REPO
from tests.test_cheats import _sandbox_processes

EXPECTED = {k: v["score"] for k, v in
            json.loads((REPO / "examples" / "expected.json").read_text()).items()
            if not k.startswith("_")}


def _batch(folder):
    """Two copies of each shipped example, under new student ids."""
    students = {}
    for copy in (1, 2):
        for example, score in EXPECTED.items():
            student = f"resume{copy}-{example}"
            target = folder / student / "backprop"
            target.mkdir(parents=True)
            shutil.copy(REPO / "examples" / "submitted" / example / "backprop" / "backprop.ipynb",
                        target)
            students[student] = score
    return students


def test_a_killed_batch_resumes_and_ends_with_the_same_gradebook(course, tmp_path) -> None:
    students = _batch(tmp_path / "incoming")
    command = [*AUTOGRADER, "--course", str(course.root), "grade", "backprop",
               str(tmp_path / "incoming"), "--workers", "1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    graded_lines = 0
    for line in first.stdout:
        graded_lines += line.startswith("[")
        if graded_lines == 3:
            os.killpg(first.pid, signal.SIGKILL)  # like a crash: no cleanup at all
            break
    first.wait()
    first.stdout.close()
    stored = [s for s in students if result_store(course).load("backprop", s) is not None]
    assert 3 <= len(stored) < len(students)

    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert f"{len(stored)} already graded and unchanged: kept" in second.stdout
    regraded = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert len(regraded) == len(students) - len(stored)

    table = commands.gradebook_table(course, "backprop")
    assert {s: table.loc[s, "total"] for s in students} == students
    with_nbgrader = _nbgrader_totals(course)
    assert {s: with_nbgrader[s] for s in students} == students
    assert _sandbox_processes() == []


def _nbgrader_totals(course) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url, course_id=course.course_id) as gradebook:
        return {s.student.id: s.score for s in gradebook.assignment_submissions("backprop")}


def test_a_result_not_written_to_the_gradebook_is_graded_again(course, tmp_path,
                                                               monkeypatch) -> None:
    import pytest

    from autograder.gradebook_db import GradebookError, NbgraderGradebook

    folder = tmp_path / "incoming" / "unrecorded" / "backprop"
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLES_SOLUTION, folder)
    real_record = NbgraderGradebook.record

    def failing(self, result):
        raise OSError("disk full")

    monkeypatch.setattr(NbgraderGradebook, "record", failing)
    with pytest.raises(GradebookError, match="unrecorded"):
        commands.grade(course, "backprop", tmp_path / "incoming")
    assert result_store(course).load("backprop", "unrecorded") is None

    monkeypatch.setattr(NbgraderGradebook, "record", real_record)
    results = commands.grade(course, "backprop", tmp_path / "incoming")
    assert results[0].score == 10
    assert _nbgrader_totals(course)["unrecorded"] == 10


EXAMPLES_SOLUTION = REPO / "examples" / "submitted" / "solution" / "backprop" / "backprop.ipynb"
