"""Bad input gets one clear error naming what is wrong, and nothing is half-written."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from autograder.assignment import Assignment
from autograder.course import Course, CourseError
from autograder.errors import SubmissionError
from autograder.submissions import collect
from autograder.verify.hidden import HiddenTestsError
from tests.conftest import AUTOGRADER, REPO


@pytest.fixture()
def empty_course(tmp_path: Path) -> Course:
    shutil.copy(REPO / "nbgrader_config.py", tmp_path)
    return Course.load(tmp_path)


def _nothing_submitted(course: Course) -> bool:
    return not (course.root / "submitted").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "neither a folder"),
    (lambda p: (p / "x.zip").write_text("not a zip") and p / "x.zip", "not a valid zip"),
    (lambda p: (p / "flat").mkdir() or p / "flat", "no <student_id>/backprop/ folder"),
])
def test_unusable_sources_are_refused(empty_course: Course, tmp_path: Path, make,
                                      message: str) -> None:
    with pytest.raises(SubmissionError, match=message):
        collect(empty_course, "backprop", "backprop", make(tmp_path))
    assert _nothing_submitted(empty_course)


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_two_notebooks_in_one_students_folder_skip_that_student_not_the_batch(
        empty_course: Course, tmp_path: Path) -> None:
    download = _zip(tmp_path / "d.zip", {"alice/a.ipynb": "{}", "bob/b.ipynb": "{}",
                                         "alice/again.ipynb": "{}"})
    found, skipped = collect(empty_course, "backprop", "backprop", download)
    assert [s.student_id for s in found] == ["bob"]
    assert [(s.item, s.reason) for s in skipped] == [
        ("d.zip:alice", "holds 2 notebooks (a.ipynb, again.ipynb); one is expected")]
    assert sorted(p.name for p in (empty_course.root / "submitted").iterdir()) == ["bob"]


def test_unsafe_student_ids_are_skipped_and_reported(empty_course: Course,
                                                     tmp_path: Path) -> None:
    download = _zip(tmp_path / "d.zip", {"ok/backprop.ipynb": "{}", "bad id!/b.ipynb": "{}",
                                         "tab\tid/b.ipynb": "{}", "josé/b.ipynb": "{}"})
    found, skipped = collect(empty_course, "backprop", "backprop", download)
    assert [s.student_id for s in found] == ["josé", "ok"]  # nbgrader takes letters like é
    assert [s.item for s in skipped] == ["d.zip:bad id!/b.ipynb", "d.zip:tab\tid/b.ipynb"]
    assert all("not a usable student id" in s.reason for s in skipped)


def test_a_source_with_nothing_usable_writes_nothing(empty_course: Course,
                                                     tmp_path: Path) -> None:
    download = _zip(tmp_path / "d.zip", {"bad id!/a.ipynb": "{}", "x/a.ipynb": "{}",
                                         "x/b.ipynb": "{}", "top.ipynb": "{}"})
    with pytest.raises(SubmissionError, match="holds no usable submission: .*not a usable "
                                              "student id.*not in a student's folder.*holds "
                                              "2 notebooks"):
        collect(empty_course, "backprop", "backprop", download)
    assert _nothing_submitted(empty_course)


def test_zip_layouts_map_to_student_ids(empty_course: Course, tmp_path: Path) -> None:
    download = _zip(tmp_path / "d.zip", {
        "export/alice/backprop.ipynb": "{}",          # one wrapping folder, then students
        "export/bob/backprop/backprop.ipynb": "{}",
    })
    found, skipped = collect(empty_course, "backprop", "backprop", download)
    assert [s.student_id for s in found] == ["alice", "bob"] and not skipped
    assert all(s.notebook.name == "backprop.ipynb" and s.notebook.is_file() for s in found)


def test_hidden_tests_that_do_not_add_up_are_refused(course: Course, tmp_path: Path) -> None:
    broken = tmp_path / "course"
    shutil.copytree(course.root, broken, ignore=shutil.ignore_patterns("submitted", "autograded",
                                                                       "results", "feedback"))
    tests = broken / "hidden_tests" / "backprop" / "tests.py"
    tests.write_text(tests.read_text().replace('cell="check_train", points=2',
                                               'cell="check_train", points=3'))
    with pytest.raises(HiddenTestsError, match="'check_train' is worth 4 points .* add up to 5"):
        Assignment.load(Course.load(broken), "backprop")


def test_a_course_without_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(CourseError, match="no nbgrader_config.py"):
        Course.load(tmp_path)


def test_cli_reports_errors_in_one_line_with_exit_code_2(course: Course) -> None:
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "grade", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    # a name that is no assignment of the course is told as such (issue 8), not as one to release
    assert done.stderr == "autograder: error: unknown assignment 'nope' (known: backprop)\n"


@pytest.mark.parametrize("line, message", [
    ("c.Autograder.timout = 30", r"c.Autograder.timout is not a setting \(known: "
                                 r"locked_cell_timeout, probe_timeout, scheduler, timeout\)"),
    ("c.Autograder.timeout = -1", r"c.Autograder.timeout = -1: must be a positive number of "
                                  r"seconds$"),
    ("c.Autograder.probe_timeout = 'fast'", r"probe_timeout = 'fast': must be a positive number "
                                            r"of seconds$"),
    ("c.Autograder.scheduler = 8786", r"c.Autograder.scheduler = 8786: must be a Dask "
                                      r"scheduler's address"),
])
def test_a_wrong_autograder_setting_is_named(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "nbgrader_config.py").write_text(f"c = get_config()\n{line}\n")
    with pytest.raises(CourseError, match=message):
        Course.load(tmp_path)
