"""The service as a careless instructor configures it: the default database is the one every
command uses (and says so), typos in the settings stop `serve` before it starts, and what
`serve` reads from the course is checked before students meet it."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import databases
import httpx
import pytest
from databases import ServeProcess

AUTOGRADER = [sys.executable, "-m", "autograder.cli"]
STUDENTS = ["10001", "10002"]


@pytest.fixture(scope="module")
def open_course():  # -> Course, in a folder the service's user (nobody) may read
    yield from databases.open_course("agconfig-course-", STUDENTS)


def autograder(course_root: Path, *args: str, timeout: float = 300,
               **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([*AUTOGRADER, "--course", str(course_root), *args],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: serve hands the database to nobody")
def test_tokens_issued_with_no_database_are_the_ones_serve_accepts(open_course, tmp_path):  # noqa: ANN001
    """`token issue --roster` then `serve`, neither given --database, as root: the same
    database (a folder of its own in the course, which serve may hand to its user), and
    both say which."""
    root = open_course.root
    default = root / "service" / "service.db"
    shutil.rmtree(root / "service", ignore_errors=True)
    output = tmp_path / "tokens.csv"
    issued = autograder(root, "token", "issue", "--roster", "--output", str(output))
    assert issued.returncode == 0, issued.stderr
    assert f"database sqlite:///{default}" in issued.stderr
    tokens = {row["id"]: row["token"] for row in csv.DictReader(output.open())}
    try:
        with ServeProcess(root, None, log_dir=tmp_path) as server:
            assert f"database sqlite:///{default}" in server.log
            me = httpx.get(f"{server.url}/api/me", timeout=30,
                           headers={"Authorization": f"Bearer {tokens['10001']}"})
            assert me.status_code == 200, me.text
            assert me.json()["id"] == "10001"
        assert "Traceback" not in server.log, server.log
        # The course's own files stay root's; only the database's folder was handed over.
        assert root.stat().st_uid == 0 and (root / "nbgrader_config.py").stat().st_uid == 0
    finally:
        shutil.rmtree(root / "service", ignore_errors=True)


def test_token_issue_makes_a_missing_sqlite_folder(open_course, tmp_path):  # noqa: ANN001
    """An explicit SQLite URL whose folder does not exist yet (before the first serve): the
    folder is made, the token issued, no traceback."""
    database = tmp_path / "not" / "yet" / "service.db"
    done = autograder(open_course.root, "token", "issue", "10002", "--database",
                      f"sqlite:///{database}")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() and "\n" not in done.stdout.strip()  # the token alone
    assert f"database sqlite:///{database}" in done.stderr
    assert database.is_file() and (database.parent.stat().st_mode & 0o777) == 0o700


def course_copy(course_root: Path, folder: Path, config: str) -> Path:
    """A copy of the course with `config` appended to its nbgrader_config.py."""
    root = folder / "course"
    shutil.copytree(course_root, root, ignore=shutil.ignore_patterns("service", "service.db*"))
    with (root / "nbgrader_config.py").open("a") as handle:
        handle.write("\n" + config + "\n")
    return root


@pytest.mark.parametrize(("config", "named"), [
    ("c.AssignmentPolicy.budget_capcity = 5", "budget_capcity is not a setting"),
    ("c.AssignmentPolicy.per_assignment = {'backprob': {'budget_capacity': 5}}",
     "names no assignment"),
    ("c.Service.lease_second = 5", "c.Service.lease_second is not a setting"),
    ("c.Service.port = 70000", "c.Service.port = 70000"),
    ("c.AssigmentPolicy.results_shown = 'exam'", "c.AssigmentPolicy is no settings class: "
                                                 "c.AssignmentPolicy?"),
])
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_a_typo_before_starting(open_course, tmp_path, config, named,  # noqa: ANN001
                                                        command):  # noqa: ANN001
    """A typo in the policy or the service's settings: one line naming it, exit 2, before
    anything starts (no database made, no port bound), rather than a 400 for every upload."""
    from databases import free_port

    root = course_copy(open_course.root, tmp_path, config)
    database = tmp_path / "db" / "service.db"
    extra = ["--port", str(free_port())] if command == "serve" else []
    done = autograder(root, command, "--database", f"sqlite:///{database}", *extra,
                      timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not database.exists()


@pytest.mark.parametrize(("setting", "value"), [
    ("lease_seconds", "0"), ("poll_seconds", "-1"), ("session_hours", "float('nan')"),
    ("sign_in_window_minutes", "0"), ("header_seconds", "float('inf')"), ("body_seconds", "0"),
    ("max_upload_bytes", "0"), ("port", "0"), ("port", "65536"), ("sign_in_attempts", "0"),
    ("connections_per_address", "0"), ("max_connections", "-5"), ("retention_days", "-1"),
    ("lease_seconds", "'thirty'"),
])
def test_each_unusable_service_setting_is_named(tmp_path, setting, value) -> None:  # noqa: ANN001
    from traitlets.config import Config

    from autograder.course import Course
    from autograder.service.settings import ServiceSettingsError, service_settings

    config = Config()
    config.Service[setting] = eval(value)  # noqa: S307 - the test's own literals
    course = Course(root=tmp_path, course_id="c", config=config)
    with pytest.raises(ServiceSettingsError, match=f"c.Service.{setting} = "):
        service_settings(course)


def test_usable_service_settings_pass(tmp_path) -> None:  # noqa: ANN001
    from traitlets.config import Config

    from autograder.course import Course
    from autograder.service.settings import service_settings

    config = Config()
    config.Service.port = 8443
    config.Service.retention_days = 0
    config.Service.lease_seconds = 0.5
    settings = service_settings(Course(root=tmp_path, course_id="c", config=config))
    assert (settings.port, settings.retention_days, settings.lease_seconds) == (8443, 0, 0.5)


def test_a_policy_broken_while_serving_is_a_503_without_the_config(open_course, solution,  # noqa: ANN001
                                                                  tmp_path):  # noqa: ANN001
    """A policy that became unusable after the start (here: per_assignment names an
    assignment whose folder is gone): the student's upload is a 503 that shows nothing of the
    instructor's configuration, stores nothing, and the real message is logged once."""
    import logging

    import nbformat
    from litestar.testing import TestClient
    from sqlalchemy import func, select

    from autograder.author import with_answers
    from autograder.course import Course
    from autograder.service import auth
    from autograder.service.app import create_app
    from autograder.service.database import Database
    from autograder.service.models import Person, Role, Submission
    from autograder.service.settings import Service

    root = course_copy(open_course.root, tmp_path,
                       "c.AssignmentPolicy.per_assignment = {'gone': {'budget_capacity': 5}}")
    (root / "source" / "gone").mkdir(parents=True)
    course = Course.load(root)
    from autograder.service.policy import policy_for
    policy_for(course, "backprop")  # usable at the start
    (root / "source" / "gone").rmdir()  # ... and not any more
    db = Database(f"sqlite:///{tmp_path / 'service.db'}")
    db.upgrade()
    with db.session() as session:
        session.add(Person(id="10001", role=Role.STUDENT, name="Ada"))
        session.flush()
        token = auth.issue_token(session, "10001")
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    content = nbformat.writes(with_answers(release, solution)).encode()
    app = create_app(course, db, Service(config=course.config))
    logged: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("autograder.service.student_api")
    logger.addHandler(handler)
    try:
        with TestClient(app) as client:
            answers = [client.post("/api/assignments/backprop/submissions",
                                   files={"notebook": ("backprop.ipynb", content,
                                                       "application/x-ipynb+json")},
                                   headers={"Authorization": f"Bearer {token}"})
                       for _ in range(2)]
            terms = client.get("/api/assignments/backprop",
                               headers={"Authorization": f"Bearer {token}"})
        for answer in (*answers, terms):
            assert answer.status_code == 503, answer.text
            assert answer.json()["detail"] == ("the course's settings are being fixed: try "
                                               "again later")
            assert "nbgrader_config" not in answer.text and "gone" not in answer.text
        assert len([line for line in logged if "names no assignment" in line]) == 1, logged
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Submission)) == 0
    finally:
        logger.removeHandler(handler)
        db.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_leaves_no_half_written_secret(tmp_path) -> None:  # noqa: ANN001
    """The course's secret on a full disk: a clear CourseError and no file (a 0-byte secret
    stopped all grading); once space is freed it is made, whole, and then kept."""
    from databases import fill, tmpfs

    from autograder.course import SECRET_FILE, Course, CourseError

    with tmpfs("1m") as disk:
        course = Course(root=disk, course_id="c")
        filler = fill(disk)
        with pytest.raises(CourseError, match="cannot be written"):
            course.secret()
        assert sorted(os.listdir(disk)) == ["filler"]  # no secret, no temporary file
        filler.unlink()
        secret = course.secret()
        assert len(secret) == 32 and course.secret() == secret
        assert sorted(os.listdir(disk)) == [SECRET_FILE]
        assert (disk / SECRET_FILE).stat().st_mode & 0o777 == 0o600


def test_a_worker_without_the_course_secret_refuses_to_start(open_course, tmp_path) -> None:  # noqa: ANN001
    """A worker on another machine, the course copied without .autograder-secret: it would
    make a secret of its own (other unseen inputs); it refuses, saying to copy the file."""
    import signal

    from autograder.course import SECRET_FILE

    root = tmp_path / "course"
    shutil.copytree(open_course.root, root,
                    ignore=shutil.ignore_patterns("service", "service.db*", SECRET_FILE))
    database = tmp_path / "db" / "service.db"
    worker = subprocess.Popen([*AUTOGRADER, "--course", str(root), "worker", "--database",
                               f"sqlite:///{database}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        out, err = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGTERM)  # it started grading: stop it in order
        out, err = worker.communicate(timeout=60)
        raise AssertionError(f"the worker started without the course's secret:\n{out}{err}"
                             ) from None
    assert worker.returncode == 2, out + err
    assert f"copy {SECRET_FILE} from the course's machine" in err and "Traceback" not in err
    assert not (root / SECRET_FILE).exists()


def test_delete_student_with_a_typo_is_an_error_and_says_what_is_kept(open_course,  # noqa: ANN001
                                                                       tmp_path) -> None:  # noqa: ANN001
    """`service delete-student TYPO` said "deleted 0 row(s)" and exited 0: now one line,
    exit 2, nothing audited. A real id: deleted, and the answer says what stays."""
    from sqlalchemy import func, select

    from autograder.service.database import Database
    from autograder.service.models import AuditEntry

    url = f"sqlite:///{tmp_path / 'db' / 'service.db'}"
    issued = autograder(open_course.root, "token", "issue", "10001", "--database", url)
    assert issued.returncode == 0, issued.stderr
    typo = autograder(open_course.root, "service", "delete-student", "1000l", "--database", url)
    assert typo.returncode == 2, typo.stdout + typo.stderr
    assert "1000l" in typo.stderr and "nothing was deleted" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 2  # the database used, then the error
    deleted = autograder(open_course.root, "service", "delete-student", "10001",
                         "--database", url)
    assert deleted.returncode == 0, deleted.stderr
    assert "1 api_token" in deleted.stdout
    assert "kept:" in deleted.stdout and "submitted/" in deleted.stdout
    assert "gradebook.db" in deleted.stdout
    db = Database(url)
    try:
        with db.session(readonly=True) as session:
            assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1
    finally:
        db.dispose()


def test_postgresql_connections_cannot_hang(postgres) -> None:  # noqa: ANN001
    """Against a server that stops answering: TCP keepalives and a TCP user timeout on every
    connection, and statement_timeout (c.Service.statement_seconds) cancels a statement the
    server does not finish; a bounded wait for a pooled connection."""
    import time

    import sqlalchemy

    from autograder.service.database import Database

    db = Database(postgres.create(), statement_seconds=1.5)
    try:
        assert db.engine.pool.timeout() == 10
        with db.engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            given = raw.info.get_parameters()
            assert (given["keepalives"], given["keepalives_idle"], given["keepalives_interval"],
                    given["keepalives_count"], given["tcp_user_timeout"]) == \
                ("1", "5", "2", "3", "10000")
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
        started = time.monotonic()
        with pytest.raises(sqlalchemy.exc.OperationalError), db.session() as session:
            session.execute(sqlalchemy.text("SELECT pg_sleep(20)"))
        assert time.monotonic() - started < 10
    finally:
        db.dispose()


def test_a_misspelt_settings_class_is_named_and_nbgraders_own_are_not() -> None:
    """traitlets keeps `c.AssigmentPolicy` without a word, and every setting under it is
    ignored (an exam's results shown at once); a class of nbgrader's one letter from ours
    (`c.Autograde`, nbgrader's autograde step) and any other are left alone."""
    from traitlets.config import Config

    from autograder.config_check import check_class_names
    from autograder.service.settings import ServiceSettingsError

    config = Config()
    config.Autograde.sanitize_ingested = True
    config.ServerApp.port = 9000
    config.Service.port = 8001
    check_class_names(config, "nbgrader_config.py", ServiceSettingsError)
    config.Servce.port = 8002
    with pytest.raises(ServiceSettingsError, match=r"c.Servce is no settings class: c.Service\?"):
        check_class_names(config, "nbgrader_config.py", ServiceSettingsError)
