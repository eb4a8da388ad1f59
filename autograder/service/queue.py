"""The durable queue: submissions and their grading jobs, stored before an upload is answered,
leased by workers, finished exactly once.

A job is QUEUED until a worker claims it: the worker then holds a lease (`lease_owner`,
`lease_expires_at`) that it renews while grading. A worker that dies stops renewing; once its
lease has expired any worker may claim the job again. `complete()` writes the job's one Result
and ends the job in one transaction, and only while the caller still holds the lease, so a
worker that lost its job (it was too slow, or thought dead) writes nothing: every job is
graded into exactly one Result.

Claims: PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED` (any number of workers); SQLite: one
worker, and the claim is a write transaction from its start (BEGIN IMMEDIATE, `Database`).
Times are UTC from this machine's clock (`models.utcnow`), as everywhere in the service.
"""

from __future__ import annotations

import hashlib
import statistics
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autograder.results import SubmissionResult, clean_text, cleaned
from autograder.service.database import Database
from autograder.service.models import (
    Job,
    JobKind,
    JobState,
    Result,
    Submission,
    utcnow,
)

# A job claimed this many times without a result (each claim counts: a worker that died
# holding it, or the grader failing on it) is FAILED rather than tried forever: a notebook
# that kills its worker must not take the queue down with it.
MAX_ATTEMPTS = 3
ETA_SAMPLE = 50  # recent results whose grading times give the ETA


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to grade one job (the notebook's exact bytes included)."""

    job_id: int
    submission_id: str
    student_id: str
    assignment: str
    fingerprint: str
    kind: str
    filename: str
    content: bytes
    submitted_at: datetime
    attempts: int = 1  # this claim included


def enqueue_submission(session: Session, *, student_id: str, assignment: str, filename: str,
                       content: bytes, fingerprint: str,
                       now: datetime | None = None) -> Submission:
    """Store an upload (its exact bytes and their sha256) and its grading job, in the caller's
    transaction: the upload may be acknowledged once that commits."""
    now = now or utcnow()
    submission = Submission(id=uuid.uuid4().hex, student_id=student_id, assignment=assignment,
                            filename=filename, content=content,
                            sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                            submitted_at=now, charged=True)
    session.add(submission)
    session.add(Job(submission=submission, kind=JobKind.SUBMIT, assignment=assignment,
                    fingerprint=fingerprint, state=JobState.QUEUED, attempts=0,
                    enqueued_at=now, error=""))
    session.flush()
    return submission


def enqueue_regrade(session: Session, *, submission_id: str, fingerprint: str,
                    regrade_id: int) -> Job:
    """A regrade job of a stored submission with the assignment's version `fingerprint`; its
    result is unpublished until the instructor confirms the regrade."""
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise LookupError(f"no submission {submission_id}")
    job = Job(submission=submission, kind=JobKind.REGRADE, assignment=submission.assignment,
              fingerprint=fingerprint, state=JobState.QUEUED, attempts=0, enqueued_at=utcnow(),
              error="", regrade_id=regrade_id)
    session.add(job)
    session.flush()
    return job


def _claimable(now: datetime):  # noqa: ANN202 - a SQL expression
    return or_(Job.state == JobState.QUEUED,
               and_(Job.state == JobState.LEASED, Job.lease_expires_at < now))


def waiting_versions(db: Database) -> set[tuple[str, str]]:
    """The (assignment, fingerprint) pairs that claimable jobs name: a worker loads the
    versions it does not have yet (or finds them stale)."""
    now = utcnow()
    with db.session(readonly=True) as session:
        rows = session.execute(select(Job.assignment, Job.fingerprint)
                               .where(_claimable(now)).distinct()).all()
    return {(assignment, fingerprint) for assignment, fingerprint in rows}


def claim(db: Database, worker: str, fingerprints: dict[str, str], limit: int,
          lease_seconds: float) -> list[ClaimedJob]:
    """Lease up to `limit` jobs, oldest first, that are QUEUED or whose lease has expired, and
    that name a version the worker has ({assignment: fingerprint}). A job claimed
    MAX_ATTEMPTS times already becomes FAILED instead."""
    if limit < 1 or not fingerprints:
        return []
    versions = list(fingerprints.items())
    claimed: list[ClaimedJob] = []
    with db.session() as session:
        now = utcnow()
        query = (select(Job, Submission).join(Submission, Job.submission_id == Submission.id)
                 .where(_claimable(now),
                        tuple_(Job.assignment, Job.fingerprint).in_(versions))
                 .order_by(Job.id).limit(limit))
        if not db.is_sqlite:  # SQLite: the whole database is ours until commit
            query = query.with_for_update(skip_locked=True, of=Job)
        for job, submission in session.execute(query).all():
            if job.attempts >= MAX_ATTEMPTS:
                _end_failed(job, submission, now,
                            f"grading was started {job.attempts} times and never finished "
                            "(the worker stopped each time); the instructor has been told")
                continue
            job.state = JobState.LEASED
            job.lease_owner = worker
            job.lease_expires_at = now + timedelta(seconds=lease_seconds)
            job.attempts += 1
            job.started_at = now
            claimed.append(ClaimedJob(
                job_id=job.id, submission_id=submission.id, student_id=submission.student_id,
                assignment=job.assignment, fingerprint=job.fingerprint, kind=job.kind,
                filename=submission.filename, content=submission.content,
                submitted_at=submission.submitted_at, attempts=job.attempts))
    return claimed


def renew(db: Database, worker: str, job_ids: list[int], lease_seconds: float) -> set[int]:
    """Extend this worker's leases; the ids it still holds (a lost one is not in the set)."""
    if not job_ids:
        return set()
    with db.session() as session:
        now = utcnow()
        held = _locked_in_order(session, db, job_ids, worker)
        if held:
            session.execute(update(Job).where(Job.id.in_(held))
                            .values(lease_expires_at=now + timedelta(seconds=lease_seconds)))
    return set(held)


def _locked_in_order(session: Session, db: Database, job_ids: list[int],
                     worker: str) -> list[int]:
    """Of these jobs, those this worker holds, locked (PostgreSQL) in the order of their ids.
    Every transaction that locks several jobs (renew, release, record_many) locks them in
    that one order, so two of them -- the heartbeat's renewal and the recording of a batch --
    wait for each other at most, and never deadlock."""
    query = (select(Job.id).where(Job.id.in_(job_ids), Job.lease_owner == worker,
                                  Job.state == JobState.LEASED).order_by(Job.id))
    if not db.is_sqlite:
        query = query.with_for_update()
    return list(session.scalars(query))


def _held(session: Session, db: Database, job_id: int, worker: str) -> Job | None:
    """The job, locked, if this worker holds it now."""
    query = select(Job).where(Job.id == job_id)
    if not db.is_sqlite:
        query = query.with_for_update()
    job = session.execute(query).scalar_one_or_none()
    if job is None or job.state != JobState.LEASED or job.lease_owner != worker:
        return None
    return job


def complete(db: Database, job_id: int, worker: str, result: SubmissionResult) -> bool:
    """Write the job's Result and mark it DONE, in one transaction, if this worker still
    holds it; False (nothing written) otherwise."""
    return record(db, job_id, worker, result) is not None


def record(db: Database, job_id: int, worker: str, result: SubmissionResult) -> Result | None:
    """`complete()`, returning the Result row written (None: nothing was)."""
    return record_many(db, [(job_id, result)], worker)[0]


def record_many(db: Database, graded: list[tuple[int, SubmissionResult]],
                worker: str, retrying: bool = False) -> list[Result | None]:
    """`record` for several jobs in one transaction (one commit, where a worker's results come
    faster than one each): the Result rows written, None for a job this worker no longer
    holds. Should one of them break the transaction (its Result exists already), each is
    recorded on its own. `retrying`: the same batch again, after the database was out of
    reach -- a job this worker had recorded then (the commit went through, its answer was
    lost) gives the Result it wrote, rather than None."""
    graded = [(job_id, cleaned(result)) for job_id, result in graded]  # idempotent
    try:
        with db.session() as session:
            held = set(_locked_in_order(session, db, [job_id for job_id, _ in graded], worker))
            return [_record_in(session, job_id, worker, result) if job_id in held
                    else _recorded_by(session, job_id, worker) if retrying else None
                    for job_id, result in graded]
    except IntegrityError:
        if len(graded) == 1:  # a Result of this job exists: it was recorded once already
            return [None]
    return [record_many(db, [each], worker, retrying)[0] for each in graded]


def _record_in(session: Session, job_id: int, worker: str,
               result: SubmissionResult) -> Result:
    job = session.get(Job, job_id)
    student_id = session.scalar(select(Submission.student_id)
                                .where(Submission.id == job.submission_id))
    now = utcnow()
    row = Result(
        job_id=job.id, submission_id=job.submission_id, student_id=student_id,
        assignment=job.assignment, status=str(result.status), score=float(result.score),
        max_score=float(result.max_score), seconds=float(result.seconds),
        result_json=result.to_json(indent=None), graded_at=now,
        published=job.kind == JobKind.SUBMIT)
    session.add(row)
    job.state = JobState.DONE
    job.finished_at = now
    job.lease_expires_at = None
    session.flush()  # the unique job_id is checked here, inside the block
    return row


def _recorded_by(session: Session, job_id: int, worker: str) -> Result | None:
    """The Result of a job this worker ended DONE (its name stays on the job), or None."""
    return session.scalar(select(Result).join(Job, Job.id == Result.job_id)
                          .where(Job.id == job_id, Job.state == JobState.DONE,
                                 Job.lease_owner == worker))


def fail(db: Database, job_id: int, worker: str, reason: str) -> bool:
    """The grader could not grade the job through its own fault: FAILED with `reason`, and the
    student's upload is not charged against their budget. False if this worker lost it."""
    with db.session() as session:
        job = _held(session, db, job_id, worker)
        if job is None:
            return False
        _end_failed(job, session.get(Submission, job.submission_id), utcnow(), reason)
    return True


def release(db: Database, job_ids: list[int], worker: str, *,
            count_attempt: bool = False) -> set[int]:
    """Give jobs back to the queue now (a worker stopping, or a fault to retry), rather than
    make them wait for the lease to expire. Without `count_attempt`, this claim is not counted
    against MAX_ATTEMPTS (the job did nothing wrong). The ids released."""
    if not job_ids:
        return set()
    values: dict[str, object] = {"state": JobState.QUEUED, "lease_owner": None,
                                 "lease_expires_at": None, "started_at": None}
    if not count_attempt:
        values["attempts"] = Job.attempts - 1
    with db.session() as session:
        released = _locked_in_order(session, db, job_ids, worker)
        if released:
            session.execute(update(Job).where(Job.id.in_(released)).values(**values))
    return set(released)


def _end_failed(job: Job, submission: Submission | None, now: datetime, reason: str) -> None:
    job.state = JobState.FAILED
    job.error = clean_text(reason)
    job.finished_at = now
    job.lease_expires_at = None
    if submission is not None and job.kind == JobKind.SUBMIT:
        submission.charged = False  # the student gets this submission back


def position(session: Session, job_id: int) -> int | None:
    """Where a queued job is: 1 = the next to be claimed; None if it is not queued. Jobs
    ahead that name another version of the same assignment are not counted: they wait for the
    instructor's regrade, not for a worker."""
    job = session.get(Job, job_id)
    if job is None or job.state != JobState.QUEUED:
        return None
    ahead = session.execute(
        select(func.count()).select_from(Job)
        .where(Job.state == JobState.QUEUED, Job.id < job_id,
               or_(Job.assignment != job.assignment, Job.fingerprint == job.fingerprint))
    ).scalar_one()
    return ahead + 1


def eta_seconds(session: Session, job_id: int, graders: int,
                place: int | None = None) -> float | None:
    """Seconds until a queued job's result, from the recent median grading time and the
    jobs ahead of it shared among `graders` slots; None if not queued or nothing was graded
    yet to measure by. `place`: its `position`, if the caller has it already."""
    place = place if place is not None else position(session, job_id)
    if place is None:
        return None
    recent = session.execute(select(Result.seconds).order_by(Result.id.desc())
                             .limit(ETA_SAMPLE)).scalars().all()
    measured = [seconds for seconds in recent if seconds > 0]
    if not measured:
        return None
    rounds = (place - 1) // max(1, graders) + 1  # its own round included
    return rounds * statistics.median(measured)
