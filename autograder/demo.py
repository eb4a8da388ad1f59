"""The main job: the instructor's whole cycle on the examples shipped in examples/submitted/."""

from __future__ import annotations

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
    results = commands.grade(course, DEMO_ASSIGNMENT, examples, out=out)

    table = commands.gradebook_table(course, DEMO_ASSIGNMENT)
    table = table.loc[[result.student_id for result in results]]
    print("\n== gradebook", file=out)
    print(commands.show_table(table), file=out)
    path = commands.export(course, DEMO_ASSIGNMENT)
    seconds = [result.seconds for result in results]
    print(f"\nwrote {path}; feedback in {course.root / 'feedback'}; gradebook.db updated",
          file=out)
    print(f"{len(results)} submissions graded; {sum(seconds) / len(seconds):.2f} s each in "
          f"its own process; whole job {time.monotonic() - started:.1f} s", file=out)
