"""One job cannot starve its neighbour: each slot has one core's worth of CPU (a cpu cgroup),
so an honest submission graded beside a job of 60 busy processes keeps its score and its
pace."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograder.assignment import Assignment
from autograder.author import with_answers
from autograder.engine import grade_submission
from autograder.execute.warm import WarmPool
from autograder.results import SubmissionResult
from autograder.submissions import Submission

TIMEOUT = 60.0
HOG_TIMEOUT = 25.0  # the hog spins until this, then its slot kills all it started
SPINNERS = 60
# 60 processes that spin until killed, each in its own session (out of the job's process
# group), started at once (small shells, not forks of this big process); the notebook's own
# process spins too.
HOG = ("import subprocess\n"
       f"for _ in range({SPINNERS}):\n"
       "    subprocess.Popen(['sh', '-c', 'while :; do :; done'], start_new_session=True)\n"
       "while True:\n"
       "    pass\n")


def _spinners() -> int:
    listing = subprocess.run(["ps", "-eo", "uid=,args="], capture_output=True, text=True).stdout
    return sum(1 for line in listing.splitlines()
               if int(line.split()[0]) >= 100_000 and "while :; do :; done" in line)


@pytest.mark.skipif(os.getuid() != 0, reason="cgroups need root")
def test_an_honest_job_beside_a_cpu_hog_keeps_its_score_and_pace(course, release_notebook,
                                                                  solution, tmp_path) -> None:
    assignment = Assignment.load(course, "backprop")
    honest = tmp_path / "honest.ipynb"
    nbformat.write(with_answers(release_notebook, solution), honest)
    hog = with_answers(release_notebook, solution)
    hog.cells.insert(1, nbformat.v4.new_code_cell(HOG))
    nbformat.write(hog, tmp_path / "hog.ipynb")

    def grade_honestly(slot, times: int) -> list[SubmissionResult]:
        return [grade_submission(assignment, Submission(f"honest-{n}", honest), TIMEOUT, slot)
                for n in range(times)]

    # Two slots of one warm server, as `grade --workers 2` runs them.
    with WarmPool(2) as pool:
        pool.start()
        with pool.slot() as neighbour, pool.slot() as slot:
            alone = grade_honestly(slot, 4)
            assert all(result.score == 10 for result in alone)
            pace = statistics.median(result.seconds for result in alone)

            hogged: list[SubmissionResult] = []
            hogging = threading.Thread(target=lambda: hogged.append(grade_submission(
                assignment, Submission("hog", tmp_path / "hog.ipynb"), HOG_TIMEOUT, neighbour)))
            hogging.start()
            deadline = time.monotonic() + 30
            while _spinners() < SPINNERS and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _spinners() == SPINNERS  # all of them spinning now, in the other slot
            beside = grade_honestly(slot, 4)
            for result in beside:
                assert result.status == "graded" and result.score == 10, result.reason
                assert result.seconds <= 2.5 * pace, ([r.seconds for r in beside], pace)
            assert _spinners() == SPINNERS  # ... and all through the honest jobs
            hogging.join()
    assert hogged and hogged[0].status == "timeout"
    assert _spinners() == 0
    assert Path(honest).is_file()
