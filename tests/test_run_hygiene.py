"""A run an instructor can trust (issue 8, item 7), with real `autograder` processes: the course
lock, Ctrl-C, --student from submitted/, kept timeouts, the demo in a scratch course,
--course anywhere, unknown assignment names, and the summary that ends each run."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat

from autograder import commands
from autograder.interrupts import Interrupted
from autograder.lock import LOCK_FILE
from autograder.results import SubmissionResult, TestResult
from autograder.summary import GradeRun, render
from tests.conftest import (
    AUTOGRADER,
    REPO,
    descendants,
    grade_answers,
    make_course,
    write_submissions,
)
from tests.test_cheats import _sandbox_processes

SOLUTION = REPO / "examples" / "submitted" / "solution" / "backprop" / "backprop.ipynb"
HANG = "while True:\n    pass\n"


def _incoming(folder: Path, students: dict[str, bool]) -> Path:
    """{student: hangs?}: the shipped solution, with an endless loop in a cell of its own."""
    notebooks = {}
    for student, hangs in students.items():
        notebook = nbformat.read(SOLUTION, as_version=4)
        if hangs:
            notebook.cells.insert(1, nbformat.v4.new_code_cell(HANG))
        notebooks[student] = notebook
    return write_submissions(folder, notebooks)


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _grade(course_root: Path, *args: str) -> list[str]:
    return [*AUTOGRADER, "grade", "backprop", *args, "--course", str(course_root)]


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(process: subprocess.Popen, prefix: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line {prefix!r}: {lines} {process.stderr.read()}")


def _lock_holder(root: Path, deadline: float = 60) -> int | None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        text = (root / LOCK_FILE).read_text() if (root / LOCK_FILE).exists() else ""
        if text.strip():
            return int(text)
        time.sleep(0.1)
    return None


def test_a_second_grade_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path) -> None:
    course = make_course(_folder(tmp_path / "course"))
    incoming = _incoming(tmp_path / "incoming", {"lock-hang": True})
    first = _start(_grade(course.root, str(incoming), "--workers", "1"))
    try:
        assert _lock_holder(course.root) == first.pid
        second = subprocess.run(_grade(course.root, str(incoming)), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        assert f"grading is already running (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        first.kill()  # dies holding the lock: no cleanup of its own
        first.wait()
    finally:
        first.kill()
        first.communicate()
    quick = _incoming(tmp_path / "quick", {"lock-fine": False})
    third = subprocess.run(_grade(course.root, str(quick)), capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    assert "[1/1] lock-fine: 10/10" in third.stdout


def test_ctrl_c_stops_at_once_with_one_line_and_the_rerun_resumes(tmp_path) -> None:
    course = make_course(_folder(tmp_path / "course"))
    students = {"a-fine": False, "b-fine": False, "c-hang": True, "d-fine": False}
    incoming = _incoming(tmp_path / "incoming", students)
    def command(timeout: str) -> list[str]:
        return _grade(course.root, str(incoming), "--workers", "1", "--timeout", timeout)

    run = _start(command("60"))
    _wait_for_line(run, "[2/4]")
    time.sleep(1.0)  # c-hang's endless loop is running now
    helpers = descendants(run.pid)  # the warm server and its slots
    assert helpers
    sent = time.monotonic()
    run.send_signal(signal.SIGINT)
    run.wait(timeout=10)
    took = time.monotonic() - sent
    rest, errors = run.stdout.read(), run.stderr.read()
    run.stdout.close()
    run.stderr.close()
    assert took < 2.0, took
    assert run.returncode == 130
    assert errors.splitlines() == ["interrupted: 2 of 4 graded and stored; run the same "
                                   "command again to resume"], errors
    assert "Traceback" not in rest
    time.sleep(0.5)
    assert not [pid for pid in helpers if os.path.exists(f"/proc/{pid}")
                and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
    assert _sandbox_processes() == []
    graded = set(commands.gradebook_table(course, "backprop").index)
    assert graded == {"a-fine", "b-fine"}

    rerun = subprocess.run(command("5"), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 already graded and unchanged: kept" in rerun.stdout
    progress = [line for line in rerun.stdout.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in progress] == ["[1/2] c-hang", "[2/2] d-fine"]


def test_student_regrades_from_submitted_and_keeps_the_timestamp(course, release_notebook,
                                                                 solution, tmp_path) -> None:
    stamp = b"2025-02-03 04:05:06.000000 UTC"
    grade_answers(course, release_notebook, tmp_path, {"hyg-stamp": solution},
                  timestamps={"hyg-stamp": stamp})
    stored = course.submitted_dir("hyg-stamp", "backprop") / "timestamp.txt"
    assert stored.read_bytes() == stamp
    done = subprocess.run(_grade(course.root, "--student", "hyg-stamp"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[1/1] hyg-stamp: 10/10" in done.stdout  # graded again, though unchanged
    assert stored.read_bytes() == stamp
    typo = subprocess.run(_grade(course.root, "dave"), capture_output=True, text=True)
    assert typo.returncode == 2
    assert ("'dave' is not a file or folder; to grade one student from submitted/, use "
            "--student dave") in typo.stderr
    one = subprocess.run(_grade(course.root, str(SOLUTION)), capture_output=True, text=True)
    assert one.returncode == 2 and "--student" in one.stderr
    assert not course.submitted_dir("backprop", "backprop").exists()  # nobody invented


def test_a_timeout_is_kept_like_any_verdict_unless_regrade(course, release_notebook,
                                                           solution, tmp_path) -> None:
    notebook = nbformat.read(SOLUTION, as_version=4)
    notebook.cells.insert(1, nbformat.v4.new_code_cell(HANG))
    folder = write_submissions(tmp_path / "incoming", {"hyg-timeout": notebook})
    first = commands.grade(course, "backprop", folder, timeout=4)
    assert first[0].status == "timeout"
    out = io.StringIO()
    again = commands.grade(course, "backprop", folder, timeout=4, out=out)
    assert "1 already graded and unchanged: kept" in out.getvalue()
    assert again[0].status == "timeout" and again[0].seconds == first[0].seconds
    out = io.StringIO()
    commands.grade(course, "backprop", folder, timeout=4, out=out, regrade=True)
    assert "[1/1] hyg-timeout: 0/10 timeout" in out.getvalue()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in root.rglob("*") if path.is_file()}


def test_the_demo_runs_in_a_scratch_course(tmp_path) -> None:
    course = make_course(_folder(tmp_path / "course"))
    shutil.copytree(REPO / "examples", course.root / "examples")
    before = _tree(course.root)
    scratch = tmp_path / "demo"
    done = subprocess.run([*AUTOGRADER, "demo", "--course", str(course.root), "--into",
                           str(scratch)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _tree(course.root) == before  # gradebook.db (the release made it) unchanged
    for name in ("submitted", "autograded", "feedback", "exports"):
        assert not (course.root / name).exists()
        assert (scratch / name).is_dir()
    assert f"the demo's output is in {scratch}" in done.stdout
    rows = (scratch / "exports" / "backprop.csv").read_text().splitlines()
    assert len(rows) == 1 + 6


def test_course_anywhere_and_unknown_assignment_names(course) -> None:
    for args in (["--course", str(course.root), "handout", "backprop"],
                 ["handout", "backprop", "--course", str(course.root)]):
        done = subprocess.run([*AUTOGRADER, *args], capture_output=True, text=True, cwd="/")
        assert done.returncode == 0, done.stderr
    for command in ("grade", "export", "release", "handout"):
        done = subprocess.run([*AUTOGRADER, command, "backprp", "--course", str(course.root)],
                              capture_output=True, text=True)
        assert done.returncode == 2
        assert done.stderr.strip() == ("autograder: error: unknown assignment 'backprp' "
                                       "(known: backprop)"), done.stderr


def test_each_run_ends_with_a_summary(course, tmp_path) -> None:
    folder = tmp_path / "incoming"
    for student, example in (("sum-solution", "solution"), ("sum-blank", "blank")):
        target = folder / student / "backprop"
        target.mkdir(parents=True)
        shutil.copy(REPO / "examples" / "submitted" / example / "backprop" / "backprop.ipynb",
                    target)
    twice = folder / "sum-twice" / "backprop"
    twice.mkdir(parents=True)
    for name in ("a.ipynb", "b.ipynb"):
        shutil.copy(SOLUTION, twice / name)
    done = subprocess.run(_grade(course.root, str(folder), "--regrade"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = done.stdout[done.stdout.index("\n== backprop: "):].strip().splitlines()
    assert summary[0] == "== backprop: 2 submissions (2 graded now, 0 kept), 1 skipped"
    assert summary[1] == "graded 2, timed out 0, invalid 0, crashed 0, skipped 1"
    assert all(len(line) <= 80 for line in summary)
    rates = [line for line in summary if re.search(r"\d+/2 +\d+%", line)]
    assert len(rates) == 9 and all(" 1/2 " in line and "50%" in line for line in rates)
    assert "  Part 3: Training with backprop" in summary
    bins = {line.split("|")[0].strip(): line.split("|")[1].strip() for line in summary
            if re.match(r" +\d+ \|", line)}
    assert len(bins) == 11 and bins["0"].endswith("# 1") and bins["10"].endswith("# 1")
    assert all(bins[str(score)] == "" for score in range(1, 10))
    assert done.stdout.strip().splitlines()[-len(summary):] == summary  # the run ends with it
    skipped = [line for line in done.stdout.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and "sum-twice" in skipped[0] and "2 notebooks" in skipped[0]
    assert "sum-twice" not in done.stderr  # said once, in the summary, not logged again


def test_the_summary_counts_late_work_and_shows_scores_after_the_penalty() -> None:
    def result(student: str, points: float, seconds_late: float, penalty: float):
        tests = [TestResult(name="t", cell="c", points=points, max_points=10,
                            passed=points == 10, title="the test", part="Part 1")]
        return SubmissionResult(student_id=student, assignment="backprop", notebook="backprop",
                                status="graded", tests=tests, seconds_late=seconds_late,
                                late_penalty=penalty)

    run = GradeRun(assignment="backprop", graded_now=3, results=[
        result("on-time", 10, 0, 0), result("late-zeroed", 10, 3600, 10),
        result("late-free", 4, 60, 0)])
    lines = render(run).splitlines()
    assert "late 2, penalised 1 (10 points in all); scores below are after it" in lines
    bins = {line.split("|")[0].strip(): line.split("|")[1].strip() for line in lines
            if re.match(r" +\d+ \|", line)}
    assert bins["0"].endswith("# 1") and bins["4"].endswith("# 1") and bins["10"].endswith("# 1")
    assert any(line.startswith("scores (out of 10): mean 4.67") for line in lines)


def test_an_interrupted_regrade_says_how_to_resume() -> None:
    assert str(Interrupted(3, 9)).endswith("run the same command again to resume")
    assert str(Interrupted(3, 9, regrade=True)).endswith(
        "run it again without --regrade to resume")


def test_a_reader_that_goes_away_ends_the_command_quietly(course) -> None:
    """`autograder roster | head -1`: no traceback when the pipe closes."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before anything is written
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "roster"],
                          stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(writer)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
