"""The Grader is the one seam: the same results from `grade_one` on many threads as from
`grade_many`, on the local warm pool and on a real Dask cluster (one Client, each assignment
version scattered once); a changed hidden test makes a queued version stale; a submission
from bytes grades as the same file does; an unreadable notebook costs its student only."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from distributed import LocalCluster

from autograder.course import Course
from autograder.grader import Grader, StaleAssignment
from autograder.results import INVALID, SubmissionResult
from autograder.submissions import Submission
from tests.conftest import REPO

EXAMPLES = REPO / "examples" / "submitted"


def _submissions(tmp_path: Path) -> list[Submission]:
    """The six examples, and one student whose "notebook" is a symbolic link (refused by the
    bounded read: SubmissionError)."""
    found = [Submission(folder.name, folder / "backprop" / "backprop.ipynb",
                        "2026-01-01 10:00:00 UTC")
             for folder in sorted(EXAMPLES.iterdir())]
    link = tmp_path / "linked" / "backprop.ipynb"
    link.parent.mkdir()
    link.symlink_to(EXAMPLES / "solution" / "backprop" / "backprop.ipynb")
    return [*found, Submission("linked", link, "2026-01-01 10:00:00 UTC")]


def _key(result: SubmissionResult) -> tuple:
    """What a student is graded on and told, and what the instructor keeps."""
    return (result.student_id, str(result.status), result.score, result.fingerprint,
            [(t.name, t.points, t.message) for t in result.tests], result.graded_on.get("seed"),
            result.sandbox_off)


def _in_threads(grader: Grader, assignment, submissions: list[Submission],
                threads: int) -> list[SubmissionResult]:
    """`grade_one` from `threads` threads, all released at once."""
    gate = threading.Barrier(threads)
    results: list[SubmissionResult] = []
    errors: list[BaseException] = []

    def grade(share: list[Submission]) -> None:
        try:
            gate.wait(timeout=60)
            for submission in share:
                results.append(grader.grade_one(assignment, submission))
        except BaseException as error:  # noqa: BLE001  (reported by the test below)
            errors.append(error)

    workers = [threading.Thread(target=grade, args=(submissions[n::threads],))
               for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    return sorted(results, key=lambda result: result.student_id)


@pytest.fixture(scope="module")
def graded_many(course, tmp_path_factory) -> tuple[list[Submission], list[SubmissionResult]]:
    submissions = _submissions(tmp_path_factory.mktemp("grader"))
    with Grader(course, workers=2) as grader:
        results = grader.grade_many(grader.assignment("backprop"), submissions)
    return submissions, results


def test_grade_many_grades_each_and_an_unreadable_notebook_costs_its_student_only(
        graded_many) -> None:
    _, results = graded_many
    by_student = {result.student_id: result for result in results}
    assert by_student["solution"].score == 10
    assert by_student["linked"].status == INVALID and by_student["linked"].score == 0
    assert "symbolic link" in by_student["linked"].reason
    assert len(results) == 7


def test_grade_one_from_four_threads_on_two_slots_matches_grade_many(course,
                                                                      graded_many) -> None:
    submissions, many = graded_many
    with Grader(course, workers=2) as grader:
        assert grader.size == 2
        assignment = grader.assignment("backprop")
        at_once = _in_threads(grader, assignment, submissions, threads=4)
    assert [_key(r) for r in at_once] == [_key(r) for r in many]


def test_a_submission_from_bytes_grades_like_the_same_file(course, graded_many) -> None:
    submissions, many = graded_many
    [from_file] = [r for r in many if r.student_id == "missing-zero-grad"]
    path = EXAMPLES / "missing-zero-grad" / "backprop" / "backprop.ipynb"
    uploaded = Submission("missing-zero-grad", Path("upload.ipynb"), "2026-01-01 10:00:00 UTC",
                          content=path.read_bytes())
    with Grader(course, workers=1) as grader:
        from_bytes = grader.grade_one(grader.assignment("backprop"), uploaded)
    assert 0 < from_bytes.score < 10
    assert _key(from_bytes) == _key(from_file)


def test_a_changed_hidden_test_makes_the_queued_version_stale(course, tmp_path) -> None:
    own = Course.load(shutil.copytree(course.root, tmp_path / "course", symlinks=True))
    grader = Grader(own, workers=1)
    try:
        old = grader.assignment("backprop")
        assert grader.assignment("backprop", old.fingerprint) is old  # loaded once
        tests = own.hidden_dir("backprop") / "tests.py"
        tests.write_text(tests.read_text() + "\n# a test changed\n")
        with pytest.raises(StaleAssignment, match="backprop"):
            grader.assignment("backprop", old.fingerprint)
        new = grader.assignment("backprop")
        assert new.fingerprint != old.fingerprint
        assert grader.assignment("backprop", new.fingerprint) is new
    finally:
        grader.close()  # its pool never started: nothing to wait for


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as local_cluster:
        yield local_cluster


def test_on_dask_one_client_one_scatter_and_the_same_results(course, cluster,
                                                             graded_many) -> None:
    submissions, many = graded_many
    with Grader(course, scheduler=cluster.scheduler_address, workers=2) as grader:
        assert grader.pool is None and grader.cluster is not None
        grader.start()
        client = grader.cluster.client()
        scattered: list[object] = []
        scatter = client.scatter
        client.scatter = lambda *args, **kwargs: scattered.append(args) or scatter(*args,
                                                                                  **kwargs)
        assignment = grader.assignment("backprop")
        at_once = _in_threads(grader, assignment, submissions, threads=3)
        again = grader.grade_many(assignment, submissions[:2])
        assert grader.cluster.client() is client  # one Client for the grader's life
    assert len(scattered) == 1  # the assignment went to the cluster once
    assert [_key(r) for r in at_once] == [_key(r) for r in many]
    assert [_key(r) for r in again] == [_key(r) for r in many[:2]]


def test_the_warm_server_outlives_the_thread_that_started_it(course) -> None:
    """The server dies with the thread that forked it (PR_SET_PDEATHSIG): a grader started
    from a thread that then ends (a request thread, a shrinking thread pool) must keep it."""
    notebook = EXAMPLES / "solution" / "backprop" / "backprop.ipynb"
    with Grader(course, workers=1) as grader:
        starter = threading.Thread(target=grader.start)
        starter.start()
        starter.join()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and grader.pool.server.running:
            time.sleep(0.05)  # a killed server is seen within milliseconds
        assert grader.pool.server.running
        result = grader.grade_one(grader.assignment("backprop"),
                                  Submission("solution", notebook))
    assert result.status == "graded" and result.score == 10, result.reason
