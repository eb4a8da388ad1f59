"""The durable queue on a real SQLite file and a real PostgreSQL database: submissions stored
whole, jobs claimed by one worker at a time, leases that a dead worker loses, results written
exactly once, crash loops ended, positions and ETAs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import func, select

from autograder.results import GRADED, SubmissionResult, TestResult
from autograder.service import queue
from autograder.service.database import Database, DatabaseUnavailable
from autograder.service.models import Job, JobState, Person, Regrade, Result, Submission

FP = {"backprop": "f" * 64}


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    database.upgrade()
    with database.session() as session:
        session.add_all([Person(id=f"s{n}", name=f"Student {n}") for n in range(5)])
    yield database
    database.dispose()


def enqueue(db: Database, count: int = 1, student: str = "s1",
            fingerprint: str = FP["backprop"]) -> list[int]:
    ids = []
    with db.session() as session:
        for n in range(count):
            submission = queue.enqueue_submission(
                session, student_id=student, assignment="backprop", filename="backprop.ipynb",
                content=f'{{"n": {n}}}'.encode(), fingerprint=fingerprint)
            ids.append(submission.jobs[0].id)
    return ids


def a_result(seconds: float = 0.5, points: float = 1.0) -> SubmissionResult:
    return SubmissionResult(student_id="s1", assignment="backprop", notebook="backprop",
                            status=GRADED, seconds=seconds,
                            tests=[TestResult(name="t", cell="c", points=points, max_points=2.0,
                                              passed=points == 2.0, message="\x1b[31mred")])


def job(db: Database, job_id: int) -> Job:
    with db.session(readonly=True) as session:
        return session.get(Job, job_id)


def results(db: Database) -> list[Result]:
    with db.session(readonly=True) as session:
        return list(session.scalars(select(Result).order_by(Result.job_id)))


def test_an_upload_is_stored_whole_with_its_job_in_the_callers_transaction(db: Database) -> None:
    content = b'{"cells": [], "\xc3\xa9": "\x00 exact bytes"}'
    with db.session() as session:
        submission = queue.enqueue_submission(
            session, student_id="s1", assignment="backprop", filename="mine.ipynb",
            content=content, fingerprint="a" * 64,
            now=datetime(2026, 11, 20, 16, 59, tzinfo=UTC))
        submission_id = submission.id
    with db.session(readonly=True) as session:
        stored = session.get(Submission, submission_id)
        assert stored.content == content and stored.size == len(content)
        assert stored.sha256 == hashlib.sha256(content).hexdigest()
        assert stored.submitted_at == datetime(2026, 11, 20, 16, 59, tzinfo=UTC)
        assert stored.charged
        [stored_job] = stored.jobs
        assert (stored_job.state, stored_job.kind, stored_job.fingerprint,
                stored_job.attempts) == ("queued", "submit", "a" * 64, 0)
    # The caller's transaction fails after the enqueue: neither row is kept.
    with pytest.raises(RuntimeError), db.session() as session:
        queue.enqueue_submission(session, student_id="s2", assignment="backprop",
                                 filename="x.ipynb", content=b"{}", fingerprint="a" * 64)
        raise RuntimeError("the upload's answer could not be written")
    with db.session(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 1
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_an_unknown_student_is_refused_by_the_database(db: Database) -> None:
    with pytest.raises(sqlalchemy.exc.IntegrityError), db.session() as session:
        queue.enqueue_submission(session, student_id="nobody", assignment="backprop",
                                 filename="x.ipynb", content=b"{}", fingerprint="a" * 64)


def test_claim_leases_the_oldest_jobs_of_the_versions_the_worker_has(db: Database) -> None:
    old = enqueue(db, 1, fingerprint="0" * 64)
    current = enqueue(db, 3)
    assert queue.waiting_versions(db) == {("backprop", "0" * 64), ("backprop", "f" * 64)}
    claimed = queue.claim(db, "w1", FP, limit=2, lease_seconds=30)
    assert [c.job_id for c in claimed] == current[:2]
    assert claimed[0].content == b'{"n": 0}' and claimed[0].student_id == "s1"
    assert claimed[0].attempts == 1 and claimed[0].kind == "submit"
    leased = job(db, current[0])
    assert leased.state == JobState.LEASED and leased.lease_owner == "w1"
    assert leased.lease_expires_at > datetime.now(UTC)
    assert queue.claim(db, "w2", FP, limit=5, lease_seconds=30)[0].job_id == current[2]
    assert queue.claim(db, "w2", FP, limit=5, lease_seconds=30) == []
    assert job(db, old[0]).state == JobState.QUEUED  # another version: left for a regrade
    assert queue.claim(db, "w2", {}, limit=5, lease_seconds=30) == []


def test_concurrent_claims_never_share_a_job_and_each_is_done_once(db: Database) -> None:
    ids = enqueue(db, 60)
    claims: dict[str, list[int]] = {}
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        mine = claims.setdefault(name, [])
        start.wait()
        try:
            while claimed := queue.claim(db, name, FP, limit=3, lease_seconds=60):
                for claimed_job in claimed:
                    mine.append(claimed_job.job_id)
                    time.sleep(0.002)  # grading: the others claim meanwhile
                    assert queue.complete(db, claimed_job.job_id, name, a_result())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [job_id for claimed in claims.values() for job_id in claimed]
    assert sorted(every) == ids  # each job claimed by exactly one thread, none left
    assert sum(1 for claimed in claims.values() if claimed) >= 2  # they did run at once
    assert [r.job_id for r in results(db)] == ids
    with db.session(readonly=True) as session:
        assert set(session.scalars(select(Job.state))) == {JobState.DONE}


CLAIMER = textwrap.dedent("""
    import json, sys, time
    from autograder.results import GRADED, SubmissionResult
    from autograder.service import queue
    from autograder.service.database import Database
    db, name, go = Database(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    time.sleep(max(0, go - time.time()))
    mine = []
    while claimed := queue.claim(db, name, {"backprop": "f" * 64}, 2, 60):
        for job in claimed:
            mine.append(job.job_id)
            result = SubmissionResult("s1", "backprop", "backprop", GRADED)
            assert queue.complete(db, job.job_id, name, result)
    print(json.dumps(mine))
""")


def test_two_processes_claiming_on_postgresql_never_share_a_job(postgres) -> None:  # noqa: ANN001
    """(SQLite runs one worker: test_service_worker checks that a second one refuses.)"""
    db = Database(postgres.create())
    db.upgrade()
    with db.session() as session:
        session.add(Person(id="s1"))
    ids = enqueue(db, 80)
    go = time.time() + 3  # both start claiming at this moment, after their imports
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, db.url, f"p{n}", str(go)],
                                  stdout=subprocess.PIPE, text=True) for n in range(2)]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    claimed = [json.loads(output) for output in outputs]
    assert all(claimed)  # both got some
    assert sorted(claimed[0] + claimed[1]) == ids
    assert [r.job_id for r in results(db)] == ids
    db.dispose()


def test_a_dead_workers_lease_expires_and_its_late_result_is_not_written(db: Database) -> None:
    [job_id] = enqueue(db)
    [dead] = queue.claim(db, "dead", FP, 1, lease_seconds=0.3)
    assert queue.claim(db, "alive", FP, 1, lease_seconds=30) == []  # still leased
    time.sleep(0.4)
    [alive] = queue.claim(db, "alive", FP, 1, lease_seconds=30)
    assert alive.job_id == dead.job_id == job_id and alive.attempts == 2
    assert queue.renew(db, "dead", [job_id], 30) == set()
    assert queue.complete(db, job_id, "dead", a_result(points=2.0)) is False
    assert results(db) == []
    assert queue.renew(db, "alive", [job_id], 30) == {job_id}
    assert queue.complete(db, job_id, "alive", a_result(points=1.0)) is True
    assert queue.complete(db, job_id, "alive", a_result(points=2.0)) is False  # once only
    assert queue.complete(db, job_id, "dead", a_result(points=2.0)) is False
    [result] = results(db)
    assert (result.score, result.max_score, result.status, result.published) == (
        1.0, 2.0, "graded", True)
    assert "\x1b" not in result.result_json and "red" in result.result_json
    finished = job(db, job_id)
    assert finished.state == JobState.DONE and finished.lease_owner == "alive"


def test_results_recorded_together_skip_a_lost_job_and_survive_a_duplicate(
        db: Database) -> None:
    """A worker records the results waiting in one transaction (`record_many`): a job whose
    lease another worker took is skipped, and a Result already there for one job (which
    breaks the shared transaction) costs that job only: the others are recorded one by one."""
    first, lost, third, duplicate = enqueue(db, 4)
    queue.claim(db, "w", FP, 4, lease_seconds=0.3)
    time.sleep(0.4)
    with db.session() as session:  # `lost`: another worker took it over after the lease
        session.get(Job, lost).lease_owner = "other"
    assert queue.renew(db, "w", [first, third, duplicate], 30) == {first, third, duplicate}
    with db.session() as session:  # a Result of `duplicate` exists (recorded once already)
        session.add(Result(job_id=duplicate, submission_id=session.get(Job, duplicate)
                           .submission_id, student_id="s1", assignment="backprop",
                           status="graded", score=0.0, max_score=2.0, seconds=0.1,
                           result_json="{}", graded_at=datetime.now(UTC), published=True))
    rows = queue.record_many(db, [(first, a_result(points=2.0)), (lost, a_result()),
                                  (third, a_result(points=1.0)),
                                  (duplicate, a_result(points=2.0))], "w")
    assert [row is not None for row in rows] == [True, False, True, False]
    assert [(row.job_id, row.score) for row in results(db)] == [
        (first, 2.0), (third, 1.0), (duplicate, 0.0)]
    assert [job(db, each).state for each in (first, lost, third)] == [
        JobState.DONE, JobState.LEASED, JobState.DONE]
    assert rows[0].student_id == "s1"
    assert json.loads(rows[0].result_json)["tests"][0]["points"] == 2.0


def test_recording_again_after_a_lost_answer_gives_the_result_written_not_a_second(
        db: Database) -> None:
    """The database went away after a batch's commit but before its answer: the worker
    records the same batch again (`retrying`), and gets the rows it wrote -- for the course's
    files -- without a second Result; another worker's job is still none of its own."""
    mine, theirs = enqueue(db, 2)
    queue.claim(db, "w", FP, 1, lease_seconds=30)
    queue.claim(db, "other", FP, 1, lease_seconds=30)
    [first] = queue.record_many(db, [(mine, a_result(points=2.0))], "w")
    assert queue.record_many(db, [(mine, a_result())], "w") == [None]  # not retrying: once
    [again] = queue.record_many(db, [(mine, a_result()), (theirs, a_result())], "w",
                                retrying=True)[:1]
    assert again is not None and (again.id, again.score) == (first.id, 2.0)
    assert queue.record_many(db, [(theirs, a_result())], "w", retrying=True) == [None]
    assert queue.complete(db, theirs, "other", a_result(points=1.0)) is True
    assert queue.record_many(db, [(theirs, a_result())], "w", retrying=True) == [None]
    assert [(row.job_id, row.score) for row in results(db)] == [(mine, 2.0), (theirs, 1.0)]


def test_renewing_while_recording_a_batch_never_deadlocks_on_postgresql(postgres) -> None:  # noqa: ANN001
    """The heartbeat renews every lease in flight while the recording thread records a batch
    of them: both lock several rows, and in one order (by id), so neither is ever chosen as
    a deadlock's victim (a recording lost so would be graded again)."""
    db = Database(postgres.create())
    db.upgrade()
    with db.session() as session:
        session.add(Person(id="s1"))
    errors: list[BaseException] = []

    def at_once(gate: threading.Barrier, action: Callable[[], object]) -> None:
        gate.wait()
        try:
            action()
        except BaseException as error:  # noqa: BLE001  (asserted below)
            errors.append(error)

    try:
        for _ in range(60):
            first, second = enqueue(db, 2)
            queue.claim(db, "w", FP, 2, lease_seconds=30)
            gate = threading.Barrier(2)
            threads = [  # the recording in the order graded: the later job first
                threading.Thread(target=at_once, args=(gate, lambda a=first, b=second: (
                    queue.renew(db, "w", [a, b], 30)))),
                threading.Thread(target=at_once, args=(gate, lambda a=first, b=second: (
                    queue.record_many(db, [(b, a_result()), (a, a_result())], "w"))))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert errors == []
        assert len(results(db)) == 120
    finally:
        db.dispose()


def test_a_job_that_keeps_killing_its_worker_fails_instead_of_looping(db: Database) -> None:
    [job_id] = enqueue(db)
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        [claimed] = queue.claim(db, f"w{attempt}", FP, 1, lease_seconds=0)
        assert claimed.attempts == attempt
        time.sleep(0.01)  # the worker dies; its lease has run out
    assert queue.claim(db, "next", FP, 1, lease_seconds=30) == []
    failed = job(db, job_id)
    assert failed.state == JobState.FAILED and "never finished" in failed.error
    with db.session(readonly=True) as session:
        assert session.get(Submission, failed.submission_id).charged is False


def test_fail_needs_the_lease_and_gives_the_student_the_submission_back(db: Database) -> None:
    [job_id] = enqueue(db)
    queue.claim(db, "w1", FP, 1, lease_seconds=30)
    assert queue.fail(db, job_id, "w2", "not mine") is False
    assert job(db, job_id).state == JobState.LEASED
    assert queue.fail(db, job_id, "w1", "the pool broke\x1b]0;title\x07") is True
    failed = job(db, job_id)
    assert failed.state == JobState.FAILED and failed.error == "the pool broke"
    with db.session(readonly=True) as session:
        assert session.get(Submission, failed.submission_id).charged is False
    assert queue.complete(db, job_id, "w1", a_result()) is False


def test_a_regrade_job_is_unpublished_and_failing_it_keeps_the_charge(db: Database) -> None:
    [job_id] = enqueue(db)
    queue.claim(db, "w", FP, 1, 30)
    assert queue.complete(db, job_id, "w", a_result())
    with db.session() as session:
        regrade = Regrade(assignment="backprop", fingerprint="e" * 64, requested_by="prof")
        session.add(regrade)
        session.flush()
        submission_id = job(db, job_id).submission_id
        regrade_jobs = [queue.enqueue_regrade(session, submission_id=submission_id,
                                              fingerprint="e" * 64, regrade_id=regrade.id)
                        for _ in range(2)]
        ids = [regrade_job.id for regrade_job in regrade_jobs]
    claimed = queue.claim(db, "w", {"backprop": "e" * 64}, 5, 30)
    assert [c.kind for c in claimed] == ["regrade", "regrade"]
    assert queue.complete(db, ids[0], "w", a_result(points=2.0))
    assert queue.fail(db, ids[1], "w", "broke")
    assert [r.published for r in results(db)] == [True, False]
    with db.session(readonly=True) as session:
        assert session.get(Submission, submission_id).charged is True


def test_release_gives_jobs_back_at_once(db: Database) -> None:
    ids = enqueue(db, 2)
    queue.claim(db, "w1", FP, 2, lease_seconds=600)
    assert queue.release(db, ids, "w2") == set()
    assert queue.release(db, ids, "w1") == set(ids)
    assert {job(db, job_id).attempts for job_id in ids} == {0}
    assert [c.job_id for c in queue.claim(db, "w2", FP, 2, 600)] == ids
    assert queue.release(db, ids[:1], "w2", count_attempt=True) == {ids[0]}
    assert job(db, ids[0]).attempts == 1 and job(db, ids[0]).state == JobState.QUEUED


def test_position_and_eta_follow_the_queue_and_measured_times(db: Database) -> None:
    ids = enqueue(db, 4)
    with db.session(readonly=True) as session:
        assert [queue.position(session, job_id) for job_id in ids] == [1, 2, 3, 4]
        assert queue.eta_seconds(session, ids[0], graders=2) is None  # nothing measured yet
    queue.claim(db, "w", FP, 1, 30)
    assert queue.complete(db, ids[0], "w", a_result(seconds=2.0))
    with db.session(readonly=True) as session:
        assert queue.position(session, ids[0]) is None
        assert [queue.position(session, job_id) for job_id in ids[1:]] == [1, 2, 3]
        assert queue.eta_seconds(session, ids[1], graders=2) == 2.0
        assert queue.eta_seconds(session, ids[3], graders=2) == 4.0
        assert queue.eta_seconds(session, ids[3], graders=1) == 6.0
        assert queue.position(session, 10_000) is None
    # Jobs of an older version wait for the regrade, not for a worker: not ahead of anyone.
    [stale] = enqueue(db, 1, fingerprint="0" * 64)
    [fresh] = enqueue(db, 1)
    with db.session(readonly=True) as session:
        assert queue.position(session, fresh) == 4
        assert queue.position(session, stale) == 1


def test_sqlite_read_then_write_transactions_do_not_fail_each_other(tmp_path: Path) -> None:
    """Two transactions that read, then write: deferred (pysqlite's default) one of them
    fails with "database is locked"; ours begin IMMEDIATE and wait their turn."""
    db = Database(f"sqlite:///{tmp_path / 'service.db'}")
    db.upgrade()
    with db.session() as session:
        session.add(Person(id="s1", name="0"))
    both_read = threading.Barrier(2, timeout=2)
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            with db.session() as session:
                person = session.get(Person, "s1")
                try:
                    both_read.wait()  # deferred: both read before either writes
                except threading.BrokenBarrierError:
                    pass  # immediate: the other waits for our commit, as it should
                person.name = str(int(person.name) + 1)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=increment) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with db.session(readonly=True) as session:
        assert session.get(Person, "s1").name == "2"
    db.dispose()


def test_an_unreachable_database_is_database_unavailable(tmp_path: Path) -> None:
    from databases import free_port

    down = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(DatabaseUnavailable, match="cannot be reached"), down.session() as s:
        s.execute(select(1))
    missing = Database(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'service.db'}")
    with pytest.raises(DatabaseUnavailable), missing.session() as s:
        s.execute(select(1))


def test_a_wrong_statement_is_not_mistaken_for_an_unreachable_database(db: Database) -> None:
    with pytest.raises(sqlalchemy.exc.DBAPIError) as raised, db.session() as session:
        session.execute(sqlalchemy.text("SELECT * FROM no_such_table"))
    assert not isinstance(raised.value, DatabaseUnavailable)


def test_a_url_that_is_not_a_database_is_a_clear_error() -> None:
    from autograder.errors import UserError
    from autograder.service.database import BadDatabaseUrl

    for url in ("nonsense", "nosuchdb://x/y"):
        with pytest.raises(BadDatabaseUrl, match="not a database URL") as raised:
            Database(url)
        assert isinstance(raised.value, UserError)
