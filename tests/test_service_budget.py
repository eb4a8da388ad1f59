"""The submission budget: a token bucket replayed from the charged submissions, the last-hour
grace, refunds, and two uploads at once never both taking the last submission (SQLite file and
PostgreSQL)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session
from traitlets.config import Config

from autograder.service import budget as budget_module
from autograder.service.budget import OverBudget, budget_of, take_from_budget
from autograder.service.models import Base, Person, Submission
from autograder.service.policy import AssignmentPolicy

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STUDENT = "10001"


def engine_for(url: str):  # noqa: ANN201 - the smallest real version of database.Database
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:  # noqa: ANN001
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    else:
        engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Person(id=STUDENT, name="Ada"))
        session.add(Person(id="10002", name="Grace"))
    return engine


@pytest.fixture
def engine(database_url: str):  # noqa: ANN201
    engine = engine_for(database_url)
    yield engine
    engine.dispose()


def policy(**settings) -> AssignmentPolicy:
    return AssignmentPolicy(config=Config({"AssignmentPolicy": settings}))


def submit(session: Session, at: datetime, student: str = STUDENT, charged: bool = True,
           assignment: str = "backprop") -> Submission:
    """What queue.enqueue_submission adds: the upload's row (the token taken)."""
    content = b'{"cells": []}'
    row = Submission(id=uuid.uuid4().hex, student_id=student, assignment=assignment,
                     filename="backprop.ipynb", content=content,
                     sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                     submitted_at=at, charged=charged)
    session.add(row)
    return row


def upload(engine, rules: AssignmentPolicy, at: datetime, due: datetime | None = None,
           student: str = STUDENT) -> None:
    """One upload as the service makes it: budget check and row in one transaction."""
    with Session(engine) as session, session.begin():
        take_from_budget(session, rules, student, "backprop", at, due)
        submit(session, at, student)


def budget(engine, rules: AssignmentPolicy, at: datetime, due: datetime | None = None,
           student: str = STUDENT):  # noqa: ANN201
    with Session(engine) as session:
        return budget_of(session, rules, student, "backprop", at, due)


def test_three_at_once_then_one_an_hour(engine) -> None:
    rules = policy(budget_capacity=3, budget_refill_minutes=60)
    assert budget(engine, rules, T0).remaining == 3
    assert budget(engine, rules, T0).next_at is None
    for minute in range(3):
        upload(engine, rules, T0 + timedelta(minutes=minute))
    now = T0 + timedelta(minutes=5)
    empty = budget(engine, rules, now)
    assert (empty.remaining, empty.next_at) == (0, T0 + timedelta(minutes=60))
    with pytest.raises(OverBudget) as refused:
        upload(engine, rules, now)
    assert refused.value.retry_at == T0 + timedelta(minutes=60)
    assert "2026-11-20 13:00:00 UTC" in refused.value.message
    # One back an hour after the first was spent, the next an hour later: a bucket, not a
    # window (three back at once would be a sliding window).
    back = budget(engine, rules, T0 + timedelta(minutes=60))
    assert (back.remaining, back.next_at) == (1, T0 + timedelta(minutes=120))
    assert budget(engine, rules, T0 + timedelta(minutes=119)).remaining == 1
    assert budget(engine, rules, T0 + timedelta(minutes=120)).remaining == 2
    full = budget(engine, rules, T0 + timedelta(hours=5))
    assert (full.remaining, full.next_at) == (3, None)
    # Nothing was written by the refused upload.
    with Session(engine) as session:
        assert len(session.scalars(select(Submission)).all()) == 3


def test_refill_starts_from_the_spending_that_emptied_a_full_bucket(engine) -> None:
    rules = policy(budget_capacity=2, budget_refill_minutes=30)
    upload(engine, rules, T0)
    upload(engine, rules, T0 + timedelta(minutes=40))  # the first came back at T0+30
    left = budget(engine, rules, T0 + timedelta(minutes=41))
    assert (left.remaining, left.next_at) == (1, T0 + timedelta(minutes=70))
    upload(engine, rules, T0 + timedelta(minutes=45))
    with pytest.raises(OverBudget) as refused:
        upload(engine, rules, T0 + timedelta(minutes=50))
    assert refused.value.retry_at == T0 + timedelta(minutes=70)


def test_a_submission_the_grader_failed_is_given_back(engine) -> None:
    rules = policy(budget_capacity=2)
    upload(engine, rules, T0)
    upload(engine, rules, T0 + timedelta(minutes=1))
    with pytest.raises(OverBudget):
        upload(engine, rules, T0 + timedelta(minutes=2))
    with Session(engine) as session, session.begin():  # what queue.fail does
        first = session.scalars(select(Submission).order_by(Submission.submitted_at)).first()
        first.charged = False
    upload(engine, rules, T0 + timedelta(minutes=3))
    assert budget(engine, rules, T0 + timedelta(minutes=3)).remaining == 0


def test_other_students_and_assignments_do_not_count(engine) -> None:
    rules = policy(budget_capacity=1)
    with Session(engine) as session, session.begin():
        submit(session, T0, student="10002")
        submit(session, T0, assignment="other")
    upload(engine, rules, T0 + timedelta(minutes=1))
    with pytest.raises(OverBudget):
        upload(engine, rules, T0 + timedelta(minutes=2))
    assert budget(engine, rules, T0, student="10002").remaining == 0


def test_last_hour_grace_once(engine) -> None:
    due = T0 + timedelta(hours=3)
    rules = policy(budget_capacity=2, budget_refill_minutes=240)
    upload(engine, rules, due - timedelta(minutes=100), due)
    upload(engine, rules, due - timedelta(minutes=99), due)
    # Before the last hour: refused, and told the grace opens before the next token (+140 min).
    before = due - timedelta(minutes=90)
    assert budget(engine, rules, before, due).grace_available is False
    with pytest.raises(OverBudget) as refused:
        upload(engine, rules, before, due)
    assert refused.value.retry_at == due - timedelta(hours=1)
    assert "last hour" in refused.value.message
    # In the last hour: once more.
    inside = due - timedelta(minutes=30)
    assert budget(engine, rules, inside, due).grace_available is True
    upload(engine, rules, inside, due)
    after = budget(engine, rules, due - timedelta(minutes=20), due)
    assert (after.remaining, after.grace_available) == (0, False)
    with pytest.raises(OverBudget) as again:
        upload(engine, rules, due - timedelta(minutes=20), due)
    assert again.value.retry_at == due - timedelta(minutes=100) + timedelta(minutes=240)
    # After the due date the grace is gone too (late work waits for a token).
    assert budget(engine, rules, due + timedelta(minutes=1), due).grace_available is False


def test_no_grace_unless_configured(engine) -> None:
    due = T0 + timedelta(hours=3)
    rules = policy(budget_capacity=1, budget_refill_minutes=600, last_hour_grace=False)
    upload(engine, rules, due - timedelta(hours=2), due)
    with pytest.raises(OverBudget) as refused:
        upload(engine, rules, due - timedelta(minutes=30), due)
    assert refused.value.retry_at == due - timedelta(hours=2) + timedelta(minutes=600)


def test_capacity_zero_is_no_limit(engine) -> None:
    rules = policy(budget_capacity=0)
    for minute in range(5):
        upload(engine, rules, T0 + timedelta(minutes=minute))
    assert budget(engine, rules, T0 + timedelta(minutes=5)).next_at is None


def _race(engine, rules: AssignmentPolicy, uploads: int = 5) -> tuple[int, int, list]:
    """`uploads` threads upload at the same moment; each holds its transaction open a while
    between the check and the commit (the request's other work), so any two that could both
    see the last token do. Returns (accepted, refused, unexpected errors)."""
    barrier = threading.Barrier(uploads)
    accepted, refused, errors = [], [], []
    now = datetime.now(UTC)

    def one() -> None:
        try:
            with Session(engine) as session, session.begin():
                session.get(Person, STUDENT)  # the request's authentication reads first
                barrier.wait()
                take_from_budget(session, rules, STUDENT, "backprop", now, None)
                time.sleep(0.3)
                submit(session, now)
            accepted.append(1)
        except OverBudget:
            refused.append(1)
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return len(accepted), len(refused), errors


def test_five_uploads_at_once_capacity_three(engine) -> None:
    accepted, refused, errors = _race(engine, policy(budget_capacity=3))
    assert errors == []
    assert (accepted, refused) == (3, 2)
    with Session(engine) as session:
        assert len(session.scalars(select(Submission)).all()) == 3


def test_without_the_lock_uploads_race(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the per-student lock prevents (pysqlite's deferred transactions on SQLite, READ
    COMMITTED on PostgreSQL): every upload reads before any writes, and all of them pass."""
    monkeypatch.setattr(budget_module, "lock_student", lambda session, student: None)
    accepted, _, errors = _race(engine, policy(budget_capacity=3))
    assert errors == []
    assert accepted > 3


def test_a_transaction_that_already_wrote_keeps_its_lock(engine) -> None:
    """lock_student inside a transaction that has written first (SQLite: no second BEGIN)."""
    rules = policy(budget_capacity=1)
    with Session(engine) as session, session.begin():
        session.add(Person(id="10003"))
        session.flush()
        take_from_budget(session, rules, "10003", "backprop", T0, None)
        submit(session, T0, student="10003")
    with pytest.raises(OverBudget):
        upload(engine, rules, T0 + timedelta(minutes=1), student="10003")
