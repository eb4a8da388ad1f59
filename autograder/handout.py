"""The student's side: handout/<assignment>/ holds what a student needs and nothing else of the
course -- the release notebook (as nbgrader released it: no solutions) and a short README that
says how to open it, how to check it, what the hidden tests look at, and how to submit.

Built from release/ only, never from source/, hidden_tests/ or examples/; a notebook that still
holds a solution region is refused rather than handed out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from autograder.assignment import AssignmentError, released_notebook
from autograder.course import Course
from autograder.files import write_atomic
from autograder.late import due_date
from autograder.release import LEAK_MARKERS

README = """\
# {assignment}

This folder is everything you need: the notebook `{notebook}` and this README.{due}

## Open it

With JupyterLab installed (`pip install jupyterlab torch`), from this folder:

```bash
jupyter lab {notebook}
```

(or upload `{notebook}` to the JupyterHub your course uses).

## Work through it

Read each part, then replace `raise NotImplementedError()` in the answer cell with your code.
Keep the cells in place: do not delete cells, and write your code only in the answer cells
(cells you add run too, but the grader finds your answers in the answer cells).

## Check your work

Each part ends with a **self-check cell**: run it (Shift+Enter) after your answer cell. If it
prints no error, your code does what the part asks on the notebook's own example. Before
submitting, restart the kernel and run every cell (Kernel > Restart Kernel and Run All
Cells...): the grader runs your notebook from the top, like that.

## How it is graded

Hidden tests call your functions again, outside the notebook, on inputs you never see: other
values of x, other networks, other data and starting weights. So code that only works for the
notebook's examples (a gradient typed in by hand, a number copied from the lesson) will not pass;
code that computes the answer from its arguments will. Each test's message in your feedback says
what it checked and, if it failed, what to look at. Each notebook has a time limit: a cell that
runs for ever is stopped.

## Submit

Submit the one file `{notebook}`, under that name:

- through your course's LMS (Canvas, Moodle, Blackboard): upload it to the assignment
  "{assignment}";
- or, if your course uses nbgrader's exchange: `nbgrader submit {assignment}` (or the
  Assignments tab of JupyterLab).

You may submit again before the due date; the last submission is graded. Late submissions may
lose points, as your course says.

## Your feedback

Once the notebooks are graded, your instructor returns a feedback page (`feedback.html`, in
the LMS beside your submission): your score, each part's tests with PASS or FAIL and, for a
failed test, a message that says what was checked and what to look at, the errors your cells
raised, and whether the submission counted as late. It never shows the hidden inputs.
"""



def build_handout(course: Course, assignment: str) -> Path:
    """Write handout/<assignment>/ (replacing what was there); returns the folder."""
    notebook = released_notebook(course, assignment)
    content = notebook.read_bytes()
    leaked = [marker for marker in LEAK_MARKERS if marker.encode() in content]
    if leaked:
        raise AssignmentError(f"{notebook} still holds {', '.join(leaked)}: release it again "
                              f"with `autograder release {assignment}`; nothing was handed out")
    target = course.root / "handout" / assignment
    if target.is_symlink() or target.parent.is_symlink():
        raise AssignmentError(f"{target} is a symbolic link: nothing is written through it")
    if target.exists():
        shutil.rmtree(target)  # only what this command wrote: a stale file must not stay
    target.mkdir(parents=True)
    write_atomic(target / notebook.name, content)
    due = due_date(course, assignment)
    due_line = (f"\n\n**Due: {due:%A %d %B %Y, %H:%M} UTC.**" if due is not None else "")
    write_atomic(target / "README.md", README.format(assignment=assignment, due=due_line,
                                                      notebook=notebook.name).encode("utf-8"))
    return target
