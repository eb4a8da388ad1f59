"""The student's HTTP API, against the real app and a real database (SQLite file and
PostgreSQL): upload in every accepted form, every refused form storing nothing, status from
queued to graded or failed, feedback without the instructor's fields, history, the
assignment's terms, the database unreachable (503) and full (507), the OpenAPI description,
and an HTTP process that never imports torch or the hidden tests."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from conftest import make_course
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import event, func, select, text

from autograder.author import with_answers
from autograder.course import Course
from autograder.results import GRADED, SubmissionResult, TestResult
from autograder.service import auth, queue
from autograder.service.app import create_app
from autograder.service.database import Database
from autograder.service.models import Job, Person, Role, Submission
from autograder.service.settings import Service

STUDENT_A, STUDENT_B, INSTRUCTOR = "10001", "10002", "90001"
NAMES = {STUDENT_A: "Ada Alvarez", STUDENT_B: "Bo Brandt", INSTRUCTOR: "Ines Instructor"}
SECRET = "EXPECTED-VALUE-7f3a9c"  # in graded_on: must never reach a student
WORKER = "test-worker"
URL = "/api/assignments/backprop/submissions"


@dataclass
class Running:
    """A service under test: the real app on a real database, people with tokens."""

    app: Litestar
    client: TestClient
    db: Database
    course: Course
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, person: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person]}"}

    def submissions(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(Submission))

    def upload(self, person: str, content: bytes, **kwargs: object):  # noqa: ANN201
        return self.client.post(URL, files={"notebook": ("backprop.ipynb", content,
                                                         "application/x-ipynb+json")},
                                headers=self.auth(person), **kwargs)


def start(course: Course, database_url: str, **settings: object) -> Running:
    db = Database(database_url)
    db.upgrade()
    tokens = {}
    with db.session() as session:
        for person, name in NAMES.items():
            role = Role.INSTRUCTOR if person == INSTRUCTOR else Role.STUDENT
            session.add(Person(id=person, role=role, name=name))
        session.flush()
        tokens = {person: auth.issue_token(session, person) for person in NAMES}
    app = create_app(course, db, Service(config=course.config, **settings))
    return Running(app, TestClient(app), db, course, tokens)


@pytest.fixture
def running(course: Course, database_url: str) -> Iterator[Running]:
    service = start(course, database_url)
    with service.client:
        yield service
    service.db.dispose()


def notebook_bytes(course: Course, solution: dict[str, str]) -> bytes:
    """The release notebook with the right answers, as a student would upload it."""
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    return nbformat.writes(with_answers(release, solution)).encode()


@pytest.fixture(scope="module")
def notebook(course: Course, solution: dict[str, str]) -> bytes:
    return notebook_bytes(course, solution)


def fingerprint_of(running: Running) -> str:
    return running.app.state.catalog.get("backprop").fingerprint


def grade_queued(running: Running, passed: bool = True) -> list[int]:
    """What a worker does, through the queue's own functions: claim, then complete."""
    claimed = queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)}, 50, 30.0)
    for job in claimed:
        result = SubmissionResult(
            student_id=job.student_id, assignment=job.assignment, notebook=job.filename,
            status=GRADED, seconds=0.1, graded_on={"expected": SECRET},
            tests=[TestResult(name="test_forward", cell="forward", points=2.0 if passed else 0,
                              max_points=2.0, passed=passed,
                              message="" if passed else "your gradient is off")])
        assert queue.complete(running.db, job.job_id, WORKER, result)
    return [job.job_id for job in claimed]


# --- upload ----------------------------------------------------------------------------------

def test_multipart_upload_is_stored_exactly_then_acknowledged(running: Running,
                                                             notebook: bytes) -> None:
    answer = running.upload(STUDENT_A, notebook)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "queued" and body["position"] == 1
    assert "eta_seconds" in body
    with running.db.session() as session:
        stored = session.get(Submission, body["id"])
        assert stored.content == notebook and stored.student_id == STUDENT_A
        assert stored.sha256 == hashlib.sha256(notebook).hexdigest()
        job = session.scalars(select(Job).where(Job.submission_id == stored.id)).one()
        assert job.fingerprint == fingerprint_of(running)


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ipynb+json"])
def test_raw_notebook_body(running: Running, notebook: bytes, media_type: str) -> None:
    answer = running.client.post(URL, content=notebook, headers={
        **running.auth(STUDENT_A), "Content-Type": media_type})
    assert answer.status_code == 202, answer.text
    assert running.submissions() == 1


def test_the_queue_position_counts_what_is_ahead(running: Running, notebook: bytes) -> None:
    first = running.upload(STUDENT_A, notebook).json()
    second = running.upload(STUDENT_B, notebook).json()
    assert (first["position"], second["position"]) == (1, 2)


@pytest.mark.parametrize("case", ["unknown assignment", "dot-dot", "no token", "wrong token",
                                  "not json", "json not a notebook", "old nbformat",
                                  "another assignment", "too many parts", "no notebook field",
                                  "two notebooks", "plain text", "bad boundary", "too large"])
def test_bad_uploads_store_nothing(running: Running, notebook: bytes, case: str) -> None:
    headers = running.auth(STUDENT_A)
    send = {"notebook": ("backprop.ipynb", notebook, "application/x-ipynb+json")}
    url = URL
    expected: set[int] = {400, 422}
    files: object = send
    content = None
    if case == "unknown assignment":
        url, expected = "/api/assignments/nope/submissions", {404}
    elif case == "dot-dot":
        url, expected = "/api/assignments/../submissions", {404}
    elif case == "no token":
        headers, expected = {}, {401}
    elif case == "wrong token":
        headers, expected = {"Authorization": "Bearer " + "x" * 43}, {401}
    elif case == "not json":
        files = {"notebook": ("backprop.ipynb", b"\x89PNG not json", "image/png")}
    elif case == "json not a notebook":
        files = {"notebook": ("backprop.ipynb", b'{"hello": [1, 2]}', "application/json")}
    elif case == "old nbformat":
        old = json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [],
                          "metadata": {}}).encode()
        files = {"notebook": ("backprop.ipynb", old, "application/json")}
    elif case == "another assignment":
        other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
        files = {"notebook": ("other.ipynb", nbformat.writes(other).encode(),
                              "application/json")}
    elif case == "too many parts":
        files = [("notebook", ("backprop.ipynb", notebook, "application/json"))] + [
            (f"extra{i}", ("x.txt", b"x", "text/plain")) for i in range(40)]
    elif case == "no notebook field":
        files = {"file": ("backprop.ipynb", notebook, "application/json")}
    elif case == "two notebooks":
        files = [("notebook", ("a.ipynb", notebook, "application/json"))] * 2
    elif case == "plain text":
        files, content, expected = None, notebook, {415}
        headers = {**headers, "Content-Type": "text/plain"}
    elif case == "bad boundary":
        files, content = None, b"--zz\r\nContent-Disposition: form-data; name=\"notebook\"\r\n"
        headers = {**headers, "Content-Type": "multipart/form-data; boundary=zz"}
    elif case == "too large":
        files, expected = {"notebook": ("backprop.ipynb", notebook + b" " * 6_000_000,
                                        "application/json")}, {413}
    answer = (running.client.post(url, files=files, headers=headers) if files is not None
              else running.client.post(url, content=content, headers=headers))
    assert answer.status_code in expected, (case, answer.status_code, answer.text)
    assert answer.json()["detail"], answer.text  # a message that says what is wrong
    assert running.submissions() == 0


def test_over_the_size_limit_by_content_length_is_refused_before_reading(
        course: Course, database_url: str, notebook: bytes) -> None:
    service = start(course, database_url, max_upload_bytes=len(notebook) - 1)
    with service.client:
        raw = service.client.post(URL, content=notebook + b" " * 70_000, headers={
            **service.auth(STUDENT_A), "Content-Type": "application/json"})
        assert raw.status_code == 413
        # Within Litestar's allowance for multipart framing, but over the notebook limit:
        # intake's own check refuses it.
        framed = service.upload(STUDENT_A, notebook)
        assert framed.status_code == 413, framed.text
        assert service.submissions() == 0
    service.db.dispose()


def test_over_budget_is_429_with_when(course: Course, database_url: str,
                                      notebook: bytes) -> None:
    service = start(course, database_url)  # the default budget: 3 at once, 1 an hour
    with service.client:
        for _ in range(3):
            assert service.upload(STUDENT_A, notebook).status_code == 202
        refused = service.upload(STUDENT_A, notebook)
        assert refused.status_code == 429, refused.text
        assert 3000 <= int(refused.headers["Retry-After"]) <= 3600
        assert refused.json()["retry_at"] and "next" in refused.json()["detail"]
        assert service.submissions() == 3
        assert service.upload(STUDENT_B, notebook).status_code == 202  # theirs is their own
        terms = service.client.get("/api/assignments/backprop", headers=service.auth(STUDENT_A))
        assert terms.json()["budget"]["remaining"] == 0
        assert terms.json()["budget"]["next_at"]
    service.db.dispose()


# --- status, feedback, history, terms --------------------------------------------------------

def test_status_from_queued_to_graded_and_feedback_without_secrets(running: Running,
                                                                   notebook: bytes) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    status = running.client.get(f"/api/submissions/{sid}", headers=running.auth(STUDENT_A))
    assert status.json()["status"] == "queued" and status.json()["position"] == 1
    early = running.client.get(f"/api/submissions/{sid}/feedback",
                               headers=running.auth(STUDENT_A))
    assert early.status_code == 200 and early.json()["status"] == "queued"
    claimed = queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)}, 5, 30.0)
    status = running.client.get(f"/api/submissions/{sid}", headers=running.auth(STUDENT_A))
    assert status.json()["status"] == "grading"
    queue.complete(running.db, claimed[0].job_id, WORKER, SubmissionResult(
        student_id=STUDENT_A, assignment="backprop", notebook="backprop.ipynb", status=GRADED,
        graded_on={"expected": SECRET}, seconds=0.2,
        tests=[TestResult(name="test_forward", cell="forward", points=0, max_points=2,
                          passed=False, message="your gradient is off")]))
    status = running.client.get(f"/api/submissions/{sid}", headers=running.auth(STUDENT_A))
    assert status.json()["status"] == "graded"
    feedback = running.client.get(f"/api/submissions/{sid}/feedback",
                                  headers=running.auth(STUDENT_A))
    assert feedback.status_code == 200, feedback.text
    assert "your gradient is off" in feedback.text
    assert SECRET not in feedback.text and "graded_on" not in feedback.text


def test_a_failed_job_says_why_and_is_not_charged(running: Running, notebook: bytes) -> None:
    sid = running.upload(STUDENT_A, notebook).json()["id"]
    claimed = queue.claim(running.db, WORKER, {"backprop": fingerprint_of(running)}, 5, 30.0)
    assert queue.fail(running.db, claimed[0].job_id, WORKER, "the sandbox could not start")
    status = running.client.get(f"/api/submissions/{sid}", headers=running.auth(STUDENT_A))
    assert status.json()["status"] == "failed"
    assert "sandbox" in status.json()["reason"] and status.json()["charged"] is False


def test_history_and_terms_are_the_students_own(running: Running, notebook: bytes) -> None:
    mine = {running.upload(STUDENT_A, notebook).json()["id"] for _ in range(2)}
    theirs = running.upload(STUDENT_B, notebook).json()["id"]
    grade_queued(running)
    listed = running.client.get(URL, headers=running.auth(STUDENT_A)).json()["submissions"]
    assert {entry["id"] for entry in listed} == mine and theirs not in json.dumps(listed)
    assert all(entry["status"] == "graded" and entry["score"] == 2.0 for entry in listed)
    terms = running.client.get("/api/assignments/backprop", headers=running.auth(STUDENT_A))
    assert terms.status_code == 200, terms.text
    body = terms.json()
    assert body["budget"]["capacity"] == 3 and body["budget"]["remaining"] == 1
    assert body["counts"] in ("last", "best") and "late_policy" in body and "due" in body
    me = running.client.get("/api/me", headers=running.auth(STUDENT_A)).json()
    assert me == {"id": STUDENT_A, "role": "student", "name": NAMES[STUDENT_A]}


# --- faults: the database unreachable, the database full --------------------------------------

def test_database_unreachable_is_503(course: Course, notebook: bytes) -> None:
    from databases import free_port

    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    app = create_app(course, db, Service(config=course.config))
    with TestClient(app) as client:
        answer = client.post(URL, files={"notebook": ("b.ipynb", notebook, "application/json")},
                             headers={"Authorization": "Bearer " + "a" * 43})
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
    db.dispose()


def test_database_full_is_507_and_stores_nothing(course: Course, tmp_path: Path,
                                                 notebook: bytes) -> None:
    service = start(course, f"sqlite:///{tmp_path / 'service.db'}")
    with service.db.session() as session:
        pages = session.execute(text("PRAGMA page_count")).scalar()

    # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full disk: no page more.
    @event.listens_for(service.db.engine, "connect")
    def _cap(connection, _record) -> None:  # noqa: ANN001
        connection.execute(f"PRAGMA max_page_count = {pages}")

    service.db.engine.dispose()  # new connections get the cap
    with service.client:
        answer = service.upload(STUDENT_A, notebook)
        assert answer.status_code == 507, answer.text
        assert "full" in answer.json()["detail"]
    event.remove(service.db.engine, "connect", _cap)
    service.db.engine.dispose()
    assert service.submissions() == 0
    service.db.dispose()


# --- the app as a whole ------------------------------------------------------------------------

def test_openapi_is_served(running: Running) -> None:
    described = running.client.get("/schema/openapi.json")
    assert described.status_code == 200
    paths = described.json()["paths"]
    for path in ("/api/assignments/{assignment}/submissions", "/api/submissions/{submission_id}",
                 "/api/submissions/{submission_id}/feedback", "/api/assignments/{assignment}",
                 "/api/me", "/api/session"):
        assert path in paths


def test_malformed_requests_are_4xx_not_500(running: Running) -> None:
    for method, path, kwargs in [
            ("POST", "/api/session", {"content": b"{not json", "headers": {
                "Content-Type": "application/json"}}),
            ("POST", "/api/session", {"json": ["a list"]}),
            ("POST", "/api/session", {"json": {"id": 5, "password": None}}),
            ("GET", "/api/submissions/" + "x" * 5000, {}),
            ("GET", "/api/nothing", {}),
            ("PUT", "/api/me", {})]:
        answer = running.client.request(method, path, **kwargs)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)


def test_the_http_process_never_imports_torch_or_the_hidden_tests(course: Course,
                                                                  tmp_path: Path,
                                                                  notebook: bytes) -> None:
    (tmp_path / "notebook.ipynb").write_bytes(notebook)
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_service_api import start, STUDENT_A
from autograder.course import Course
service = start(Course.load({str(course.root)!r}), "sqlite:///{tmp_path / 's.db'}")
with service.client:
    answer = service.upload(STUDENT_A, Path({str(tmp_path / 'notebook.ipynb')!r}).read_bytes())
    assert answer.status_code == 202, answer.text
hidden = [name for name in sys.modules if name.startswith("autograder_hidden_tests")]
print("torch" in sys.modules, hidden)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False []"


def test_the_catalog_follows_the_release_and_knows_only_released_names(
        tmp_path: Path) -> None:
    """Every upload looks its assignment up (a few stat calls, nothing read): a changed test
    file or release is read again, a name that is not one released folder is none."""
    from autograder.service.student_api import AssignmentCatalog

    course = make_course(tmp_path)
    catalog = AssignmentCatalog(course)
    first = catalog.get("backprop")
    assert first is not None and catalog.get("backprop") is first  # cached
    for name in ("", ".", "..", "../release/backprop", "backprop/", "nope", "back\0prop"):
        assert catalog.get(name) is None, name
    tests = course.hidden_dir("backprop") / "tests.py"
    tests.write_text(tests.read_text() + "\n# changed\n")
    changed = catalog.get("backprop")
    assert changed is not None and changed.fingerprint != first.fingerprint
    notebook = course.release_dir("backprop") / "backprop.ipynb"
    extra = notebook.with_name("second.ipynb")
    extra.write_bytes(notebook.read_bytes())  # two notebooks: not an assignment we grade
    assert catalog.get("backprop") is None
    extra.unlink()
    assert catalog.get("backprop").fingerprint == changed.fingerprint
