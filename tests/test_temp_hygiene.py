"""Nothing the grader makes in the host's temporary folder outlives its run: not a Dask batch's
unpacked assignments, not `doctor`'s sandbox check; what a killed `grade` left is removed by
the next one, and what a live process uses is left alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from distributed import Client, LocalCluster

from autograder import commands
from autograder.author import with_answers
from autograder.course import Course
from autograder.tempfiles import make_temp_dir, owner_pid, remove_tree, temp_root
from tests.conftest import (
    AUTOGRADER,
    REPO,
    descendants,
    temp_leftovers,
    temp_names,
    write_submissions,
)

EXAMPLES = REPO / "examples" / "submitted"


def test_a_dask_batch_leaves_nothing(course) -> None:
    before = temp_names()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        with Client(cluster) as client:
            workers = set(client.run(os.getpid).values())
        results = commands.grade(course, "backprop", EXAMPLES, regrade=True,
                                 scheduler=cluster.scheduler_address)
        assert {r.student_id: r.score for r in results}["solution"] == 10
        during = temp_names() - before
        # The workers did unpack the assignment here: what follows is not checked in vain.
        assert any(name.startswith("autograder-assignment-") for name in during), during
    assert temp_leftovers(before, owners=workers) == []


def test_doctor_leaves_nothing() -> None:
    before = temp_names()
    doctor = subprocess.Popen([*AUTOGRADER, "doctor"], stdout=subprocess.PIPE, text=True)
    output, _ = doctor.communicate()
    assert doctor.returncode == 0, output
    assert temp_leftovers(before, owners={doctor.pid}) == []


def test_a_killed_grade_leaves_folders_that_the_next_grade_removes(
        course, tmp_path, release_notebook, solution) -> None:
    course = Course.load(shutil.copytree(course.root, tmp_path / "course"))  # a course of its own
    hang = {**solution, next(iter(solution)): "import time\ntime.sleep(600)\n"}
    incoming = write_submissions(tmp_path / "incoming",
                                 {"hangs": with_answers(release_notebook, hang)})
    command = [*AUTOGRADER, "--course", str(course.root), "grade", "backprop", str(incoming),
               "--workers", "1"]
    before = temp_names()
    first = subprocess.Popen([*command, "--timeout", "300"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    family = _wait_for_a_folder(before, first)
    time.sleep(3)  # the warm server starts and the job runs (and sleeps): its folder lives in
    # the job's own private /tmp, never on the host, so what is left here is the server's
    os.killpg(first.pid, signal.SIGKILL)  # no clean-up at all (its warm server, in a session
    first.wait()                          # of its own, sees the grader gone and ends)
    left = {name for name in temp_names() - before if owner_pid(name) in family}
    assert left  # what a killed run leaves (its server's IPython folder), until...

    live_owner = subprocess.Popen(["sleep", "120"])
    live = make_temp_dir("job", owner=live_owner.pid)  # another course's batch, still running
    (live / "in-use").write_text("x")
    try:
        second = subprocess.run([*command, "--timeout", "2"], capture_output=True, text=True)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "could not remove" not in second.stdout
        assert not [name for name in left if (temp_root() / name).exists()]  # ...the next start
        assert (live / "in-use").exists()
    finally:
        live_owner.kill()
        live_owner.wait()
        assert remove_tree(live) == []


def _wait_for_a_folder(before: set[str], grade: subprocess.Popen,
                       patience: float = 120) -> set[int]:
    """Wait until a temporary folder of `grade` (or of its warm server) exists; returns the
    pids of `grade` and of the descendants it had meanwhile."""
    family = {grade.pid}
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        family |= descendants(grade.pid)
        if any(owner_pid(name) in family for name in temp_names() - before):
            return family
        assert grade.poll() is None, "grade ended before its job started"
        time.sleep(0.05)
    raise AssertionError(f"no folder of grade (pid {grade.pid}) within {patience} s")
