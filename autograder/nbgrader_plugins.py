"""This grader behind nbgrader's own commands, and so behind formgrader's buttons.

nbgrader's `autograde` and `generate_feedback` are configurable (the course's
nbgrader_config.py sets these; see its comments):

- `c.Autograde.autograde_preprocessors = [GradeWithAutograder, AssignLatePenalties,
  CheckCellMetadata]`: nbgrader's `Execute` is gone, so no student code ever runs in
  nbgrader's process (formgrader runs it inside the Jupyter server). `GradeWithAutograder`
  grades the one student nbgrader is autograding with `autograder` in a subprocess (the
  sandbox; a stored result whose notebook and grader are unchanged is reused, not graded
  again), which records it exactly as `autograder grade` does: our scores into gradebook.db,
  our feedback, the result store. The notebook nbgrader then writes to autograded/ is the
  one `autograder grade` keeps (tests' messages in the grade cells). nbgrader's
  `AssignLatePenalties` and `CheckCellMetadata` still do their part; its `SaveAutoGrades`
  is not run, since it would score the grade cells from their outputs.
- `c.GenerateFeedback.exporter_class = FeedbackExporter`, with no preprocessors: the
  feedback nbgrader writes to feedback/<student>/<assignment>/ is ours, rendered afresh from
  the stored result and the student's final score in gradebook.db (manual grades, extra
  credit, late penalty) (HTML, and the Markdown beside it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nbconvert.exporters import Exporter
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, default

from autograder.results import SubmissionResult, clean_text

OUTPUT_TAIL = 3_000  # characters of the grading subprocess's output shown when it fails


class AutograderPluginError(Exception):
    """This grader could not grade or find the result nbgrader asked for."""


def _course_root(configurable: Any) -> Path:
    """The course directory of the nbgrader converter that made `configurable` (an exporter
    or a preprocessor of its exporter); nbgrader's working directory while it converts."""
    node = configurable
    while node is not None:
        coursedir = getattr(node, "coursedir", None)
        if coursedir is not None:
            return Path(coursedir.root).resolve()
        node = getattr(node, "parent", None)
    return Path.cwd().resolve()


def _ids(resources: dict) -> tuple[str, str, str]:
    """(assignment, student, notebook) that nbgrader is converting."""
    ids = resources.get("nbgrader") or {}
    return ids["assignment"], ids["student"], ids["notebook"]


def stored_result(root: Path, assignment: str, student: str) -> SubmissionResult:
    from autograder.store import result_store

    result = result_store(root).load(assignment, student)
    if result is None:
        raise AutograderPluginError(
            f"{student} has no autograder result for {assignment}: press Autograde for them "
            f"(or run `autograder grade {assignment} --student {student}`)")
    return result


def grade_in_subprocess(root: Path, assignment: str, student: str,
                        timeout: float | None = None) -> str:
    """Grade (or keep, if unchanged) and record one student with this grader, in a process of
    its own (nbgrader's may be a Jupyter server: it must not fork our warm server). Returns
    its output; raises AutograderPluginError with the end of it if it failed."""
    from autograder.course import Course

    course = Course.load(root)
    # The notebook's budget, with room for starting up, once more if a step is redone.
    timeout = timeout or 3 * course.timeout + 120
    command = [sys.executable, "-m", "autograder.nbgrader_plugins", "--course", str(root),
               "--", assignment, student]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace",
                              timeout=timeout, cwd=root, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AutograderPluginError(f"grading {student} took more than {timeout:g} s: "
                                    "stopped") from None
    # Its end says what went wrong; cleaned, as it may quote a student's text.
    output = clean_text((done.stdout + done.stderr)[-OUTPUT_TAIL:], OUTPUT_TAIL)
    if done.returncode != 0:
        raise AutograderPluginError(f"autograder could not grade {student} for {assignment} "
                                    f"(exit {done.returncode}):\n{output}")
    return output


class GradeWithAutograder(Preprocessor):
    """nbgrader's autograde step, done by this grader (see the module's docstring)."""

    enabled = Bool(True)  # nbconvert's default is off; nbgrader registers its steps as they are

    def preprocess(self, nb: Any, resources: dict) -> tuple[Any, dict]:
        assignment, student, notebook = _ids(resources)
        root = _course_root(self)
        output = grade_in_subprocess(root, assignment, student)
        self.log.info("autograder graded %s:\n%s", student, output)
        result = stored_result(root, assignment, student)
        return self._kept(root, assignment, student, notebook, nb, result), resources

    def _kept(self, root: Path, assignment: str, student: str, notebook: str, nb: Any,
              result: SubmissionResult) -> Any:
        """The notebook `autograder grade` keeps; if the submitted one cannot be kept or its
        nbgrader metadata would not pass CheckCellMetadata, nbgrader's own sanitized copy
        (`nb`: its cells restored from the gradebook), annotated the same way."""
        from nbgrader.nbgraderformat import MetadataValidator

        from autograder.assemble import read_notebook
        from autograder.assignment import grade_cells_of
        from autograder.kept_notebook import KeptNotebookError, annotate, build_kept_notebook

        submitted = root / "submitted" / student / assignment / f"{notebook}.ipynb"
        release = read_notebook(root / "release" / assignment / f"{notebook}.ipynb")
        grade_cells = grade_cells_of(release)
        try:
            kept = build_kept_notebook(submitted, release, grade_cells, result)
            MetadataValidator().validate_nb(kept)
            return kept
        except KeptNotebookError as error:
            self.log.warning("%s", error)
        except Exception as error:  # nbgrader's ValidationError and what its checks raise
            self.log.warning("%s's notebook metadata does not validate (%s): nbgrader's "
                             "copy is kept", student, clean_text(error, 300))
        return annotate(nb, result, grade_cells)


class FeedbackExporter(Exporter):
    """nbgrader's generate_feedback step writes this grader's feedback (HTML, and the
    Markdown beside it) from the stored result and the final score gradebook.db now holds,
    whatever the autograded notebook holds: the same pages as `autograder feedback-zip`."""

    output_mimetype = "text/html"

    @default("file_extension")
    def _html(self) -> str:  # nbgrader names the output after it
        return ".html"

    def from_notebook_node(self, nb: Any, resources: Any = None,
                           **kw: Any) -> tuple[str, dict]:
        from autograder.course import Course
        from autograder.feedback import render_feedback
        from autograder.results import cleaned
        from autograder.scores import final_score

        nb, resources = super().from_notebook_node(nb, resources, **kw)
        assignment, student, notebook = _ids(resources)
        root = _course_root(self)
        result = cleaned(stored_result(root, assignment, student))
        # A TA's manual grades may postdate the result: the score is gradebook.db's now.
        pages = render_feedback(result, final_score(Course.load(root), result))
        resources.setdefault("outputs", {})[f"{notebook}.md"] = pages[".md"].encode("utf-8")
        return pages[".html"], resources


def main(argv: list[str] | None = None) -> int:
    """`python -m autograder.nbgrader_plugins --course ROOT ASSIGNMENT STUDENT`: grade one
    student from submitted/ (unless unchanged since their stored result) and record them
    again, so that what nbgrader removed (autograded/) is back and gradebook.db holds our
    scores. Exit 2 with one line on an input error."""
    import argparse

    from autograder.cli import _fail, _skip_grammar_nobody_uses
    from autograder.errors import UserError

    parser = argparse.ArgumentParser(prog="autograder.nbgrader_plugins")
    parser.add_argument("--course", type=Path, default=Path("."))
    parser.add_argument("assignment")
    parser.add_argument("student")
    args = parser.parse_args(argv)
    _skip_grammar_nobody_uses()
    try:
        grade_and_record(args.course, args.assignment, args.student)
    except UserError as error:
        return _fail(str(error))
    return 0


def grade_and_record(root: Path, assignment_name: str, student: str) -> SubmissionResult:
    from autograder import commands
    from autograder.assignment import Assignment
    from autograder.course import Course
    from autograder.gradebook_db import NbgraderGradebook
    from autograder.lock import course_lock
    from autograder.store import result_store
    from autograder.summary import render

    course = Course.load(root)
    run = commands.grade_run(course, assignment_name, student_id=student, out=sys.stdout)
    commands.print_safely(render(run), sys.stdout)
    [result] = [r for r in run.results if r.student_id == student]
    if run.kept:
        # Kept as unchanged, so this run did not record it, and nbgrader has just removed its
        # notebook under autograded/ and written its own scores: record it again (that is
        # idempotent), under the course's lock as any recording.
        assignment = Assignment.load(course, assignment_name)
        with course_lock(course.root), NbgraderGradebook(course, assignment) as gradebook:
            commands.record_result(course, assignment, gradebook, result_store(course),
                                   result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
