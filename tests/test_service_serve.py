"""`autograder serve` and `autograder submit` as real processes: the HTTP process runs as
c.Service.user (the worker alone keeps root), SIGTERM stops both, a student's whole round trip
with the real client, and the client's answers to each way it can go wrong."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import databases
import nbformat
import pytest
from conftest import make_course
from databases import (
    ServeProcess,
    add_students,
    free_port,
    student_tokens,
    uid_of,
    wait_for,
)

from autograder import commands
from autograder.author import with_answers
from autograder.course import Course

STUDENTS = ["10001", "10002", "10003"]
UNPRIVILEGED = 64_322  # no user of this machine: the non-root service's uid
SUBMIT = [sys.executable, "-m", "autograder.cli", "submit"]


@pytest.fixture(scope="module")
def open_course():  # -> Course, in a folder the service's user (nobody) may read
    yield from databases.open_course("agserve-course-", STUDENTS)


@pytest.fixture
def sqlite_url(open_course) -> str:  # noqa: ANN001
    folder = Path(tempfile.mkdtemp(prefix="agserve-db-"))
    yield f"sqlite:///{folder / 'service.db'}"
    shutil.rmtree(folder, ignore_errors=True)


def notebook_file(folder: Path, answers: dict[str, str], course) -> Path:  # noqa: ANN001
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    path = folder / "backprop.ipynb"
    nbformat.write(with_answers(release, answers), path)
    return path


def submit(url: str, notebook: Path, token: str | None, *args: str,
           timeout: float = 120) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "AUTOGRADER_TOKEN"}
    if token is not None:
        env["AUTOGRADER_TOKEN"] = token
    return subprocess.run([*SUBMIT, str(notebook), "--server", url, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks the privilege drop")
def test_root_serve_drops_privileges_for_http_and_keeps_them_for_the_worker(
        open_course, sqlite_url, solution, tmp_path):  # noqa: ANN001
    tokens = student_tokens(open_course.root, sqlite_url)
    nobody = pwd.getpwnam("nobody").pw_uid
    home = Path(os.path.expanduser("~root"))
    secret = home / f"agserve-secret-{os.getpid()}"
    secret.write_text("root's own")
    try:
        # No help from the test (Python is under /root here, mode 700): serve itself gives
        # its HTTP process a view where root's home shows only what the process needs.
        with ServeProcess(open_course.root, sqlite_url, log_dir=tmp_path) as server:
            seen_by_http = os.listdir(f"/proc/{server.pid}/root{home}")
            worker = server.worker_pid()
            seen_by_worker = os.listdir(f"/proc/{worker}/root{home}")
    finally:
        secret.unlink()
    assert secret.name not in seen_by_http and secret.name in seen_by_worker
    python = Path(sys.base_prefix).resolve()
    if home in python.parents:
        assert seen_by_http == [python.relative_to(home).parts[0]]
    assert "Traceback" not in server.log, server.log
    with ServeProcess(open_course.root, sqlite_url, log_dir=tmp_path) as server:
        assert uid_of(server.pid) == nobody, server.log
        worker = server.worker_pid()
        assert uid_of(worker) == 0
        # The database and its folder are the service user's now; the course is not.
        db_file = Path(sqlite_url.removeprefix("sqlite:///"))
        assert db_file.stat().st_uid == nobody and db_file.parent.stat().st_uid == nobody
        assert open_course.root.stat().st_uid == 0
        done = submit(server.url, notebook_file(tmp_path, solution, open_course),
                      tokens["10001"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert "graded" in done.stdout and "score" in done.stdout
        code = server.stop()
        assert code == 0, server.log
        wait_for(lambda: not Path(f"/proc/{worker}").exists(), 30)
    assert "Traceback" not in server.log, server.log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_serve_refuses_to_hand_the_course_folder_to_the_service_user(open_course):  # noqa: ANN001
    """A SQLite database in the course's root would give the HTTP process the right to
    replace nbgrader_config.py, which the root worker runs: refused, course untouched."""
    url = f"sqlite:///{open_course.root / 'service.db'}"
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "--course",
                           str(open_course.root), "serve", "--database", url,
                           "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "folder of its own" in done.stderr, done.stderr
    assert open_course.root.stat().st_uid == 0
    assert (open_course.root / "nbgrader_config.py").stat().st_uid == 0
    (open_course.root / "service.db").unlink(missing_ok=True)


def _mount_options(pid: int, path: Path) -> set[str]:
    """The options of the mount at `path` as process `pid` sees it (its mountinfo)."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            return set(fields[5].split(","))
    raise AssertionError(f"nothing mounted at {path} for {pid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_serve_reaches_a_course_in_a_private_folder_and_nothing_else_there(
        open_course, solution, tmp_path):  # noqa: ANN001
    """The course and its database in a folder only root may enter (a private home): the
    HTTP process sees that folder as the course (read-only) and the database's folder
    (writable) alone, and serves; the rest of the folder is out of its sight."""
    private = Path(tempfile.mkdtemp(prefix="agserve-private-"))  # mode 700
    try:
        shutil.copytree(open_course.root, private / "course")
        os.chmod(private / "course", 0o755)
        (private / "db").mkdir()
        (private / "secret.txt").write_text("root's own")
        url = f"sqlite:///{private / 'db' / 'service.db'}"
        tokens = student_tokens(private / "course", url)
        with ServeProcess(private / "course", url, log_dir=tmp_path) as server:
            assert uid_of(server.pid) == pwd.getpwnam("nobody").pw_uid
            assert sorted(os.listdir(f"/proc/{server.pid}/root{private}")) == ["course", "db"]
            assert "ro" in _mount_options(server.pid, private / "course")
            assert "rw" in _mount_options(server.pid, private / "db")
            done = submit(server.url, notebook_file(tmp_path, solution, open_course),
                          tokens["10003"])
            assert done.returncode == 0, done.stdout + done.stderr + server.log
            assert "graded" in done.stdout
        assert "Traceback" not in server.log, server.log
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_serve_refuses_a_course_its_user_cannot_read(open_course, tmp_path):  # noqa: ANN001
    """A course folder the service user may not list cannot be made reachable by a bind:
    refused before anything starts, naming the folder."""
    course = Path(tempfile.mkdtemp(prefix="agserve-closed-", dir="/tmp")) / "course"
    try:
        shutil.copytree(open_course.root, course)
        os.chmod(course.parent, 0o755)
        os.chmod(course / "release", 0o700)
        (tmp_path / "db").mkdir()
        port = free_port()
        done = subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(course),
                               "serve", "--database", f"sqlite:///{tmp_path / 'db' / 's.db'}",
                               "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{course / 'release'} cannot be read by nobody" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    finally:
        shutil.rmtree(course.parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_serve_demo_as_the_readme_says(tmp_path):  # noqa: ANN001
    """`make serve`'s command (`autograder serve --demo`), as root with Python private to
    root and no help from the test: it serves as nobody, and the token it prints for the
    example "solution" student gets that notebook graded 10/10 with `autograder submit`."""
    from conftest import REPO

    private = Path(tempfile.mkdtemp(prefix="agserve-demo-"))  # mode 700: bound, not opened
    log = tmp_path / "demo.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "autograder.cli", "serve", "--demo",
                                    "--into", str(private / "course"), "--port", str(port)],
                                   cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        def started() -> bool:
            assert process.poll() is None, log.read_text()
            return "autograder serve: http://" in log.read_text()

        wait_for(started, 120, 0.2)
        output = log.read_text()
        token = next(line.split()[1] for line in output.splitlines()
                     if line.split()[:1] == ["solution"])
        assert f"(HTTP as nobody, pid {process.pid};" in output, output
        assert uid_of(process.pid) == pwd.getpwnam("nobody").pw_uid
        done = submit(f"http://127.0.0.1:{port}",
                      REPO / "examples" / "submitted" / "solution" / "backprop" / "backprop.ipynb",
                      token)
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()
        assert "score: 10 / 10" in done.stdout, done.stdout
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(60) == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(private, ignore_errors=True)


def test_non_root_serve_just_runs(open_course, solution, tmp_path):  # noqa: ANN001
    """Started by an ordinary user, serve runs as that user (nothing to drop) and grades with
    the sandbox layers it can have (--unsafe)."""
    uid = UNPRIVILEGED if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="agserve-user-", dir="/tmp"))
    os.chmod(folder, 0o755)
    shutil.copytree(open_course.root, folder / "course")
    url = f"sqlite:///{folder / 'db' / 'service.db'}"
    (folder / "db").mkdir()
    tokens = student_tokens(folder / "course", url)
    if uid is not None:
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(folder)], check=True)
    server = ServeProcess(folder / "course", url, "--unsafe", as_uid=uid, log_dir=tmp_path)
    try:
        server.start()
        assert uid_of(server.pid) == os.geteuid() if uid is None else uid, server.log
        assert uid_of(server.worker_pid()) == (uid if uid is not None else os.geteuid())
        done = submit(server.url, notebook_file(tmp_path, solution, open_course),
                      tokens["10002"])
        assert done.returncode == 0, done.stdout + done.stderr + server.log
        assert server.stop() == 0, server.log
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_submit_says_what_went_wrong(open_course, sqlite_url, solution, tmp_path):  # noqa: ANN001
    tokens = student_tokens(open_course.root, sqlite_url)
    good = notebook_file(tmp_path, solution, open_course)
    with ServeProcess(open_course.root, sqlite_url, log_dir=tmp_path) as server:
        # no token at all: usage error, before anything is sent
        done = submit(server.url, good, None)
        assert done.returncode == 2 and "AUTOGRADER_TOKEN" in done.stderr
        # a wrong token
        done = submit(server.url, good, "not-a-token")
        assert done.returncode == 2 and "token rejected" in done.stderr
        # the token from a file, never the command line
        token_file = tmp_path / "token"
        token_file.write_text(tokens["10003"] + "\n")
        # not a notebook: the server's message, exit 1
        junk = tmp_path / "backprop.txt"
        junk.write_text("hello")
        done = submit(server.url, junk, None, "--assignment", "backprop",
                      "--token-file", str(token_file))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "refused (4" in done.stderr
        # an assignment the course does not have
        done = submit(server.url, good, tokens["10003"], "--assignment", "nosuch")
        assert done.returncode in (1, 2) and "nosuch" in done.stderr
        # the round trip, with --token-file
        done = submit(server.url, good, None, "--token-file", str(token_file))
        assert done.returncode == 0, done.stdout + done.stderr
        first = done.stdout.splitlines()[0]
        assert first.startswith("submitted backprop.ipynb to backprop: id ")
    # nobody listening: one clear line, exit 1
    done = submit(server.url, good, tokens["10003"])
    assert done.returncode == 1
    assert "cannot reach the service" in done.stderr and "Traceback" not in done.stderr


def test_serve_sigterm_stops_a_busy_service(open_course, sqlite_url, solution, tmp_path):  # noqa: ANN001
    """SIGTERM while uploads are queued: both processes end, exit 0."""
    tokens = student_tokens(open_course.root, sqlite_url)
    good = notebook_file(tmp_path, solution, open_course)
    server = ServeProcess(open_course.root, sqlite_url, log_dir=tmp_path).start()
    try:
        worker = server.worker_pid()
        done = submit(server.url, good, tokens["10001"], "--no-wait")
        assert done.returncode == 0, done.stderr
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0, server.log
        wait_for(lambda: not Path(f"/proc/{worker}").exists(), 60)
    finally:
        server.stop()


INSTRUCTOR = "prof-serve"


def instructor_token(course_root: Path, url: str) -> str:
    """An instructor's token, as `autograder token issue` gives it (c.Service.instructors)."""
    from autograder.course import Course
    from autograder.service.auth import issue_token, sync_people
    from autograder.service.database import Database

    db = Database.for_course(Course.load(course_root), url)
    try:
        db.upgrade()
        with db.session() as session:
            sync_people(session, Course.load(course_root), [INSTRUCTOR])
            return issue_token(session, INSTRUCTOR)
    finally:
        db.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the HTTP process runs as nobody")
def test_root_serve_instructor_regrade_and_gradebook_work_on_a_read_only_course(
        sqlite_url, solution, tmp_path):  # noqa: ANN001
    """As root the HTTP process cannot write the course nor read its secret: a regrade
    (start, watch, confirm) and the gradebook still answer, never a 500 -- JSON, CSV, and the
    Canvas and Moodle files, filled from the final scores the worker keeps, byte for byte
    what `autograder export` writes."""
    import httpx

    root = Path(tempfile.mkdtemp(prefix="agserve-instructor-"))
    try:
        os.chmod(root, 0o755)
        course = make_course(root)
        add_students(root, STUDENTS)
        with (root / "nbgrader_config.py").open("a") as config:
            config.write(f"\nc.Service.instructors = [{INSTRUCTOR!r}]\n"
                         "c.Service.course_sync_seconds = 0.5\n"
                         "c.CanvasExport.assignment_id = '4242'\n")
        tokens = student_tokens(root, sqlite_url)
        token = instructor_token(root, sqlite_url)
        headers = {"Authorization": f"Bearer {token}"}
        with ServeProcess(root, sqlite_url, log_dir=tmp_path) as server:
            assert uid_of(server.pid) == pwd.getpwnam("nobody").pw_uid, server.log
            for student in STUDENTS[:2]:
                done = submit(server.url, notebook_file(tmp_path, solution, course),
                              tokens[student])
                assert done.returncode == 0, done.stdout + done.stderr
            api = f"{server.url}/api/instructor"
            with httpx.Client(headers=headers, timeout=60) as client:
                started = client.post(f"{api}/assignments/backprop/regrades",
                                      json={"students": None})
                assert started.status_code == 202, started.text + server.log
                regrade = f"{api}/regrades/{started.json()['id']}"

                def finished() -> bool:
                    shown = client.get(regrade)
                    assert shown.status_code == 200, shown.text
                    return shown.json()["done"]

                wait_for(finished, 120, 0.2)
                confirmed = client.post(f"{regrade}/confirm")
                assert confirmed.status_code == 200, confirmed.text + server.log
                assert confirmed.json()["state"] == "confirmed"

                def in_gradebook() -> bool:  # the worker keeps gradebook.db, soon
                    shown = client.get(f"{api}/assignments/backprop/gradebook")
                    if shown.status_code == 503:  # not made by the worker yet
                        return False
                    assert shown.status_code == 200, shown.text + server.log
                    assert shown.headers["X-Autograder-Synced"] == "false"
                    scores = {row["student_id"]: row["score"] for row in shown.json()
                              if row["score"]}
                    return set(scores) == set(STUDENTS[:2])

                wait_for(in_gradebook, 60, 0.5)
                csv = client.get(f"{api}/assignments/backprop/gradebook",
                                 params={"format": "csv"})
                assert csv.status_code == 200, csv.text + server.log
                assert all(student in csv.text for student in STUDENTS[:2])
                canvas = client.get(f"{api}/assignments/backprop/gradebook",
                                    params={"format": "canvas"})
                assert canvas.status_code == 200, canvas.text + server.log
                worksheet = ("Identifier,Full name,Email address,Status,Grade,Maximum Grade,"
                             "Grade can be changed,Last modified (grade),Feedback comments\n"
                             + "".join(f"Participant {student},S {student},,Submitted,,"
                                       "100.00,Yes,-,\n" for student in STUDENTS))
                moodle = client.post(f"{api}/assignments/backprop/gradebook",
                                     params={"format": "moodle"},
                                     content=worksheet.encode())
                assert moodle.status_code == 200, moodle.text + server.log
            assert server.stop() == 0, server.log
            template = tmp_path / "worksheet.csv"
            template.write_text(worksheet)
            for answer, fmt, given in ((canvas, "canvas", None), (moodle, "moodle", template)):
                assert answer.content == commands.export(
                    Course.load(root), "backprop", fmt, tmp_path / f"cli-{fmt}.csv",
                    given).read_bytes(), fmt
            grades = [row.split(",")[4] for row in moodle.text.splitlines()[1:]]
            assert all(float(grade) > 0 for grade in grades[:2]), grades  # the two graded
        assert "unhandled error" not in server.log, server.log
        assert "Traceback" not in server.log, server.log
    finally:
        shutil.rmtree(root, ignore_errors=True)
