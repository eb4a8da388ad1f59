"""Pushed results: `GET /api/submissions/{id}?wait=S` long-polls on one shared poller per HTTP
process (notify.py), against the real app and a real database (SQLite file and PostgreSQL).
A waiter is woken within about 100 ms of its result's commit (or of its job failing); a wait
ends after S seconds with the status then; many waiters cost one query per tick, not one each.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event
from test_service_api import (
    SECRET,
    STUDENT_A,
    STUDENT_B,
    WORKER,
    Running,
    fingerprint_of,
    notebook_bytes,
    start,
)

from autograder.course import Course
from autograder.results import GRADED, SubmissionResult, TestResult
from autograder.service import queue
from autograder.service.notify import ResultWaiters

WOKEN_WITHIN = 0.15  # seconds from the commit to the answer (tick 20 ms; a busy CI machine)


@pytest.fixture(scope="module")
def notebook(course: Course, solution: dict[str, str]) -> bytes:
    return notebook_bytes(course, solution)


@pytest.fixture
def running(course: Course, database_url: str) -> Iterator[Running]:
    service = start(course, database_url)
    with service.client:
        yield service


def _result(job: queue.ClaimedJob) -> SubmissionResult:
    return SubmissionResult(
        student_id=job.student_id, assignment=job.assignment, notebook=job.filename,
        status=GRADED, seconds=0.1, graded_on={"expected": SECRET},
        tests=[TestResult(name="test_forward", cell="forward", points=2.0, max_points=2.0,
                          passed=True, message="")])


def _later(seconds: float, action) -> tuple[threading.Thread, list[float]]:  # noqa: ANN001
    """Run `action` after `seconds` on a thread; the list gets the moment it returned."""
    done: list[float] = []

    def run() -> None:
        time.sleep(seconds)
        action()
        done.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


def test_a_waiter_is_answered_as_soon_as_its_result_is_committed(running: Running,
                                                                 notebook: bytes) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    claimed = queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)}, 5, 30.0)

    def grade() -> None:
        assert queue.complete(running.db, claimed[0].job_id, WORKER, _result(claimed[0]))

    # Twice: the first wait also starts the poller; the second finds it running.
    for attempt in range(2):
        if attempt:
            sid = running.upload(STUDENT_A, notebook).json()["id"]
            claimed = queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)},
                                  5, 30.0)
        thread, committed = _later(0.6, grade)
        asked = time.monotonic()
        answer = running.client.get(f"/api/submissions/{sid}", params={"wait": "10"},
                                    headers=running.auth(STUDENT_A))
        answered = time.monotonic()
        thread.join()
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "graded"
        assert answered - asked >= 0.5  # it did wait for the result
        assert answered - committed[0] < WOKEN_WITHIN, answered - committed[0]


def test_a_failed_job_wakes_its_waiter_too(running: Running, notebook: bytes) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    claimed = queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)}, 5, 30.0)
    thread, failed = _later(0.6, lambda: queue.fail(running.db, claimed[0].job_id, WORKER,
                                                     "the sandbox could not start"))
    answer = running.client.get(f"/api/submissions/{sid}", params={"wait": "10"},
                                headers=running.auth(STUDENT_A))
    answered = time.monotonic()
    thread.join()
    assert answer.json()["status"] == "failed" and "sandbox" in answer.json()["reason"]
    assert answered - failed[0] < WOKEN_WITHIN, answered - failed[0]


def test_a_wait_ends_after_its_seconds_with_the_status_then(running: Running,
                                                           notebook: bytes) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    asked = time.monotonic()
    answer = running.client.get(f"/api/submissions/{sid}", params={"wait": "0.4"},
                                headers=running.auth(STUDENT_A))
    took = time.monotonic() - asked
    assert answer.json()["status"] == "queued" and answer.json()["position"] == 1
    assert 0.35 <= took < 2.0
    # Graded already: answered at once, wait or not.
    grade_all(running)
    asked = time.monotonic()
    answer = running.client.get(f"/api/submissions/{sid}", params={"wait": "30"},
                                headers=running.auth(STUDENT_A))
    assert answer.json()["status"] == "graded" and time.monotonic() - asked < 1.0


def grade_all(running: Running) -> None:
    for job in queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)}, 50, 30.0):
        assert queue.complete(running.db, job.job_id, WORKER, _result(job))


@pytest.mark.parametrize("wait", ["0", "-1", "30.5", "nan", "inf", "soon"])
def test_a_wait_out_of_range_is_a_clear_400(running: Running, notebook: bytes,
                                            wait: str) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    answer = running.client.get(f"/api/submissions/{sid}", params={"wait": wait},
                                headers=running.auth(STUDENT_A))
    assert answer.status_code == 400, answer.text
    assert "wait" in answer.text


def test_waiting_on_anothers_submission_is_the_same_404_at_once(running: Running,
                                                                notebook: bytes) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    asked = time.monotonic()
    answer = running.client.get(f"/api/submissions/{sid}", params={"wait": "5"},
                                headers=running.auth(STUDENT_B))
    assert answer.status_code == 404 and time.monotonic() - asked < 1.0
    assert running.app.state.result_waiters.waiting() == 0


def test_the_wait_is_described_in_the_openapi_description(running: Running) -> None:
    schema = running.client.get("/schema/openapi.json").json()
    route = schema["paths"]["/api/submissions/{submission_id}"]["get"]
    assert "long-poll" in route["description"]
    (wait,) = [p for p in route["parameters"] if p["name"] == "wait"]
    assert wait["in"] == "query" and not wait.get("required", False)


def test_fifty_waiters_cost_one_query_per_tick(running: Running, notebook: bytes) -> None:
    """The poller's statements over a second, with 50 waiting: one per tick (plus the
    once-a-second sweep), the same as with one waiting -- never one per waiter."""
    db = running.db
    ids = [running.upload(STUDENT_A, notebook).json()["id"] for _ in range(3)]
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        # Queries of the tables (not the BEGIN or pre-ping a session's connection costs).
        if threading.current_thread().name == "result-poller" and " FROM " in statement:
            statements.append(statement)

    async def wait_with(waiting: int, seconds: float) -> tuple[int, int]:
        waiters = ResultWaiters(db)
        await asyncio.to_thread(waiters.start)
        loop = asyncio.get_running_loop()
        added = [waiters.add(ids[n % len(ids)], loop) for n in range(waiting)]
        for n, waiter in enumerate(added):
            waiter.job_id = n + 1
        statements.clear()
        ticks = waiters.ticks
        await asyncio.sleep(seconds)
        made, ticks = len(statements), waiters.ticks - ticks
        for waiter in added:
            waiters.remove(waiter)
        waiters.close()
        return made, ticks

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        many, many_ticks = asyncio.run(wait_with(50, 1.5))
        one, one_ticks = asyncio.run(wait_with(1, 1.5))
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert many_ticks >= 20  # it did poll, every ~20 ms (fewer on a busy machine)
    sweeps = 2  # once a second
    assert many <= many_ticks + sweeps, (many, many_ticks)
    assert one <= one_ticks + sweeps, (one, one_ticks)
    assert many / many_ticks < 1.2 * (one / one_ticks) + 0.1


def test_nobody_waiting_costs_no_queries(running: Running) -> None:
    waiters = ResultWaiters(running.db)
    waiters.start()
    before = waiters.queries
    time.sleep(0.3)
    assert waiters.queries == before
    waiters.close()
