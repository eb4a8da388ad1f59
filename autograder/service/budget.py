"""A student's submission budget for one assignment: a token bucket (Web-CAT style).

There is no counter to drift: the budget is computed from the student's charged Submission rows
of the assignment, replayed in time order through the bucket. The bucket holds `capacity`
tokens; a charged submission takes one; while the bucket is below capacity, one token comes
back every `refill` (the first `refill` after the spending that took it below capacity). A
submission is charged when accepted; `queue.fail` uncharges one the grader failed through its
own fault, so the student gets it back; a graded one, even with a part timed out, stays
charged.

Last-hour grace: with the bucket empty, in the hour before the student's due date, one more
submission is allowed, once per student and assignment. In the replay, a charged submission
that met an empty bucket is that grace, spent.

Concurrency: `take_from_budget` reads the rows and the caller then inserts the new one; two
uploads at once must not both see the last token. So the check is serialised per student inside
the caller's transaction: PostgreSQL locks the student's `person` row (SELECT ... FOR UPDATE,
held until the caller commits); SQLite has one writer at a time, and `take_from_budget` takes
the write lock before it reads: `BEGIN IMMEDIATE` when no transaction is open (pysqlite opens
its deferred transactions only at the first INSERT, so without this two uploads both read
first and both insert), else a write to the person row. Call it first in the transaction, as
the upload's first statement (on SQLite, a transaction that has already read can be refused
the write lock: "database is locked", an error, never a double charge).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from autograder.service.models import Submission
from autograder.service.policy import AssignmentPolicy

GRACE_WINDOW = timedelta(hours=1)
UNLIMITED = 1 << 30  # `remaining` when the budget has no limit


@dataclass
class Budget:
    capacity: int  # 0: no limit
    remaining: int  # submissions the student may make now (the grace not counted)
    next_at: datetime | None  # when the next token comes back; None: the bucket is full
    grace_available: bool  # the last-hour grace may be used now


class OverBudget(Exception):
    """The student has no submission left now; `retry_at` is when one is possible again
    (None: not before the due date passes, or never)."""

    def __init__(self, message: str, retry_at: datetime | None) -> None:
        super().__init__(message, retry_at)  # both: a copy or a pickle keeps both
        self.message = message
        self.retry_at = retry_at

    def __str__(self) -> str:
        return self.message


@dataclass
class _Bucket:
    capacity: int
    refill: timedelta
    tokens: int
    refill_from: datetime | None = None  # start of the refill period under way
    grace_used: bool = False

    def advance(self, moment: datetime) -> None:
        """Tokens that came back by `moment`."""
        if self.refill_from is None or moment < self.refill_from:
            return
        back = int((moment - self.refill_from) / self.refill)
        self.tokens = min(self.capacity, self.tokens + back)
        self.refill_from = (None if self.tokens >= self.capacity
                            else self.refill_from + back * self.refill)

    def spend(self, moment: datetime) -> None:
        self.advance(moment)
        if self.tokens <= 0:
            self.grace_used = True  # taken past an empty bucket: the grace (see the docstring)
            return
        self.tokens -= 1
        if self.refill_from is None:
            self.refill_from = moment


def _charged_times(session: Session, student_id: str, assignment: str) -> list[datetime]:
    return list(session.scalars(
        select(Submission.submitted_at)
        .where(Submission.student_id == student_id, Submission.assignment == assignment,
               Submission.charged.is_(True))
        .order_by(Submission.submitted_at)))


def _in_grace_window(now: datetime, due: datetime | None) -> bool:
    return due is not None and due - GRACE_WINDOW <= now < due


def _replay(session: Session, policy: AssignmentPolicy, student_id: str, assignment: str,
            now: datetime) -> _Bucket:
    """The bucket now, from the student's charged submissions in time order."""
    bucket = _Bucket(policy.budget_capacity, timedelta(minutes=policy.budget_refill_minutes),
                     policy.budget_capacity)
    for moment in _charged_times(session, student_id, assignment):
        bucket.spend(min(moment, now))  # a clock that went back charges no later than now
    bucket.advance(now)
    return bucket


def _budget(bucket: _Bucket, policy: AssignmentPolicy, now: datetime,
            due: datetime | None) -> Budget:
    next_at = bucket.refill_from + bucket.refill if bucket.refill_from is not None else None
    grace = (policy.last_hour_grace and not bucket.grace_used and bucket.tokens == 0
             and _in_grace_window(now, due))
    return Budget(capacity=bucket.capacity, remaining=bucket.tokens, next_at=next_at,
                  grace_available=grace)


def budget_of(session: Session, policy: AssignmentPolicy, student_id: str, assignment: str,
              now: datetime, due: datetime | None) -> Budget:
    """The student's budget now (`due`: their due date, extension included, aware UTC)."""
    if policy.budget_capacity == 0:  # no limit
        return Budget(capacity=0, remaining=UNLIMITED, next_at=None, grace_available=False)
    return _budget(_replay(session, policy, student_id, assignment, now), policy, now, due)


def lock_student(session: Session, student_id: str) -> None:
    """Serialise budget checks of one student until the caller's transaction ends (see the
    module's docstring)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT id FROM person WHERE id = :s FOR UPDATE"),
                        {"s": student_id})
    elif dialect == "sqlite":
        driver = session.connection().connection.driver_connection
        if not driver.in_transaction:
            session.execute(text("BEGIN IMMEDIATE"))
        else:  # a write takes the database's write lock now, if not held already
            session.execute(text("UPDATE person SET name = name WHERE id = :s"),
                            {"s": student_id})


def take_from_budget(session: Session, policy: AssignmentPolicy, student_id: str,
                     assignment: str, now: datetime, due: datetime | None) -> None:
    """Allow one more submission, or raise OverBudget saying when one is possible. The caller
    then adds the Submission (charged) in the same transaction and commits: that row is the
    token taken."""
    if policy.budget_capacity == 0:
        return
    lock_student(session, student_id)
    bucket = _replay(session, policy, student_id, assignment, now)
    budget = _budget(bucket, policy, now, due)
    if budget.remaining > 0 or budget.grace_available:
        return
    retry_at, grace_later = budget.next_at, False
    if policy.last_hour_grace and not bucket.grace_used and due is not None:
        opens = due - GRACE_WINDOW
        if now < opens and (retry_at is None or opens < retry_at):
            retry_at, grace_later = opens, True  # the grace comes before the next token
    when = f"at {retry_at.strftime('%Y-%m-%d %H:%M:%S UTC')}" if retry_at else "later"
    raise OverBudget(
        f"no submission left for {assignment} now ({policy.budget_capacity} at once, one more "
        f"every {policy.budget_refill_minutes:g} minutes): the next is possible {when}"
        + (" (the one extra submission of the last hour before the due date)"
           if grace_later else ""),
        retry_at)
