"""The main job: the instructor's whole cycle on the examples shipped in examples/submitted/."""

from __future__ import annotations

import textwrap
import time
from typing import TextIO

from autograder import commands
from autograder.course import Course
from autograder.release import release

DEMO_ASSIGNMENT = "backprop"


def run_demo(course: Course, out: TextIO) -> None:
    started = time.monotonic()
    print(f"== release: nbgrader generate_assignment {DEMO_ASSIGNMENT}", file=out, flush=True)
    print(f"released {release(course, DEMO_ASSIGNMENT)}", file=out)

    examples = course.root / "examples" / "submitted"
    print(f"\n== grade: {examples}", file=out, flush=True)
    results = commands.grade(course, DEMO_ASSIGNMENT, examples, out=out, regrade=True)

    print("\n== gradebook (points per grade cell; per test in the CSV)", file=out)
    print(commands.show_table(course, DEMO_ASSIGNMENT, [r.student_id for r in results]),
          file=out)
    print("\n== what each student is told first (full feedback in feedback/)", file=out)
    for result in results:
        failed = next((test for test in result.tests if not test.passed), None)
        told = f"{failed.title}: {failed.message}" if failed else "all tests passed"
        print(f"{result.student_id}: {textwrap.shorten(told, 160)}", file=out)
    path = commands.export(course, DEMO_ASSIGNMENT)
    seconds = [result.seconds for result in results]
    print(f"\nwrote {path}; feedback in {course.root / 'feedback'}; gradebook.db updated",
          file=out)
    print(f"{len(results)} submissions graded; {sum(seconds) / len(seconds):.2f} s each in "
          f"its own process; whole job {time.monotonic() - started:.1f} s", file=out)
