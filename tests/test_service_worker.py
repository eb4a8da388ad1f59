"""The service's worker on a real SQLite file and a real PostgreSQL database, grading with the
real Grader (warm sandboxed pool) and the real course: results recorded once, stale versions
left for the regrade, one worker per SQLite file, and real `autograder worker` processes
killed with -9 mid-job or stopped with a full queue."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import func, select

from autograder.assignment import Assignment
from autograder.author import with_answers
from autograder.course import Course
from autograder.grader import Grader
from autograder.results import SubmissionResult
from autograder.service import queue
from autograder.service.database import Database
from autograder.service.models import Job, JobState, Person, Result
from autograder.service.worker import ServiceWorker, WorkerAlreadyRunning
from tests.conftest import AUTOGRADER, make_course, train_step_calling
from tests.databases import wait_for

NO_ZERO_GRAD = train_step_calling("loss.backward()", "optimizer.step()")


@pytest.fixture(scope="module")
def grader(course: Course):
    with Grader(course, workers=2) as warm:
        warm.start()
        yield warm


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    database.upgrade()
    with database.session() as session:
        session.add_all([Person(id=student) for student in ("right", "wrong", "slow")]
                        + [Person(id=f"s{n:02d}") for n in range(20)])
    yield database
    database.dispose()


def notebook_bytes(course: Course, answers: dict[str, str]) -> bytes:
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    return nbformat.writes(with_answers(release, answers)).encode()


def fingerprint(course: Course) -> str:
    return Assignment.load(course, "backprop").fingerprint


def enqueue(db: Database, student: str, content: bytes, version: str) -> int:
    with db.session() as session:
        submission = queue.enqueue_submission(session, student_id=student, assignment="backprop",
                                              filename="backprop.ipynb", content=content,
                                              fingerprint=version)
        return submission.jobs[0].id


def rows(db: Database) -> list[Result]:
    with db.session(readonly=True) as session:
        return list(session.scalars(select(Result).order_by(Result.job_id)))


def job(db: Database, job_id: int) -> Job:
    with db.session(readonly=True) as session:
        return session.get(Job, job_id)


def test_queued_notebooks_are_graded_and_recorded(db: Database, grader: Grader, course: Course,
                                                  solution: dict[str, str]) -> None:
    version = fingerprint(course)
    right = enqueue(db, "right", notebook_bytes(course, solution), version)
    wrong = enqueue(db, "wrong", notebook_bytes(course, {**solution, "train_step": NO_ZERO_GRAD}),
                    version)
    stale = enqueue(db, "wrong", notebook_bytes(course, solution), "0" * 64)
    seen: list[Result] = []
    with ServiceWorker(db, grader, on_result=seen.append) as worker:
        assert worker.run_until_idle(timeout=120) == 2
    assert sorted(row.job_id for row in seen) == [right, wrong]
    graded = {row.student_id: row for row in rows(db)}
    assert set(graded) == {"right", "wrong"}
    full = graded["right"]
    assert full.status == "graded" and full.score == full.max_score > 0 and full.published
    assert graded["wrong"].status == "graded" and 0 < graded["wrong"].score < full.max_score
    stored = SubmissionResult.from_json(graded["wrong"].result_json)
    assert stored.student_id == "wrong" and stored.score == graded["wrong"].score
    assert any(not test.passed and "zero_grad" in test.message for test in stored.tests)
    assert graded["right"].seconds > 0
    for job_id in (right, wrong):
        assert job(db, job_id).state == JobState.DONE and job(db, job_id).attempts == 1
    # A job queued for a version the course no longer has waits for the instructor's regrade.
    left = job(db, stale)
    assert left.state == JobState.QUEUED and left.attempts == 0
    assert queue.waiting_versions(db) == {("backprop", "0" * 64)}
    with db.session(readonly=True) as session:
        assert queue.eta_seconds(session, stale, graders=2) > 0


def test_stopping_gives_an_unfinished_job_back_to_the_queue(db: Database, course: Course,
                                                             solution: dict[str, str]) -> None:
    """SIGTERM's path: jobs in flight get `drain_seconds` to finish; the rest are cancelled
    and queued again, not counted as attempts, and nothing is recorded for them."""
    slow = {**solution, "chain_rule": "import time\ntime.sleep(60)\n" + solution["chain_rule"]}
    job_id = enqueue(db, "slow", notebook_bytes(course, slow), fingerprint(course))
    stop = threading.Event()
    with Grader(course, workers=1) as own, ServiceWorker(db, own, drain_seconds=0.5) as worker:
        running = threading.Thread(target=worker.run, args=(stop,))
        running.start()
        wait_for(lambda: job(db, job_id).state == JobState.LEASED, timeout=60)
        time.sleep(3)  # warm-up done, the cell sleeping
        started = time.monotonic()
        stop.set()
        running.join(timeout=30)
        assert not running.is_alive() and time.monotonic() - started < 15
    back = job(db, job_id)
    assert (back.state, back.attempts, back.lease_owner) == (JobState.QUEUED, 0, None)
    assert rows(db) == []


def test_a_second_worker_on_one_sqlite_file_refuses(tmp_path: Path, grader: Grader) -> None:
    db = Database(f"sqlite:///{tmp_path / 'service.db'}")
    db.upgrade()
    first = ServiceWorker(db, grader, name="first")
    with pytest.raises(WorkerAlreadyRunning, match="first.*one worker"):
        ServiceWorker(db, grader, name="second")
    first.close()
    ServiceWorker(db, grader, name="second").close()  # the first has gone: allowed
    db.dispose()


def test_postgresql_takes_many_workers(postgres, grader: Grader) -> None:  # noqa: ANN001
    db = Database(postgres.create())
    db.upgrade()
    with ServiceWorker(db, grader), ServiceWorker(db, grader):
        pass
    db.dispose()


# --- real `autograder worker` processes -------------------------------------------------

def course_copy(course: Course, tmp_path: Path, lease_seconds: float) -> Path:
    """The course, with the service's lease set short (what `autograder worker` reads)."""
    root = tmp_path / "course"
    shutil.copytree(course.root, root, ignore=shutil.ignore_patterns(
        "service.db*", "submitted", "autograded", "feedback", "results"))
    with (root / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.Service.lease_seconds = {lease_seconds}\n")
    return root


def start_worker(root: Path, url: str, log: Path, workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen([*AUTOGRADER, "--course", str(root), "worker", "--database", url,
                             "--workers", str(workers)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]


def states(db: Database) -> dict[str, int]:
    with db.session(readonly=True) as session:
        return dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())


def test_kill_9_mid_job_another_worker_grades_it_once(db: Database, course: Course,
                                                      solution: dict[str, str],
                                                      tmp_path: Path) -> None:
    root = course_copy(course, tmp_path, lease_seconds=1.5)
    slow = {**solution, "chain_rule": "import time\ntime.sleep(6)\n" + solution["chain_rule"]}
    job_id = enqueue(db, "slow", notebook_bytes(course, slow), fingerprint(course))
    log = tmp_path / "workers.log"
    first = start_worker(root, db.url, log)
    try:
        leased = wait_for(lambda: (found := job(db, job_id)).state == JobState.LEASED and found,
                          timeout=60)
        assert leased.lease_owner.split(":")[1] == str(first.pid)
        # The heartbeat renews the 1.5 s lease while the notebook runs (warm-up, then 6 s).
        time.sleep(3.5)
        renewed = job(db, job_id)
        assert renewed.state == JobState.LEASED and renewed.lease_owner == leased.lease_owner
        assert renewed.lease_expires_at > leased.lease_expires_at
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert rows(db) == []
    second = start_worker(root, db.url, log)
    try:
        if db.is_sqlite:  # one worker per SQLite file: a third refuses, clearly
            wait_for(lambda: log.read_text().count("grading the queue") == 2,
                     timeout=60)
            refused = subprocess.run([*AUTOGRADER, "--course", str(root), "worker",
                                      "--database", db.url], capture_output=True, text=True,
                                     timeout=120)
            assert refused.returncode != 0
            assert "another worker" in refused.stderr and "one worker" in refused.stderr
        done = wait_for(lambda: (found := job(db, job_id)).state == JobState.DONE and found,
                        timeout=120, interval=0.1)
    finally:
        stop(second, log)
    assert done.attempts == 2
    assert done.lease_owner.split(":")[1] == str(second.pid)
    [result] = rows(db)
    assert result.job_id == job_id and result.score == result.max_score
    assert f"graded {result.submission_id}" in log.read_text()


def test_restart_with_a_full_queue_grades_every_submission_once(db: Database, course: Course,
                                                                solution: dict[str, str],
                                                                tmp_path: Path) -> None:
    root = course_copy(course, tmp_path, lease_seconds=5)
    version = fingerprint(course)
    content = notebook_bytes(course, solution)
    ids = [enqueue(db, f"s{n:02d}", content, version) for n in range(20)]
    log = tmp_path / "workers.log"
    first = start_worker(root, db.url, log, workers=2)
    try:
        wait_for(lambda: states(db).get(JobState.DONE, 0) >= 4, timeout=120, interval=0.05)
    finally:
        stop(first, log)  # SIGTERM: its jobs in flight finish or go back to the queue
    after_first = states(db)
    assert JobState.LEASED not in after_first, after_first
    assert 4 <= after_first[JobState.DONE] < 20, after_first  # it stopped with work left
    second = start_worker(root, db.url, log, workers=2)
    try:
        wait_for(lambda: states(db) == {JobState.DONE: 20}, timeout=180, interval=0.1)
    finally:
        stop(second, log)
    results = rows(db)
    assert [row.job_id for row in results] == ids  # every job once, none twice
    assert len({row.submission_id for row in results}) == 20
    assert all(row.score == row.max_score for row in results)
    printed = [line for line in log.read_text().splitlines() if line.startswith("graded ")]
    assert len(printed) == 20
    assert sum(int(line.split("stopped, ")[1].split()[0])
               for line in log.read_text().splitlines() if "stopped, " in line) == 20


def test_uploads_queued_before_the_tests_changed_are_graded_with_the_new_version(
        database_url: str, course: Course, solution: dict[str, str], tmp_path: Path) -> None:
    """An instructor edits tests.py while 6 uploads wait: on the course's machine the worker
    moves them to the current version and grades them all (none stranded); a worker that may
    hold an older copy of the course (no repoint_stale) leaves them."""
    root = tmp_path / "course"
    shutil.copytree(course.root, root, ignore=shutil.ignore_patterns("service.db*"))
    copy = Course.load(root)
    db = Database(database_url)
    db.upgrade()
    try:
        with db.session() as session:
            session.add_all([Person(id=f"s{n:02d}") for n in range(6)])
        old = fingerprint(copy)
        jobs = [enqueue(db, f"s{n:02d}", notebook_bytes(copy, solution), old) for n in range(6)]
        with (copy.hidden_dir("backprop") / "tests.py").open("a") as tests:
            tests.write("\n# clarified by the instructor\n")
        new = fingerprint(copy)
        assert new != old
        with Grader(copy, workers=2) as grader:
            grader.start()
            with ServiceWorker(db, grader) as elsewhere:
                assert elsewhere.run_until_idle(timeout=60) == 0
            assert {job(db, n).fingerprint for n in jobs} == {old}
            with ServiceWorker(db, grader, repoint_stale=True) as worker:
                assert worker.run_until_idle(timeout=300) == 6
        for n in jobs:
            assert job(db, n).state == JobState.DONE and job(db, n).fingerprint == new
        graded = rows(db)
        assert len(graded) == 6 and all(row.score == row.max_score > 0 for row in graded)
        assert queue.waiting_versions(db) == set()
    finally:
        db.dispose()


def test_the_course_files_follow_in_few_batches_with_the_graders_assignment(
        db: Database, tmp_path: Path, solution: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Results that come faster than the course's files are written reach them in batches, at
    most one every AFTER_EVERY_SECONDS (and one more at the stop), each student once, with
    the assignment the grader has loaded (not read from the course again for each batch)."""
    from autograder import assignment as assignments
    from autograder.execute.fake import FakeExecutor
    from autograder.service import course_sync
    from autograder.service.worker import AFTER_EVERY_SECONDS, course_sync_batch

    course = make_course(tmp_path)
    students = [f"s{n:02d}" for n in range(20)]
    content = notebook_bytes(course, solution)
    with Grader(course, workers=2, executors=lambda: FakeExecutor(seconds=0.0)) as grader:
        version = grader.assignment("backprop").fingerprint
        for student in students:
            enqueue(db, student, content, version)
        loads: list[str] = []
        real_load = assignments.Assignment.load
        monkeypatch.setattr(assignments.Assignment, "load", classmethod(
            lambda cls, *args, **kwargs: loads.append("load") or real_load(*args, **kwargs)))
        sync = course_sync_batch(course, db, grader)
        batches: list[list[str]] = []

        def on_results(results: list[Result]) -> None:
            batches.append([row.student_id for row in results])
            sync(results)

        began = time.monotonic()
        with ServiceWorker(db, grader, on_results=on_results) as worker:
            assert worker.run_until_idle(timeout=120) == len(students)
        seconds = time.monotonic() - began
    assert sorted(s for batch in batches for s in batch) == students  # each once
    # the first at once, then one per interval, and the last when the worker stops
    assert len(batches) <= seconds / AFTER_EVERY_SECONDS + 2
    assert loads == []  # the grader's loaded assignment served every batch
    assert course_sync.pending(course, db) == set()
    for student in students:
        kept = course.submitted_dir(student, "backprop") / "backprop.ipynb"
        assert kept.read_bytes() == content
