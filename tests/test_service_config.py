"""The service as a careless instructor configures it: the default database is the one every
command uses (and says so), typos in the settings stop `serve` before it starts, and what
`serve` reads from the course is checked before students meet it."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from conftest import make_course
from databases import ServeProcess, add_students

AUTOGRADER = [sys.executable, "-m", "autograder.cli"]
STUDENTS = ["10001", "10002"]


@pytest.fixture(scope="module")
def open_course():  # -> Course, in a folder the service's user (nobody) may read
    root = Path(tempfile.mkdtemp(prefix="agconfig-course-"))
    os.chmod(root, 0o755)
    course = make_course(root)
    add_students(root, STUDENTS)
    yield course
    shutil.rmtree(root, ignore_errors=True)


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
