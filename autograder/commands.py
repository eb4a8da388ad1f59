"""The instructor's commands, as functions: what `autograder <command>` runs.

Each returns data (and prints a short report), so an HTTP service can call the same functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from autograder.assignment import Assignment, AssignmentError
from autograder.course import Course
from autograder.engine import fingerprint
from autograder.errors import SubmissionError
from autograder.export import FORMATS, ExportError, write_csv
from autograder.feedback import write_feedback
from autograder.gradebook import by_cell, scores_frame
from autograder.gradebook_db import GradebookError, NbgraderGradebook
from autograder.grader import Grader
from autograder.interrupts import Interrupted, StoringGuard
from autograder.kept_notebook import keep_graded_notebook
from autograder.lock import course_lock
from autograder.results import (
    CRASHED,
    GRADED,
    INVALID,
    TIMEOUT,
    SubmissionResult,
    clean_text,
    cleaned,
    one_line,
)
from autograder.scores import StudentScore, final_score, final_scores
from autograder.store import ResultStore, load_results, result_store
from autograder.submissions import collect, submitted_in_course
from autograder.summary import GradeRun
from autograder.summary import render as render_summary
from autograder.tempfiles import sweep_stale

if TYPE_CHECKING:
    import pandas as pd

    from autograder.lms.gradebook_files import Filled

log = logging.getLogger(__name__)


def grade(course: Course, assignment_name: str, source: Path | None = None,
          student_id: str | None = None, workers: int | None = None,
          timeout: float | None = None, out: TextIO | None = None,
          regrade: bool = False, scheduler: str | None = None,
          unsafe: bool = False) -> list[SubmissionResult]:
    """`grade_run`, ending with its summary on `out`; returns every result it covered."""
    run = grade_run(course, assignment_name, source, student_id, workers, timeout, out,
                    regrade, scheduler, unsafe)
    if out is not None:
        print_safely(render_summary(run), out)
    return run.results


def grade_run(course: Course, assignment_name: str, source: Path | None = None,
              student_id: str | None = None, workers: int | None = None,
              timeout: float | None = None, out: TextIO | None = None,
              regrade: bool = False, scheduler: str | None = None,
              unsafe: bool = False) -> GradeRun:
    """Collect, grade and record. Each result is stored (feedback, gradebook.db, then
    the result store, which marks it done) as soon as it is known; a submission whose notebook and
    grader are unchanged since its stored result is not graded again, so a batch that was
    killed or interrupted midway resumes where it stopped. Without `source`, grades what is
    under submitted/ (only `student_id`, if given, its files untouched: formgrader's
    Autograde button).
    One run per course at a time (CourseBusy). Ctrl-C ends the run at once with Interrupted.
    Refuses to start (UnsafeSandboxError) where a sandbox layer that protects the grader
    itself is off, unless `unsafe`."""
    _check_source(source, student_id)
    scheduler = scheduler or course.scheduler
    with course_lock(course.root):
        if unsafe and out is not None:
            print("UNSAFE: --unsafe: grading even if a sandbox layer that protects the grader "
                  "itself (read-only installation, memory budget) is off", file=out, flush=True)
        # One grader for the run, warming up (2 s) while the submissions and the gradebook
        # load; every result goes through it, on the local pool or on Dask alike.
        with Grader(course, workers, scheduler, timeout, unsafe) as grader:
            grader.launch()
            _sweep_leftovers(out)  # while the pool warms up
            return _grade(course, assignment_name, source, student_id, out, regrade, grader,
                          unsafe)


def known_assignments(course: Course) -> list[str]:
    """The assignments of the course: folders in source/ or release/."""
    names: set[str] = set()
    for folder in (course.root / "source", course.root / "release"):
        if folder.is_dir():
            names |= {entry.name for entry in os.scandir(folder)
                      if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")}
    return sorted(names)


def check_assignment_name(course: Course, name: str) -> None:
    """AssignmentError naming the known assignments, for a name that is none of them (a typo
    is told as such, not as an assignment to release)."""
    known = known_assignments(course)
    if name not in known:
        raise AssignmentError(f"unknown assignment '{clean_text(name, 100)}' (known: "
                              f"{', '.join(known) or 'none: no folder in source/ or release/'})")


def _check_source(source: Path | None, student_id: str | None) -> None:
    """What was meant, when it cannot be what was typed: a student id given as a source, or
    one notebook with nobody to credit it to (a name made up from the file would be nobody's
    LMS id)."""
    if source is None:
        return
    shown = clean_text(str(source), 200)
    if not source.exists() and not source.is_symlink():
        if len(source.parts) == 1 and not source.suffix:
            raise SubmissionError(f"'{shown}' is not a file or folder; to grade one student "
                                  f"from submitted/, use --student {shown}")
        raise SubmissionError(f"'{shown}' is not a file or folder")
    if source.suffix == ".ipynb" and not source.is_dir() and student_id is None:
        raise SubmissionError(f"{shown} is one notebook: say whose it is with --student ID "
                              "(the student's id in the LMS)")


def _sweep_leftovers(out: TextIO | None) -> None:
    """What killed runs left in the host's temporary folder (never a live run's) goes."""
    problems = sweep_stale()
    if problems and out is not None:
        print("WARNING: could not remove what an earlier run left behind:\n  "
              + "\n  ".join(problems), file=out)


# Verdicts kept on a plain rerun when notebook and grader are unchanged. A timeout or a crash
# is a verdict too (a notebook that hung once hangs again, at the full timeout each time);
# `--regrade` grades them again, as after a change of --timeout. A grader error is not the
# student's: graded again.
FINAL = (GRADED, INVALID, TIMEOUT, CRASHED)


def _grade(course: Course, assignment_name: str, source: Path | None, student_id: str | None,
           out: TextIO | None, regrade: bool, grader: Grader, unsafe: bool = False) -> GradeRun:
    assignment = grader.assignment(assignment_name)
    if source is None:
        submissions, skipped = submitted_in_course(course, assignment_name,
                                                   assignment.notebook_name)
        if student_id is not None:  # one student, as stored: their timestamp is theirs
            submissions = [s for s in submissions if s.student_id == student_id]
            skipped = [item for item in skipped
                       if Path(item.item).name == student_id or student_id in Path(item.item).parts]
            if not submissions:
                why = f": {skipped[0].reason}" if skipped else ""
                raise SubmissionError(f"no submission of '{clean_text(student_id, 100)}' for "
                                      f"{assignment_name} under {course.root / 'submitted'}"
                                      + why)
    else:
        submissions, skipped = collect(course, assignment_name, assignment.notebook_name,
                                       source, student_id, out=out)
    store = result_store(course)
    readable, unreadable = store.load_readable(assignment_name)
    if unreadable and out is not None:  # those students are graded again, which replaces them
        print_safely("WARNING: graded again, their stored result could not be read: "
                     + "; ".join(unreadable), out)
    stored = {result.student_id: result for result in readable}
    prints = {s.student_id: fingerprint(assignment, s) for s in submissions
              if s.student_id in stored}
    unchanged = [s for s in submissions if s.student_id in stored
                 and stored[s.student_id].status in FINAL
                 and stored[s.student_id].fingerprint == prints[s.student_id]]
    kept = [] if regrade else [stored[s.student_id] for s in unchanged]
    changed = {sid for sid, print_ in prints.items() if stored[sid].fingerprint != print_}
    # A kept result is judged by the time collected now: a download states it again each
    # time (a corrected c.LmsDownload.timezone, a later Canvas download with no time at all).
    retimed: set[str] = set()
    for submission in unchanged:
        result = stored[submission.student_id]
        if not regrade and result.timestamp != submission.timestamp:
            result.timestamp = submission.timestamp
            retimed.add(result.student_id)
    kept_ids = {result.student_id for result in kept}
    pending = [s for s in submissions if s.student_id not in kept_ids]
    if kept and out is not None:
        print(f"{len(kept)} already graded and unchanged: kept (--regrade grades them again)",
              file=out)
    unrecorded: list[str] = []
    recorded: list[SubmissionResult] = []
    guard = StoringGuard()

    with NbgraderGradebook(course, assignment) as gradebook, \
            Progress(len(pending), out) as progress, guard.installed():
        def record(result: SubmissionResult) -> None:
            with guard.storing():  # Ctrl-C waits for this student to be stored whole
                _record(result)

        def _record(result: SubmissionResult) -> None:
            try:
                record_result(course, assignment, gradebook, store, result)
                recorded.append(result)
                if result.student_id in changed:
                    _flag_manual_grades(gradebook, result.student_id, out)
            except Exception as error:  # not done: graded again on the next run
                unrecorded.append(f"{result.student_id} ({type(error).__name__}: {error})")
            progress.done(result)

        _record_late_again(course, assignment_name, gradebook, store, kept, unrecorded,
                           retimed)

        if pending:
            import pandas  # noqa: F401  (for the table after the batch: 0.4 s, paid while the
            # warm server is still starting and this process would only wait)
        try:
            results = grader.grade_many(assignment, pending, on_result=record)
        except KeyboardInterrupt:
            raise Interrupted(len(kept) + len(recorded), len(submissions), regrade) from None
    if unrecorded:
        raise GradebookError("graded, but not written to gradebook.db (their feedback is "
                             "written; run again to record them): " + "; ".join(unrecorded))
    for item in skipped:  # the summary shows them to the instructor
        log.info("skipped: %s", item)
    return GradeRun(assignment=assignment_name,
                    results=sorted(kept + results, key=lambda result: result.student_id),
                    graded_now=len(results), kept=len(kept), skipped=skipped,
                    sandbox_off=sorted({layer for result in results
                                        for layer in result.sandbox_off}),
                    unsafe=unsafe)


def _flag_manual_grades(gradebook: NbgraderGradebook, student: str, out: TextIO | None) -> None:
    flagged = gradebook.flag_manual_grades(student)
    if flagged and out is not None:
        print_safely(f"{one_line(student, 100)}: a new notebook, and {flagged} manual grade(s) "
                     "a TA gave the earlier one still count: flagged for review in formgrader",
                     out)


def _record_late_again(course: Course, assignment_name: str, gradebook: NbgraderGradebook,
                       store: ResultStore, kept: list[SubmissionResult],
                       unrecorded: list[str], retimed: set[str]) -> None:
    """Kept results are not graded again, but their lateness is judged again on every run (a
    due date, an extension, the penalty settings or a TA's manual score may have changed since):
    a few SQL statements each, in gradebook.db; feedback and the stored result are rewritten
    only where a late field changed."""
    for result in kept:
        try:
            changed = gradebook.record_late(result) or result.student_id in retimed
        except Exception as error:
            unrecorded.append(f"{result.student_id} ({type(error).__name__}: {error})")
            continue
        if changed:
            write_feedback(result, course.feedback_dir(result.student_id, assignment_name),
                           _final_score_now(course, result))
            store.save(result)


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
    final = None
    try:
        gradebook.record(result)  # first: it fills the late fields the feedback shows
        final = _final_score_now(course, result)  # a TA's manual grades in, if any
    finally:  # the student's feedback is written even when gradebook.db refuses the result
        write_feedback(result, course.feedback_dir(result.student_id, assignment.name), final)
    store.save(result)


def _final_score_now(course: Course, result: SubmissionResult) -> StudentScore | None:
    """The student's final score as gradebook.db now holds it, for their feedback; None (the
    feedback shows the result's own score) if gradebook.db cannot be read: that never costs
    the student their feedback, and `autograder feedback-zip` renders it again."""
    try:
        return final_score(course, result)
    except (GradebookError, ValueError) as error:
        log.warning("%s's feedback shows the autograded score: %s",
                    clean_text(result.student_id, 100), clean_text(error, 300))
        return None


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
        student = one_line(result.student_id, 100)
        if self.bar is not None:
            self.bar.set_postfix_str(printable(f"{student}: {result.score:g}", self.out),
                                     refresh=False)
            self.bar.update()
        elif self.out is not None:
            note = f"  {one_line(result.reason, 300)}" if result.reason else ""
            print_safely(f"[{self.count}/{self.total}] {student}: {result.score:g}/"
                         f"{result.max_score:g} {result.status} ({result.seconds:.2f} s){note}",
                         self.out)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


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




def doctor(out: TextIO) -> bool:
    """Start a warm slot and report each sandbox layer. True when every layer is on."""
    from autograder.execute.warm import WarmSlot

    _sweep_leftovers(out)
    slot = WarmSlot(unsafe=True)  # it only reports: no student code runs
    try:
        slot.start()
        for layer, state in slot.sandbox.items():
            print(f"{layer:14} {state}", file=out)
    finally:
        slot.close()
    if slot.layers_off:
        print("Some layers are off: student code is less contained than it should be.", file=out)
    return not slot.layers_off


def gradebook_table(course: Course, assignment_name: str,
                    missing: str | None = None) -> pd.DataFrame:
    """One row per student of the roster and per stored result: the test columns of our
    results next to the final scores of gradebook.db (autograder.scores)."""
    return _stored_table(course, assignment_name, missing)[1]


def _stored_table(course: Course, assignment_name: str,
                  missing: str | None = None) -> tuple[Assignment, pd.DataFrame]:
    assignment = Assignment.load(course, assignment_name)
    results = load_results(course.root, assignment_name)
    scores = final_scores(course, assignment_name, results, missing)
    return assignment, scores_frame(scores, results, assignment)


def export(course: Course, assignment_name: str, fmt: str = "csv",
           path: Path | None = None, template: Path | None = None,
           missing: str | None = None, feedback_comments: bool | None = None,
           out: TextIO | None = None) -> Path:
    """Write the final scores as the plain CSV, Canvas's gradebook import or Moodle's grading
    worksheet (`template`: the file downloaded from the LMS, filled). What the instructor
    should know (students not in the template, ...) is printed to `out`."""
    return export_report(course, assignment_name, fmt, path, template, missing,
                         feedback_comments, out).path


def export_report(course: Course, assignment_name: str, fmt: str = "csv",
                  path: Path | None = None, template: Path | None = None,
                  missing: str | None = None, feedback_comments: bool | None = None,
                  out: TextIO | None = None) -> Filled:
    """`export`, telling what it filled: a template that matched none of our students is
    written all the same (as the LMS gave it), and `Filled.matched` is 0."""
    from autograder.lms.gradebook_files import Filled, fill_lms_file

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if template is not None and fmt == "csv":
        raise ExportError("--template is for --format canvas or moodle")
    if fmt == "moodle" and template is None:
        raise ExportError("a Moodle export fills the grading worksheet downloaded from Moodle "
                          "(View all submissions > Grading action > Download grading "
                          "worksheet): pass it with --template")
    suffix = "" if fmt == "csv" else f"-{fmt}"
    path = path or course.exports_dir() / f"{assignment_name}{suffix}.csv"
    if fmt == "csv":
        return Filled(write_csv(gradebook_table(course, assignment_name, missing), path))
    Assignment.load(course, assignment_name)  # a clear error for an unknown assignment
    scores = final_scores(course, assignment_name, missing=missing)
    filled = fill_lms_file(fmt, scores, assignment_name, path, course.config, template,
                           feedback_comments)
    if out is not None:
        for warning in filled.warnings:
            print_safely(f"WARNING: {warning}", out)
        matched = ("" if filled.matched is None else
                   f" ({filled.matched} of our {filled.students} student(s) matched in the "
                   "template)")
        print_safely(f"{filled.filled} score(s) filled{matched}", out)
        if filled.matched == 0:
            print_safely(f"WARNING: the template matched none of our {filled.students} "
                         "student(s): it was written back as the LMS gave it, with no score; "
                         "is it this course's file, downloaded from this assignment?", out)
    return filled


def show_table(course: Course, assignment_name: str, students: list[str] | None = None) -> str:
    """The gradebook as printed on a terminal: points per grade cell, totals, status."""
    assignment, table = _stored_table(course, assignment_name)
    if students is not None:
        table = table.loc[students]
    shown = by_cell(table, assignment)
    shown["reason"] = shown["reason"].fillna("").map(lambda text: one_line(text, 2_000)[:50])
    return shown.to_string()
