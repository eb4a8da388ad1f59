"""The instructor's commands, as functions: what `autograder <command>` runs.

Each returns data (and prints a short report), so an HTTP service can call the same functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from autograder.assignment import Assignment
from autograder.course import Course
from autograder.execute.runner import Budgets
from autograder.execute.warm import WarmPool
from autograder.export import write_export
from autograder.feedback import write_feedback
from autograder.gradebook import by_cell, gradebook_frame
from autograder.gradebook_db import GradebookError, NbgraderGradebook
from autograder.kept_notebook import keep_graded_notebook
from autograder.pipeline import default_workers, fingerprint, grade_batch
from autograder.results import (
    GRADED,
    INVALID,
    SubmissionResult,
    clean_text,
    cleaned,
    load_results,
)
from autograder.store import ResultStore, result_store
from autograder.submissions import Skipped, SubmissionError, collect, submitted_in_course
from autograder.tempfiles import sweep_stale

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def grade(course: Course, assignment_name: str, source: Path | None = None,
          student_id: str | None = None, workers: int | None = None,
          timeout: float | None = None, out: TextIO | None = None,
          regrade: bool = False, scheduler: str | None = None,
          unsafe: bool = False) -> list[SubmissionResult]:
    """Collect, grade and record. Each result is stored (feedback, gradebook.db, then the
    result store, which marks it done) as soon as it is known; a submission whose notebook and
    grader are unchanged since its stored result is not graded again, so a batch that was
    killed midway resumes where it stopped. With `student_id` and no `source`, only that
    student's submission under submitted/ is graded (formgrader's Autograde button). Refuses
    to start (UnsafeSandboxError) where a sandbox layer that protects the grader itself is
    off, unless `unsafe`."""
    scheduler = scheduler or course.scheduler
    if unsafe and out is not None:
        print("UNSAFE: --unsafe: grading even if a sandbox layer that protects the grader "
              "itself (read-only installation, memory budget) is off", file=out, flush=True)
    with _warming_pool(workers, scheduler, unsafe) as pool:
        _sweep_leftovers(out)  # while the pool warms up
        return _grade(course, assignment_name, source, student_id, timeout, out, regrade,
                      scheduler, pool, workers, unsafe)


def _sweep_leftovers(out: TextIO | None) -> None:
    """What killed runs left in the host's temporary folder (never a live run's) goes."""
    problems = sweep_stale()
    if problems and out is not None:
        print("WARNING: could not remove what an earlier run left behind:\n  "
              + "\n  ".join(problems), file=out)


@contextmanager
def _warming_pool(workers: int | None, scheduler: str | None,
                  unsafe: bool = False) -> Iterator[WarmPool | None]:
    """The local warm workers, warming up (2 s) while the assignment and gradebook load."""
    if scheduler:
        yield None
        return
    with WarmPool(workers or default_workers(), unsafe=unsafe) as pool:
        pool.launch()
        yield pool


def _grade(course: Course, assignment_name: str, source: Path | None, student_id: str | None,
           timeout: float | None, out: TextIO | None, regrade: bool, scheduler: str | None,
           pool: WarmPool | None, workers: int | None,
           unsafe: bool = False) -> list[SubmissionResult]:
    assignment = Assignment.load(course, assignment_name)
    if source is None:
        submissions, skipped = submitted_in_course(course, assignment_name,
                                                   assignment.notebook_name)
        if student_id is not None:
            submissions = [s for s in submissions if s.student_id == student_id]
            if not submissions:
                raise SubmissionError(f"{course.submitted_dir(student_id, assignment_name)} "
                                      "holds no submission that can be graded")
    else:
        submissions, skipped = collect(course, assignment_name, assignment.notebook_name,
                                       source, student_id)
    store = result_store(course)
    readable, unreadable = store.load_readable(assignment_name)
    if unreadable and out is not None:  # those students are graded again, which replaces them
        print_safely("WARNING: graded again, their stored result could not be read: "
                     + "; ".join(unreadable), out)
    stored = {result.student_id: result for result in readable}
    # Kept: same notebook, same grader, and a final verdict. A timeout or a crash may be
    # the machine's doing (or a shorter --timeout): those are graded again.
    unchanged = [s for s in submissions if s.student_id in stored
                 and stored[s.student_id].status in (GRADED, INVALID)
                 and stored[s.student_id].fingerprint == fingerprint(assignment, s)]
    kept = [] if regrade else [stored[s.student_id] for s in unchanged]
    kept_ids = {result.student_id for result in kept}
    pending = [s for s in submissions if s.student_id not in kept_ids]
    if kept and out is not None:
        print(f"{len(kept)} already graded and unchanged: kept (--regrade grades them again)",
              file=out)
    unrecorded: list[str] = []

    with NbgraderGradebook(course, assignment) as gradebook, \
            Progress(len(pending), out) as progress:
        def record(result: SubmissionResult) -> None:
            try:
                record_result(course, assignment, gradebook, store, result)
            except Exception as error:  # not done: graded again on the next run
                unrecorded.append(f"{result.student_id} ({type(error).__name__}: {error})")
            progress.done(result)

        if pending:
            import pandas  # noqa: F401  (for the table after the batch: 0.4 s, paid while the
            # warm server is still starting and this process would only wait)
        budgets = Budgets(notebook=timeout or course.timeout,
                          locked_cell=course.locked_cell_timeout, probe=course.probe_timeout)
        results = grade_batch(assignment, pending, budgets, workers,
                              on_result=record, scheduler=scheduler, pool=pool,
                              unsafe=unsafe)
    weak = sorted({layer for result in results for layer in result.sandbox_off})
    if weak and out is not None:
        print("WARNING: student code ran with these sandbox layers off (see `autograder "
              "doctor`):\n  " + "\n  ".join(weak), file=out)
    _report_skipped(skipped, out)
    if unsafe and out is not None:
        print("UNSAFE: graded with --unsafe (layers off are listed above, if any)", file=out)
    if unrecorded:
        raise GradebookError("graded, but not written to gradebook.db (their feedback is "
                             "written; run again to record them): " + "; ".join(unrecorded))
    return sorted(kept + results, key=lambda result: result.student_id)


def record_result(course: Course, assignment: Assignment, gradebook: NbgraderGradebook,
                  store: ResultStore, result: SubmissionResult) -> None:
    """Everything one result leaves behind: the notebook kept for formgrader (with the tests'
    messages), the feedback, the rows in gradebook.db, then the stored result, last, as its
    presence means "done". Writing the same result again leaves the same state: formgrader's
    Autograde button (autograder/nbgrader_plugins.py) records through here too. Raises if
    gradebook.db refuses it (nothing is stored then: it is graded again next time)."""
    cleaned(result)  # again, whoever graded it: nothing raw reaches files or people
    not_kept = keep_graded_notebook(course, assignment, result)
    if not_kept and not_kept not in result.reason:
        result.reason = clean_text("; ".join(filter(None, [result.reason, not_kept])))
    write_feedback(result, course.feedback_dir(result.student_id, assignment.name))
    gradebook.record(result)
    store.save(result)


class Progress:
    """A bar with an ETA on a terminal; elsewhere (CI, pipes) one plain line per submission.
    It shows only cleaned text, encoded for the stream (an ASCII terminal gets "?" for what
    it cannot show), and a line that still cannot be shown never stops the batch."""

    def __init__(self, total: int, out: TextIO | None) -> None:
        self.total, self.out, self.count = total, out, 0
        self.bar = None
        if out is not None and out.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=out, unit="submission", dynamic_ncols=True)

    def done(self, result: SubmissionResult) -> None:
        self.count += 1
        try:
            self._show(result)
        except Exception:  # the result is stored already; the batch goes on
            log.exception("could not show the progress line of a submission")

    def _show(self, result: SubmissionResult) -> None:
        student = _one_line(result.student_id, 100)
        if self.bar is not None:
            self.bar.set_postfix_str(printable(f"{student}: {result.score:g}", self.out),
                                     refresh=False)
            self.bar.update()
        elif self.out is not None:
            note = f"  {_one_line(result.reason, 300)}" if result.reason else ""
            print_safely(f"[{self.count}/{self.total}] {student}: {result.score:g}/"
                         f"{result.max_score:g} {result.status} ({result.seconds:.2f} s){note}",
                         self.out)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _one_line(text: str, cap: int) -> str:
    return clean_text(text, cap).replace("\n", " ").replace("\t", " ")


def printable(text: str, stream: TextIO | None) -> str:
    """`text` as `stream` can encode it: what its encoding lacks becomes "?"."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, errors="replace").decode(encoding, errors="replace")
    except LookupError:
        return text.encode("ascii", errors="replace").decode("ascii")


def print_safely(text: str, out: TextIO) -> None:
    """Print one line; never raise (a closed pipe or a full disk is logged, not fatal)."""
    try:
        print(printable(text, out), file=out, flush=True)
    except Exception:
        log.exception("could not print a line")


def _report_skipped(skipped: list[Skipped], out: TextIO | None) -> None:
    """What collection left out, at the end of the run, where the instructor sees it."""
    for item in skipped:
        log.warning("skipped: %s", item)
    if out is None or not skipped:
        return
    print_safely(f"{len(skipped)} not graded (skipped while collecting):", out)
    for item in skipped:
        print_safely(f"skipped: {_one_line(item.item, 300)}: {_one_line(item.reason, 500)}",
                     out)


def doctor(out: TextIO) -> bool:
    """Start a warm worker and report each sandbox layer. True when every layer is on."""
    from autograder.execute.warm import WarmWorker

    _sweep_leftovers(out)
    worker = WarmWorker(unsafe=True)  # it only reports: no student code runs
    try:
        worker.start()
        for layer, state in worker.sandbox.items():
            print(f"{layer:14} {state}", file=out)
    finally:
        worker.close()
    if worker.layers_off:
        print("Some layers are off: student code is less contained than it should be.", file=out)
    return not worker.layers_off


def gradebook_table(course: Course, assignment_name: str) -> pd.DataFrame:
    """The pandas table of every stored result of the assignment."""
    return _stored_table(course, assignment_name)[1]


def _stored_table(course: Course, assignment_name: str) -> tuple[Assignment, pd.DataFrame]:
    assignment = Assignment.load(course, assignment_name)
    return assignment, gradebook_frame(load_results(course.root, assignment_name), assignment)


def export(course: Course, assignment_name: str, fmt: str = "csv",
           path: Path | None = None) -> Path:
    table = gradebook_table(course, assignment_name)
    suffix = "" if fmt == "csv" else f"-{fmt}"
    path = path or course.exports_dir() / f"{assignment_name}{suffix}.csv"
    return write_export(table, assignment_name, fmt, path)


def show_table(course: Course, assignment_name: str, students: list[str] | None = None) -> str:
    """The gradebook as printed on a terminal: points per grade cell, totals, status."""
    assignment, table = _stored_table(course, assignment_name)
    if students is not None:
        table = table.loc[students]
    shown = by_cell(table, assignment)
    shown["reason"] = shown["reason"].fillna("").map(lambda text: _one_line(text, 2_000)[:50])
    return shown.to_string()
