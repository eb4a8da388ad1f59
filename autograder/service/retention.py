"""Deleting what the service keeps: everything of one student on request, and submissions past
the course's retention period (c.Service.retention_days; 0 keeps them).

Jobs and results are deleted explicitly before their submissions, in the same transaction, so
nothing depends on the database's ON DELETE CASCADE being on. A submission still waiting for a
worker (queued, or leased) is not purged by age: it was acknowledged and is graded first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from autograder.service.models import (
    ApiToken,
    Job,
    JobState,
    Result,
    SignInAttempt,
    Submission,
    WebSession,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from autograder.service.database import Database


def _delete_submissions(session: Session, ids: list[str]) -> dict[str, int]:
    """Rows deleted per table, for these submissions and everything that hangs on them."""
    counts = {"result": 0, "job": 0, "submission": 0}
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start:start + 500]
        counts["result"] += session.execute(
            delete(Result).where(Result.submission_id.in_(chunk))).rowcount
        counts["job"] += session.execute(
            delete(Job).where(Job.submission_id.in_(chunk))).rowcount
        counts["submission"] += session.execute(
            delete(Submission).where(Submission.id.in_(chunk))).rowcount
    return counts


def purge_older_than(db: Database, days: int, now: datetime | None = None) -> int:
    """Delete the submissions uploaded more than `days` days ago (with their jobs and
    results); `days` <= 0 keeps everything. Returns how many submissions went."""
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=days)
    waiting = select(Job.submission_id).where(Job.state.in_([JobState.QUEUED,
                                                              JobState.LEASED]))
    with db.session() as session:
        ids = list(session.scalars(select(Submission.id)
                                   .where(Submission.submitted_at < cutoff,
                                          Submission.id.not_in(waiting))))
        return _delete_submissions(session, ids)["submission"]


# What deleting a student's data leaves, said wherever it is done (the command, the API).
KEPT = ("the person's entry (the roster says who is in the course) and the course's own "
        "files, the instructor's records: submitted/, autograded/, feedback/, results/ and "
        "gradebook.db (remove the student there with nbgrader if the request covers them)")


def student_data_counts(session: Session, student_id: str) -> dict[str, int]:
    """Delete, in the caller's transaction, everything the service keeps of one student:
    submissions, jobs, results, API tokens, browser sessions, failed sign-ins. Rows deleted
    per table. The person stays (the roster says who is in the course)."""
    ids = list(session.scalars(select(Submission.id).where(Submission.student_id == student_id)))
    counts = _delete_submissions(session, ids)
    # A result left without its submission (none should be) goes too.
    counts["result"] += session.execute(
        delete(Result).where(Result.student_id == student_id)).rowcount
    counts["api_token"] = session.execute(
        delete(ApiToken).where(ApiToken.person_id == student_id)).rowcount
    counts["web_session"] = session.execute(
        delete(WebSession).where(WebSession.person_id == student_id)).rowcount
    counts["sign_in_attempt"] = session.execute(
        delete(SignInAttempt).where(SignInAttempt.person_id == student_id)).rowcount
    return counts


def delete_student_data(db: Database, student_id: str) -> int:
    """`student_data_counts` in a transaction of its own; how many rows went in all."""
    with db.session() as session:
        return sum(student_data_counts(session, student_id).values())
