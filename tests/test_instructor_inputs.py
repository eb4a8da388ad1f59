"""Instructor inputs hold what students sent and are read as hostile (issue 7, item 7): no link
is followed, nothing but regular files is read, every read is bounded, zips are streamed within
caps, and one bad student or member is skipped and reported while the rest are graded.

Real files, real links, a real FIFO, real zips, the real `autograder grade` in a subprocess
(its peak memory measured where the review gave a figure)."""

from __future__ import annotations

import io
import os
import resource
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import commands, submissions
from autograder.author import with_answers
from autograder.course import Course
from autograder.errors import SubmissionError
from autograder.kept_notebook import keep_graded_notebook
from autograder.results import SubmissionResult
from autograder.store import result_store
from autograder.submissions import MAX_NOTEBOOK_BYTES, collect
from tests.conftest import REPO

SECRET = "TOP-SECRET-4c1d"  # in a file that a link points to: must never be copied anywhere
GRADER_MEMORY = 450 * 1024 * 1024  # peak RSS of `autograder grade` (here: about 290 MiB)
# A safety net for running these tests against the code before the fix: the grader process
# fails with MemoryError instead of taking the machine's memory (the review saw 6.5 GB).
DATA_LIMIT = 3 * 1024**3


@pytest.fixture(scope="module")
def own_course(course: Course, tmp_path_factory: pytest.TempPathFactory) -> Course:
    """A course of this module's own (the released one, copied): links are planted in its
    submitted/."""
    root = tmp_path_factory.mktemp("inputs") / "course"
    shutil.copytree(course.root, root, symlinks=True, ignore=shutil.ignore_patterns(
        "submitted", "autograded", "results", "feedback", "exports"))
    return Course.load(root)


@pytest.fixture(scope="module")
def honest(own_course: Course) -> str:
    release = nbformat.read(own_course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    source = nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb", as_version=4)
    from autograder.author import solution_answers

    return nbformat.writes(with_answers(release, solution_answers(source)))


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(f"{SECRET}\n")
    return path


def _files_holding(root: Path, text: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and text.encode() in path.read_bytes():
            found.append(path)
    return found


def _limit_data() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, hard))


PEAK = ("import resource, sys\n"
        "from autograder.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\n"
        "finally:\n"
        "    print('PEAK_RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,"
        " file=sys.stderr)\n"
        "sys.exit(code)\n")


def _grade_measured(course: Course, *args: str, timeout: float = 600,
                    env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """`autograder grade backprop ARGS` in its own process: its output and peak memory."""
    done = subprocess.run([sys.executable, "-c", PEAK, "--course", str(course.root), "grade",
                           "backprop", *args, "--workers", "1"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          preexec_fn=_limit_data, env={**os.environ, **(env or {})})
    peak = [int(line.split()[1]) for line in done.stderr.splitlines()
            if line.startswith("PEAK_RSS")]
    assert peak, done.stderr[-3000:]
    return done, peak[0]


def _result(course: Course, student: str) -> dict | None:
    result = result_store(course).load("backprop", student)
    return None if result is None else result.to_dict()


# --- read_regular_file: the one way submissions.py (and the pipeline) read a student's file


def test_read_regular_file_reads_a_regular_file_within_its_cap(tmp_path: Path) -> None:
    from autograder.files import read_regular_file

    path = tmp_path / "nb.ipynb"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100
    with pytest.raises(SubmissionError, match=r"nb\.ipynb is larger than 99 bytes"):
        read_regular_file(path, 99)


def test_read_regular_file_follows_no_link_and_reads_no_fifo_or_device(tmp_path: Path,
                                                                        secret: Path) -> None:
    from autograder.files import read_regular_file

    (tmp_path / "link.ipynb").symlink_to(secret)
    (tmp_path / "zero.ipynb").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.ipynb")  # nobody writes: opening it to read would block
    (tmp_path / "folder.ipynb").mkdir()
    for name, problem in [("link", "a symbolic link"), ("zero", "a symbolic link"),
                          ("fifo", "a FIFO"), ("folder", "a folder"), ("gone", "cannot be read")]:
        with pytest.raises(SubmissionError, match=f"{name}.ipynb (is {problem}|{problem})"):
            read_regular_file(tmp_path / f"{name}.ipynb", MAX_NOTEBOOK_BYTES)
    with pytest.raises(SubmissionError, match="a device"):
        read_regular_file(Path("/dev/zero"), MAX_NOTEBOOK_BYTES)


def test_a_file_that_grows_past_its_stat_size_is_still_cut_at_the_cap(tmp_path: Path) -> None:
    # /proc files report size 0 and hold more: the read itself must stop at the cap.
    from autograder.files import read_regular_file

    with pytest.raises(SubmissionError, match="larger than 10 bytes"):
        read_regular_file(Path("/proc/self/status"), 10)


# --- folder sources and the course's submitted/


def _plant_hostile_layout(folder: Path, course: Course, honest: str, secret: Path) -> None:
    """One honest student beside every kind of link a student's folder can hold."""
    def notebook_dir(student: str) -> Path:
        path = folder / student / "backprop"
        path.mkdir(parents=True)
        return path

    (notebook_dir("honest") / "backprop.ipynb").write_text(honest)
    tests_py = course.hidden_dir("backprop") / "tests.py"
    (notebook_dir("link-to-tests") / "backprop.ipynb").symlink_to(tests_py)
    (notebook_dir("link-to-secret") / "backprop.ipynb").symlink_to(secret)
    (notebook_dir("link-to-shadow") / "backprop.ipynb").symlink_to("/etc/shadow")
    elsewhere = folder.parent / "elsewhere"
    (elsewhere / "backprop").mkdir(parents=True)
    (elsewhere / "backprop" / "backprop.ipynb").symlink_to(secret)
    (folder / "linked-student").symlink_to(elsewhere)
    (folder / "linked-assignment").mkdir()
    (folder / "linked-assignment" / "backprop").symlink_to(elsewhere / "backprop")
    stamped = notebook_dir("link-timestamp")
    (stamped / "backprop.ipynb").write_text(honest)
    (stamped / "timestamp.txt").symlink_to(secret)


def test_linked_notebooks_and_folders_are_skipped_reported_and_never_copied(
        own_course: Course, honest: str, secret: Path, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    _plant_hostile_layout(folder, own_course, honest, secret)
    hidden_tests = (own_course.hidden_dir("backprop") / "tests.py").read_text()[:400]
    out = io.StringIO()
    results = commands.grade(own_course, "backprop", folder, out=out, workers=1)

    assert {r.student_id: r.score for r in results} == {"honest": 10, "link-timestamp": 10}
    printed = out.getvalue()
    for item in ("link-to-tests", "link-to-secret", "link-to-shadow", "linked-student",
                 "linked-assignment"):
        assert any(line.startswith("skipped: ") and item in line and "symbolic link" in line
                   for line in printed.splitlines()), (item, printed)
    for root in ("submitted", "autograded", "results", "feedback"):
        assert not _files_holding(own_course.root / root, SECRET), root
        assert not _files_holding(own_course.root / root, hidden_tests), root
        assert not list((own_course.root / root).rglob("link-to-*")), root
    # The linked timestamp was not read: the time is unknown (none is invented), and listed.
    assert {r.student_id: r for r in results}["link-timestamp"].timestamp is None
    assert any(line.startswith("skipped: ") and "link-timestamp/backprop/timestamp.txt" in line
               and "symbolic link" in line for line in printed.splitlines()), printed


def test_links_planted_in_the_courses_submitted_folder_are_not_graded_or_copied(
        own_course: Course, honest: str, secret: Path) -> None:
    root = own_course.root / "submitted"
    (root / "plain" / "backprop").mkdir(parents=True)
    (root / "plain" / "backprop" / "backprop.ipynb").write_text(honest)
    (root / "planted" / "backprop").mkdir(parents=True)
    (root / "planted" / "backprop" / "backprop.ipynb").symlink_to(secret)
    for student in ("fifo", "zero"):
        (root / student / "backprop").mkdir(parents=True)
    os.mkfifo(root / "fifo" / "backprop" / "backprop.ipynb")
    (root / "zero" / "backprop" / "backprop.ipynb").symlink_to("/dev/zero")
    (root / "=HYPERLINK(\"http:__evil\")" / "backprop").mkdir(parents=True)
    (root / "=HYPERLINK(\"http:__evil\")" / "backprop" / "backprop.ipynb").write_text(honest)
    out = io.StringIO()
    results = commands.grade(own_course, "backprop", out=out, workers=1)

    graded = {r.student_id for r in results}
    assert "plain" in graded and not graded & {"planted", "fifo", "zero"}
    assert "fifo/backprop/backprop.ipynb is a FIFO" in out.getvalue()
    assert not any(r.startswith("=") for r in graded)
    assert "skipped: " in out.getvalue() and "planted" in out.getvalue()
    assert "not a usable student id" in out.getvalue()
    assert not _files_holding(own_course.root / "autograded", SECRET)
    assert not (own_course.autograded_dir("planted", "backprop") / "backprop.ipynb").exists()


def test_the_kept_copy_is_never_read_through_a_link(own_course: Course, secret: Path) -> None:
    """The kept copy was once made with shutil.copyfile, which follows links."""
    target = own_course.submitted_dir("swapped", "backprop")
    target.mkdir(parents=True)
    (target / "backprop.ipynb").symlink_to(secret)
    autograded = own_course.autograded_dir("swapped", "backprop")
    autograded.mkdir(parents=True)
    from autograder.assignment import Assignment

    why = keep_graded_notebook(own_course, Assignment.load(own_course, "backprop"),
                               SubmissionResult("swapped", "backprop", "backprop", "graded"))
    assert why and "symbolic link" in why
    assert not (autograded / "backprop.ipynb").exists()


def test_storing_never_writes_through_a_planted_link(own_course: Course, honest: str,
                                                      tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    stamped = own_course.submitted_dir("mallory", "backprop")
    stamped.mkdir(parents=True)
    (stamped / "timestamp.txt").symlink_to(victim)
    (stamped / "backprop.ipynb").symlink_to(victim)
    outside = tmp_path / "outside"
    outside.mkdir()
    (own_course.root / "submitted" / "eve").symlink_to(outside)
    download = tmp_path / "d.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("mallory/backprop.ipynb", honest)
        archive.writestr("eve/backprop.ipynb", honest)
    found, skipped = collect(own_course, "backprop", "backprop", download)

    assert [s.student_id for s in found] == ["mallory"]
    assert victim.read_text() == "untouched"
    assert not (stamped / "timestamp.txt").is_symlink()
    assert (stamped / "backprop.ipynb").read_text() == honest
    assert list(outside.iterdir()) == []
    assert [s.item for s in skipped] == ["d.zip:eve/backprop.ipynb"]
    assert "symbolic link" in skipped[0].reason


COLLECT = ("import sys\n"
           "from pathlib import Path\n"
           "from autograder.course import Course\n"
           "from autograder.submissions import collect\n"
           "found, skipped = collect(Course.load(sys.argv[1]), 'backprop', 'backprop',"
           " Path(sys.argv[2]))\n"
           "print([s.student_id for s in found])\n"
           "print([str(s) for s in skipped])\n"
           # This process's own peak (VmHWM): ru_maxrss would count the pytest process it
           # was forked from, which keeps it across exec.
           "print(next(int(line.split()[1]) * 1024 for line in open('/proc/self/status')"
           " if line.startswith('VmHWM:')))\n")


def test_a_notebook_linked_to_dev_zero_or_a_fifo_neither_hangs_nor_exhausts(
        tmp_path: Path, honest: str) -> None:
    course_root = tmp_path / "course"
    course_root.mkdir()
    (course_root / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text())
    folder = tmp_path / "incoming"
    for student in ("ok", "zero", "fifo"):
        (folder / student / "backprop").mkdir(parents=True)
    (folder / "ok" / "backprop" / "backprop.ipynb").write_text(honest)
    (folder / "zero" / "backprop" / "backprop.ipynb").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo" / "backprop" / "backprop.ipynb")
    # A separate process, with a data limit and a timeout: the code before the fix blocks
    # forever on the FIFO and reads /dev/zero until memory runs out.
    done = subprocess.run([sys.executable, "-c", COLLECT, str(course_root), str(folder)],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          preexec_fn=_limit_data)
    assert done.returncode == 0, done.stderr[-2000:]
    students, skipped, peak = done.stdout.splitlines()
    assert students == "['ok']"
    assert "zero" in skipped and "symbolic link" in skipped
    assert "fifo" in skipped and "a FIFO" in skipped
    assert int(peak) < 400 * 1024 * 1024  # the imports alone: about 25 MiB
    assert not (course_root / "submitted" / "zero").exists()


def test_a_3_gib_timestamp_costs_no_memory(own_course: Course, honest: str,
                                           tmp_path: Path) -> None:
    """The review: a 3 GiB timestamp.txt took the grader to 6.5 GB."""
    folder = tmp_path / "incoming"
    (folder / "stamped" / "backprop").mkdir(parents=True)
    (folder / "stamped" / "backprop" / "backprop.ipynb").write_text(honest)
    huge = folder / "stamped" / "backprop" / "timestamp.txt"
    subprocess.run(["truncate", "-s", "3G", str(huge)], check=True)  # sparse: no disk used
    done, peak = _grade_measured(own_course, str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    assert peak < GRADER_MEMORY, f"{peak >> 20} MiB"
    result = _result(own_course, "stamped")
    assert sum(test["points"] for test in result["tests"]) == 10
    assert result["timestamp"] is None  # not read: unknown, not the file's content
    assert not (own_course.submitted_dir("stamped", "backprop") / "timestamp.txt").exists()


# --- zips


def _bomb_zip(path: Path, honest: str, members: int = 120) -> Path:
    """`members` notebooks just under the size cap that compress about 1000 times (the
    review's 2.4 MB zip of 120 members), beside one honest notebook and every other kind
    of bad member."""
    padding = MAX_NOTEBOOK_BYTES - 1024
    bomb = ('{"cells": [], "metadata": {"pad": "' + " " * padding + '"}, "nbformat": 4, '
            '"nbformat_minor": 5}').encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("honest/backprop.ipynb", honest)
        for number in range(members):
            archive.writestr(f"bomb{number:03}/backprop.ipynb", bomb)
        archive.writestr("../x.ipynb", honest)  # a path out of any folder it is unpacked in
        archive.writestr("/abs/backprop.ipynb", honest)
        link = zipfile.ZipInfo("linked/backprop.ipynb")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "../../hidden_tests/backprop/tests.py")
        archive.writestr("oversize/backprop.ipynb", os.urandom(MAX_NOTEBOOK_BYTES + 1))
        archive.writestr("=HYPERLINK(1)/backprop.ipynb", honest)
        archive.writestr("twice/a.ipynb", honest)
        archive.writestr("twice/b.ipynb", honest)
    return path


def test_a_zip_bomb_is_skipped_member_by_member_in_bounded_memory_and_disk(
        own_course: Course, honest: str, tmp_path: Path) -> None:
    """The review: a 2.4 MB zip of 120 members took 2.7 GB of memory and 4.8 GB of disk, and
    one bad member refused the whole zip."""
    download = _bomb_zip(tmp_path / "download.zip", honest)
    assert download.stat().st_size < 50 * 1024 * 1024
    done, peak = _grade_measured(own_course, str(download))
    assert done.returncode == 0, done.stderr[-3000:]
    assert peak < GRADER_MEMORY, f"{peak >> 20} MiB"
    assert _result(own_course, "honest") is not None
    skipped = [line for line in done.stdout.splitlines() if line.startswith("skipped: ")]
    bombs = [line for line in skipped if "bomb" in line]
    assert len(bombs) == 120 and all("compressed more than" in line for line in bombs)
    for member, reason in [("../x.ipynb", "unsafe path"), ("/abs/backprop.ipynb", "unsafe path"),
                           ("linked/backprop.ipynb", "a symbolic link"),
                           ("oversize/backprop.ipynb", "larger than"),
                           ("=HYPERLINK(1)/backprop.ipynb", "not a usable student id"),
                           ("twice", "holds 2 notebooks (a.ipynb, b.ipynb); one is expected")]:
        assert any(member in line and reason in line for line in skipped), (member, skipped)
    submitted = own_course.root / "submitted"
    assert not list(submitted.glob("bomb*")) and not (submitted / "oversize").exists()
    assert not (submitted / "linked").exists() and not (submitted / "twice").exists()
    assert not (own_course.root.parent / "x.ipynb").exists()
    used = sum(p.stat().st_size for p in own_course.root.rglob("*") if p.is_file())
    assert used < 300 * 1024 * 1024


def test_member_count_and_total_size_caps_skip_the_rest(own_course: Course, honest: str,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    download = tmp_path / "many.zip"
    with zipfile.ZipFile(download, "w") as archive:
        for number in range(6):
            archive.writestr(f"many{number}/backprop.ipynb", honest)
    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBERS", 4)
    found, skipped = collect(own_course, "backprop", "backprop", download)
    assert [s.student_id for s in found] == ["many0", "many1", "many2", "many3"]
    assert [s.reason for s in skipped] == [
        "holds 6 members; the 2 after the first 4 are skipped"]

    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBERS", 100)
    monkeypatch.setattr(submissions, "MAX_ZIP_TOTAL_BYTES", int(2.5 * len(honest)))
    found, skipped = collect(own_course, "backprop", "backprop", download)
    assert len(found) == 2
    assert len(skipped) == 4 and all("in all" in s.reason for s in skipped)


def test_a_corrupt_member_is_skipped_and_the_rest_collected(own_course: Course, honest: str,
                                                            tmp_path: Path) -> None:
    download = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(download, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good/backprop.ipynb", honest)
        archive.writestr("bad/backprop.ipynb", honest)
        offset = archive.getinfo("bad/backprop.ipynb").header_offset
    data = bytearray(download.read_bytes())
    data[offset + 30 + len("bad/backprop.ipynb") + 40] ^= 0xFF  # inside its deflated data
    download.write_bytes(bytes(data))
    found, skipped = collect(own_course, "backprop", "backprop", download)
    assert [s.student_id for s in found] == ["good"]
    assert skipped[0].item == "corrupt.zip:bad/backprop.ipynb"
    assert "cannot be read from the zip" in skipped[0].reason
