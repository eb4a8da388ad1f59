"""Shared fixtures: a throw-away copy of the course, released once with the real nbgrader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder import commands
from autograder.author import solution_answers, with_answers
from autograder.course import Course
from autograder.results import SubmissionResult
from autograder.tempfiles import PREFIX, owner_pid, pid_alive, temp_root

REPO = Path(__file__).resolve().parent.parent
AUTOGRADER = [sys.executable, "-m", "autograder.cli"]
COURSE_FILES = ("nbgrader_config.py", "source", "hidden_tests")
LAST = "test_zz_leftovers"  # runs after every other test: it checks what they all left


def temp_names() -> set[str]:
    """Our names in the host's temporary folder now."""
    return {name for name in os.listdir(temp_root()) if name.startswith(PREFIX)}


TEMP_AT_START = temp_names()  # conftest is imported before any test runs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.stem == LAST)  # stable: the rest keep their order


def temp_leftovers(before: set[str], owners: set[int] = frozenset(),
                   settle: float = 2.0) -> list[str]:
    """What appeared in the host's temporary folder since `before` and will stay there: this
    machine is shared, so a folder whose name says its owner is a live process that is not
    ours (another course's grade, another session's tests) is theirs, and a folder that goes
    within `settle` seconds was in use. Counted: folders of `owners`, of this process and its
    descendants, of dead owners, and names without an owner (the names before this issue;
    nobody can tell whose they are, so while others on this machine still run that code,
    a folder they leak can show here)."""
    ours = {os.getpid(), *owners, *descendants(os.getpid())}

    def suspects() -> set[str]:
        found = set()
        for name in temp_names() - before:
            pid = owner_pid(name)
            if pid is None or pid in ours or not pid_alive(pid):
                found.add(name)
        return found

    first = suspects()
    if first:
        time.sleep(settle)
    return sorted(first & suspects())


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = {int(child) for child in children.read().split()}
                    todo.extend(kids - found)
                    found |= kids
        except OSError:
            pass  # it ended meanwhile
    return found


def train_step_calling(*calls: str) -> str:
    """A student's train_step: the forward pass and loss, then `calls` in this order."""
    body = "".join(f"    {call}\n" for call in calls)
    return ("def train_step(model, optimizer, criterion, X, y):\n"
            "    loss = criterion(model(X), y)\n" + body + "    return loss\n")


def make_course(root: Path, assignment: str = "backprop") -> Course:
    """Copy the course's inputs to `root` and release `assignment` there with nbgrader."""
    for name in COURSE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    done = subprocess.run([*AUTOGRADER, "--course", str(root), "release", assignment],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return Course.load(root)


@pytest.fixture(scope="session")
def course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    return make_course(tmp_path_factory.mktemp("course"))


@pytest.fixture(scope="session")
def release_notebook(course: Course):
    return nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)


@pytest.fixture(scope="session")
def solution(course: Course) -> dict[str, str]:
    source = nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb", as_version=4)
    return solution_answers(source)


def write_submissions(folder: Path, notebooks: dict[str, object],
                      assignment: str = "backprop") -> Path:
    """nbgrader's submitted/ layout: <folder>/<student>/<assignment>/<assignment>.ipynb."""
    for student, notebook in notebooks.items():
        target = folder / student / assignment
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{assignment}.ipynb"
        if isinstance(notebook, str | bytes):
            path.write_bytes(notebook if isinstance(notebook, bytes) else notebook.encode())
        else:
            nbformat.write(notebook, path)
    return folder


def grade_answers(course: Course, release_notebook, tmp_path: Path,
                  submissions: dict[str, dict[str, str] | str | bytes], timeout: float = 60,
                  workers: int | None = None,
                  timestamps: dict[str, bytes] | None = None) -> dict[str, SubmissionResult]:
    """Grade {student: answers-by-grade-id (or raw notebook text)} in one batch, for real."""
    notebooks = {student: (answers if isinstance(answers, str | bytes)
                           else with_answers(release_notebook, answers))
                 for student, answers in submissions.items()}
    folder = write_submissions(tmp_path / "incoming", notebooks)
    for student, stamp in (timestamps or {}).items():
        (folder / student / "backprop" / "timestamp.txt").write_bytes(stamp)
    results = commands.grade(course, "backprop", folder, timeout=timeout, workers=workers)
    return {result.student_id: result for result in results}


def run_nbgrader(course: Course, *args: str) -> subprocess.CompletedProcess:
    """nbgrader's own command line in the course directory (this environment's tools on PATH)."""
    from autograder.release import put_nbgrader_tools_on_path

    put_nbgrader_tools_on_path()
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course.root,
                          capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def nbgrader_export(course: Course, tmp_path: Path,
                    assignment: str = "backprop") -> dict[str, dict[str, str]]:
    """`nbgrader export`'s rows of one assignment, by student id: what nbgrader itself says."""
    import csv

    tmp_path.mkdir(parents=True, exist_ok=True)
    target = tmp_path / "nbgrader-export.csv"
    run_nbgrader(course, "export", f"--to={target}")
    with target.open(newline="", encoding="utf-8") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)
                if row["assignment"] == assignment}



# --- The service's databases (tests/databases.py): a SQLite file and PostgreSQL -------------

@pytest.fixture(scope="session")
def postgres():  # -> databases.PostgresForTests
    """The test run's PostgreSQL: the machine's server, else a throwaway one (never a skip)."""
    from databases import PostgresForTests

    server = PostgresForTests()
    yield server
    server.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database for one test, on each kind the service runs on."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    return request.getfixturevalue("postgres").create()
