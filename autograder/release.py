"""Make the student version: nbgrader's generate_assignment, then checks that nothing leaked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autograder.assignment import Assignment
from autograder.course import Course
from autograder.errors import UserError

LEAK_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS")


def put_nbgrader_tools_on_path() -> None:
    """nbgrader runs `alembic` from PATH to create gradebook.db; make it this environment's."""
    tools = os.path.dirname(sys.executable)
    if tools not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = tools + os.pathsep + os.environ.get("PATH", "")


class ReleaseError(UserError):
    """generate_assignment failed, or its output is not safe to hand out."""


def release(course: Course, assignment: str) -> Path:
    """Regenerate release/<assignment>/ from source/<assignment>/ and return its folder."""
    if not course.source_dir(assignment).is_dir():
        raise ReleaseError(f"no instructor version at {course.source_dir(assignment)}")
    command = [sys.executable, "-m", "nbgrader", "generate_assignment", assignment,
               "--force", "--create"]
    put_nbgrader_tools_on_path()
    done = subprocess.run(command, cwd=course.root, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError(f"nbgrader generate_assignment failed:\n{done.stderr.strip()[-3000:]}")
    release_dir = course.release_dir(assignment)
    check_no_leaks(release_dir)
    Assignment.load(course, assignment)  # the hidden tests must fit the released grade cells
    return release_dir


def check_no_leaks(release_dir: Path) -> None:
    """No solution region and no hidden-test region may survive into the student version."""
    for path in sorted(release_dir.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for marker in LEAK_MARKERS:
            if marker in text:
                raise ReleaseError(f"{path} still contains '{marker}'")
