"""The service's database: the record of every person, upload, grading job and result.

SQLAlchemy 2 declarative models, created and upgraded by Alembic (autograder/service/migrations).
The same tables serve a SQLite file (the default, WAL mode) and PostgreSQL (by URL). Times are
timezone-aware UTC (`utcnow`); ids of uploads are random (uuid4 hex), so one student cannot guess
another's.

Flow: an upload is a `Submission` (the notebook's exact bytes and their sha256) and a `Job` in
one transaction; a worker leases the job, grades, and writes one `Result` per job (unique), which
ends the job in the same transaction. A regrade is more jobs (kind "regrade") whose results wait
unpublished until the instructor confirms them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database: use autograder time in UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Role(StrEnum):
    STUDENT = "student"
    INSTRUCTOR = "instructor"


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    LEASED = "leased"  # a worker has it until lease_expires_at (then anyone may claim it)
    DONE = "done"  # its Result exists
    FAILED = "failed"  # the grader could not grade it (its own fault, after retries)


class JobKind(StrEnum):
    SUBMIT = "submit"  # a student's upload: its result is published at once
    REGRADE = "regrade"  # an instructor's regrade: published when confirmed


class Base(DeclarativeBase):
    pass


class Person(Base):
    """A student or an instructor, by the roster's id (the LMS id)."""

    __tablename__ = "person"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), default=Role.STUDENT)
    name: Mapped[str] = mapped_column(String(300), default="")
    email: Mapped[str] = mapped_column(String(300), default="")
    password_hash: Mapped[str | None] = mapped_column(String(300), nullable=True)  # argon2
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiToken(Base):
    """A per-person API token: only its sha256 is kept; revoked tokens stay, marked."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"),
                                           index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class WebSession(Base):
    """A browser sign-in: the cookie holds a random value, the table its sha256."""

    __tablename__ = "web_session"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"),
                                           index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SignInAttempt(Base):
    """Failed sign-ins, for the rate limit per person and per address (shared by every
    service process, as they share the database)."""

    __tablename__ = "sign_in_attempt"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(String(100), index=True)
    address: Mapped[str] = mapped_column(String(100), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class Submission(Base):
    """One upload: exactly the bytes received, and their hash."""

    __tablename__ = "submission"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    student_id: Mapped[str] = mapped_column(ForeignKey("person.id", ondelete="CASCADE"))
    assignment: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(300), default="")
    content: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Charged against the student's budget; set False when the grader failed it through its
    # own fault (the student gets the submission back).
    charged: Mapped[bool] = mapped_column(Boolean, default=True)
    jobs: Mapped[list[Job]] = relationship(back_populates="submission",
                                           cascade="all, delete-orphan", passive_deletes=True)

    __table_args__ = (Index("ix_submission_student_assignment", "student_id", "assignment",
                            "submitted_at"),)


class Job(Base):
    """Grading one submission with one version (fingerprint) of its assignment."""

    __tablename__ = "job"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submission.id", ondelete="CASCADE"),
                                               index=True)
    kind: Mapped[str] = mapped_column(String(20), default=JobKind.SUBMIT)
    assignment: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))  # the assignment version to grade with
    state: Mapped[str] = mapped_column(String(20), default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    enqueued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")  # why FAILED (the grader's fault)
    regrade_id: Mapped[int | None] = mapped_column(ForeignKey("regrade.id", ondelete="CASCADE"),
                                                   nullable=True, index=True)
    submission: Mapped[Submission] = relationship(back_populates="jobs")

    __table_args__ = (Index("ix_job_claim", "state", "id"),)


class Result(Base):
    """What one job found: the SubmissionResult as JSON (instructor fields included; the
    student's view is filtered from it), and its score. One per job."""

    __tablename__ = "result"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), unique=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submission.id", ondelete="CASCADE"),
                                               index=True)
    student_id: Mapped[str] = mapped_column(String(100))
    assignment: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # autograder.results.Status
    score: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # grading time, for the ETA
    result_json: Mapped[str] = mapped_column(Text)
    graded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    published: Mapped[bool] = mapped_column(Boolean, default=True)  # False: regrade draft

    __table_args__ = (Index("ix_result_student_assignment", "student_id", "assignment"),)


class Regrade(Base):
    """An instructor's regrade of one student or all: its results are drafts until
    confirmed."""

    __tablename__ = "regrade"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(20), default="running")  # running|confirmed|discarded
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AuditEntry(Base):
    """Every manual change: who, when, what, the old and the new value."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300), default="")
    old_value: Mapped[str] = mapped_column(Text, default="")
    new_value: Mapped[str] = mapped_column(Text, default="")


class WorkerLock(Base):
    """Workers that are alive (heartbeat), and on SQLite the one allowed to claim."""

    __tablename__ = "worker"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


__all__ = ["ApiToken", "AuditEntry", "Base", "Job", "JobKind", "JobState", "Person", "Regrade",
           "Result", "Role", "SignInAttempt", "Submission", "UniqueConstraint", "WebSession",
           "WorkerLock", "utcnow"]
