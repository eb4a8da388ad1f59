"""The served OpenAPI description, fuzzed (schemathesis) against a real `autograder serve`:
no input gives a server error (5xx: 503 is for the database faults of test_service_faults, not
for anything a client sends), and the service logs no unhandled exception.

A student's token for the student's routes, an instructor's for the instructor's; bounded to a
few dozen cases per route so the whole file runs in about a minute."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from conftest import make_course
from databases import ServeProcess, add_students, student_tokens
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from autograder.course import Course
from autograder.service.auth import issue_token
from autograder.service.database import Database

EXAMPLES = 30  # per route
INSTRUCTOR = "prof1"


@pytest.fixture(scope="module")
def live():  # -> (ServeProcess, {"student": token, "instructor": token})
    root = Path(tempfile.mkdtemp(prefix="agfuzz-"))
    os.chmod(root, 0o755)
    try:
        make_course(root)
        with (root / "nbgrader_config.py").open("a") as config:
            config.write(f"\nc.Service.instructors = [{INSTRUCTOR!r}]\n")
        add_students(root, ["20001", "20002"])
        (root / "db").mkdir()
        url = f"sqlite:///{root / 'db' / 'service.db'}"
        tokens = {"student": student_tokens(root, url)["20001"]}
        course = Course.load(root)
        db = Database.for_course(course, url)
        try:
            with db.session() as session:
                from autograder.service.auth import sync_people

                sync_people(session, course, [INSTRUCTOR])
                tokens["instructor"] = issue_token(session, INSTRUCTOR)
        finally:
            db.dispose()
        server = ServeProcess(root, url, "--no-worker", log_dir=root).start()
        try:
            yield server, tokens
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> None:  # noqa: ANN001
    """EXAMPLES cases of one operation; raises at the first server error."""
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case) -> None:  # noqa: ANN001
        case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)

    call()


def test_no_input_is_a_server_error(live):  # noqa: ANN001
    """Every operation of the served description, with inputs that fit it (positive) and
    inputs that do not (negative)."""
    server, tokens = live
    api = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    failures, operations = [], 0
    for found in api.get_all_operations():
        operation = found.ok()
        operations += 1
        who = "instructor" if operation.path.startswith("/api/instructor") else "student"
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, headers)
            except Unsatisfiable:
                continue  # nothing violates this operation's schema (e.g. only a string path)
            except Exception as error:  # noqa: BLE001 - every operation is tried, then reported
                failures.append(f"{operation.label} ({mode.value}): {error}")
    assert operations >= 6, "the served description lists the API's routes"
    assert not failures, "\n\n".join(failures)[:20000]


def test_the_fuzzed_service_logged_no_unhandled_exception(live):  # noqa: ANN001
    server, _ = live
    log = server.log
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]
    assert server.process.poll() is None  # still up
