"""The main job: the instructor's whole cycle on the examples shipped in examples/submitted/,
in a scratch copy of the course, so that the instructor's gradebook.db, submitted/,
autograded/, feedback/ and exports/ never hold the six example students."""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TextIO

from autograder import commands
from autograder.course import CONFIG_FILE, Course, CourseError
from autograder.release import release

DEMO_ASSIGNMENT = "backprop"
COURSE_INPUTS = (CONFIG_FILE, "source", "hidden_tests")  # what a course is made of


def scratch_course(course: Course, into: Path | None = None) -> Course:
    """A copy of `course`'s inputs (configuration, source/, hidden tests) in `into` (new or
    empty), or in a new temporary folder; nothing graded is copied."""
    if into is None:
        into = Path(tempfile.mkdtemp(prefix="backprop-demo-"))
    into = into.resolve()
    owned = [course.root / name for name in (*COURSE_INPUTS, "release", "submitted",
                                              "autograded", "feedback", "exports")]
    if into == course.root or any(into == folder or folder in into.parents for folder in owned):
        raise CourseError(f"{into}: the demo course must be a folder of its own, outside the "
                          "course's own folders")
    if into.exists() and any(into.iterdir()):
        raise CourseError(f"{into} is not empty: the demo needs a new or empty folder")
    into.mkdir(parents=True, exist_ok=True)
    for name in COURSE_INPUTS:
        source = course.root / name
        if source.is_dir():
            shutil.copytree(source, into / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy(source, into / name)
    return Course.load(into)


def run_demo(course: Course, out: TextIO, into: Path | None = None) -> Course:
    """Release, grade the examples, print the gradebook and write the exports, all in a scratch
    course (returned); says where its output is."""
    started = time.monotonic()
    examples = course.root / "examples" / "submitted"
    if not examples.is_dir():
        raise CourseError(f"{examples} does not exist: the demo grades the shipped examples")
    demo = scratch_course(course, into)
    print(f"== demo course: {demo.root} (a copy of this course's inputs; this course's own "
          "files are left alone)", file=out, flush=True)
    print(f"== release: nbgrader generate_assignment {DEMO_ASSIGNMENT}", file=out, flush=True)
    print(f"released {release(demo, DEMO_ASSIGNMENT)}", file=out)

    print(f"\n== grade: {examples}", file=out, flush=True)
    results = commands.grade(demo, DEMO_ASSIGNMENT, examples, out=out, regrade=True)

    print("\n== gradebook (points per grade cell; per test in the CSV)", file=out)
    print(commands.show_table(demo, DEMO_ASSIGNMENT, [r.student_id for r in results]),
          file=out)
    print("\n== what each student is told first (full feedback in feedback/)", file=out)
    for result in results:
        failed = next((test for test in result.tests if not test.passed), None)
        told = f"{failed.title}: {failed.message}" if failed else "all tests passed"
        print(f"{result.student_id}: {textwrap.shorten(told, 160)}", file=out)
    path = commands.export(demo, DEMO_ASSIGNMENT)
    seconds = [result.seconds for result in results]
    print(f"\n{len(results)} submissions graded; {sum(seconds) / len(seconds):.2f} s each in "
          f"its own process; whole job {time.monotonic() - started:.1f} s", file=out)
    print(f"the demo's output is in {demo.root}: exports in {path.parent}, feedback in "
          f"{demo.root / 'feedback'}, nbgrader's gradebook in {demo.root / 'gradebook.db'} "
          f"(delete the folder when done)", file=out)
    return demo
