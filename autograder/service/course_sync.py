"""The course's files brought up to date from the service's database, on the machine that holds
the course.

The service's database is the record. formgrader and `nbgrader export` read the course's files
(`submitted/`, `autograded/`, `feedback/`, `results/`) and `gradebook.db`, so for each student
the submission that counts (the assignment's policy: the last graded one, or the best) is
written there as the command line's `grade` would have written it: the notebook's exact bytes
and its upload time (timestamp.txt, nbgrader's format) under submitted/, then
`commands.record_result` (the kept notebook, gradebook.db's rows, the feedback, the stored
result), under the course's lock.

The embedded worker calls `sync_result` after every result: it must be cheap and must never
take the worker down. A marker per student (`.service-sync/<assignment>/<student>`: the result
id and the notebook's hash written last) makes a result that changes nothing cost one file
read; a failure (the course busy with a `grade` run, a full disk) is logged and the student
is tried again on the next call, or by `autograder service sync` (`sync_all`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, select

from autograder.course import Course, usable_student_id
from autograder.errors import UserError
from autograder.files import write_atomic
from autograder.lock import CourseBusy, course_lock
from autograder.results import ERROR, SubmissionResult, clean_text
from autograder.service.models import Result, Submission

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from autograder.assignment import Assignment
    from autograder.scores import StudentScore
    from autograder.service.database import Database

log = logging.getLogger(__name__)

ScoreOf = Callable[[Result, datetime], float]  # a result and its upload time -> its score

MARKER_DIR = ".service-sync"
# nbgrader's timestamp.txt format (ExchangeSubmit's timestamp_format with a UTC zone).
NBGRADER_TIME = "%Y-%m-%d %H:%M:%S.%f UTC"
LOCK_WAIT_SECONDS = 2.0  # the embedded worker's wait for a busy course, before "later"


@dataclass(frozen=True)
class Counted:
    """The submission that counts for one student, and its result (read out of a session)."""

    result_id: int
    submission_id: str
    student_id: str
    assignment: str
    content: bytes
    sha256: str
    submitted_at: datetime
    result_json: str
    score: float


@dataclass
class SyncReport:
    written: list[str] = field(default_factory=list)  # students whose files were written
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)  # "student: why"


def nbgrader_time(moment: datetime) -> str:
    """An upload time as nbgrader writes timestamp.txt ("2026-11-20 12:00:00.000000 UTC")."""
    return moment.astimezone(UTC).strftime(NBGRADER_TIME)


def counts_of(course: Course, assignment: str) -> str:
    """Which submission counts for `assignment`: "last" or "best" (the course's policy)."""
    from autograder.service.policy import policy_for

    return policy_for(course, assignment).counts


def counted_by_policy(session: Session, course: Course, assignment: str,
                      student_id: str | None = None,
                      students: Collection[str] | None = None) -> dict[str, Result]:
    """`counted_results` by the course's policy for `assignment` (its `counts`, and under
    "best" each score after its late penalty)."""
    counts = counts_of(course, assignment)
    return counted_results(session, counts, assignment, student_id, students,
                           after_late_penalty(course, assignment) if counts == "best" else None)


def after_late_penalty(course: Course, assignment: str) -> ScoreOf | None:
    """A submission's score less the late penalty its upload time earns (the course's
    nbgrader plugin, the student's extension in), to rank "best" by: a late 10 that the
    penalty zeroes is not better than an on-time 8 (as PrairieLearn's credit). None when
    the assignment has no due date (no penalty)."""
    from autograder.late import LateRules, due_and_extensions, extended_due

    # strict: a gradebook.db that cannot be read now (locked) is CourseBusy, not "no due
    # date": ranked without penalties, another submission could count for a moment.
    due, extensions = due_and_extensions(course, assignment, strict=True)
    if due is None:
        return None
    rules = LateRules(course, assignment, due, extensions)

    def score_of(result: Result, submitted_at: datetime) -> float:
        own = extended_due(due, extensions.get(result.student_id)).replace(tzinfo=UTC)
        seconds_late = (submitted_at - own).total_seconds()
        if seconds_late <= 0:
            return result.score
        try:
            penalty = rules.penalty(result.student_id, result.score, seconds_late)
        except Exception as error:  # the instructor's plugin: its fault costs the ranking
            _warn_once(f"'best' ranks {clean_text(assignment, 100)} by scores without late "
                       f"penalties where the course's late-penalty plugin fails: "
                       f"{clean_text(error, 300) or type(error).__name__}")
            return result.score
        return result.score - (penalty or 0.0)

    return score_of


def ranking_problems(course: Course) -> list[str]:
    """For each assignment ranked "best" with a due date, whether this process can make the
    course's late-penalty plugin: serve's HTTP process (another user) ranks for the
    instructor's lists while the worker ranks for gradebook.db, and a plugin only one of them
    can load would have them count different submissions. What is wrong, one line each."""
    from autograder.commands import known_assignments
    from autograder.late import LateError, LateRules, due_and_extensions

    problems = []
    for assignment in known_assignments(course):
        try:
            if counts_of(course, assignment) != "best":
                continue
            due, extensions = due_and_extensions(course, assignment)
            if due is not None:
                LateRules(course, assignment, due, extensions).plugin()
        except (LateError, UserError) as error:
            problems.append(f"{assignment}: {clean_text(error, 500)}")
    return problems


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Logged once per process: a broken plugin would otherwise log on every ranking."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def counted_results(session: Session, counts: str, assignment: str,
                    student_id: str | None = None, students: Collection[str] | None = None,
                    score_of: ScoreOf | None = None) -> dict[str, Result]:
    """{student: the published Result that counts}: per submission its newest published result
    (a confirmed regrade replaces the first grading; drafts never count), then per student the
    last submission graded ("last") or the highest score, the later one on a tie ("best";
    `score_of` the score to rank by, if not the result's own). A result of the grader's own
    fault (status error) never counts. Every student's, or only `student_id`'s, or only those
    in `students`."""
    if counts not in ("last", "best"):
        raise ValueError(f"counts must be 'last' or 'best', not {counts!r}")
    query = (select(Result, Submission.submitted_at)
             .join(Submission, Submission.id == Result.submission_id)
             .where(Result.assignment == assignment, Result.published.is_(True),
                    Result.status != str(ERROR))
             .order_by(Result.id))
    if student_id is not None:
        query = query.where(Result.student_id == student_id)
    if students is not None:
        query = query.where(Result.student_id.in_(sorted(students)))
    newest: dict[str, tuple[Result, datetime]] = {}  # per submission: its newest result
    for result, submitted_at in session.execute(query):
        newest[result.submission_id] = (result, submitted_at)
    chosen: dict[str, tuple[tuple, Result]] = {}
    for result, submitted_at in newest.values():
        score = score_of(result, submitted_at) if score_of is not None else result.score
        rank = ((submitted_at, result.id) if counts == "last"
                else (score, submitted_at, result.id))
        if result.student_id not in chosen or rank > chosen[result.student_id][0]:
            chosen[result.student_id] = (rank, result)
    return {student: result for student, (_, result) in chosen.items()}


def _read_counted(session: Session, results: list[Result]) -> list[Counted]:
    """The counted results with their submissions' bytes, in one query."""
    ids = [result.submission_id for result in results]
    submissions = {row.id: row for row in session.scalars(
        select(Submission).where(Submission.id.in_(ids)))}
    counted = []
    for result in results:
        submission = submissions[result.submission_id]
        counted.append(Counted(result.id, submission.id, result.student_id, result.assignment,
                               submission.content, submission.sha256,
                               submission.submitted_at, result.result_json, result.score))
    return counted


def _hashes(session: Session, submission_ids: list[str]) -> dict[str, str]:
    """{submission id: its notebook's sha256}, in one query."""
    return dict(session.execute(select(Submission.id, Submission.sha256)
                                .where(Submission.id.in_(submission_ids))).all())


# --- The files --------------------------------------------------------------------------------

_process_lock = threading.Lock()  # one sync at a time in this process (flock is per open file)
_pending: dict[tuple[str, str], set[tuple[str, str]]] = {}  # (course, db) -> {(assignment, sid)}
_pending_lock = threading.Lock()


@contextmanager
def _holding_course(course: Course, wait: float) -> Iterator[None]:
    """The course's lock, waiting up to `wait` seconds for a `grade` run or formgrader's
    Autograde (each holds it briefly per student) to let go; CourseBusy after that."""
    deadline = time.monotonic() + wait
    with _process_lock, ExitStack() as stack:
        while True:
            try:
                stack.enter_context(course_lock(course.root))
                break
            except CourseBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        yield


def _marker(course: Course, assignment: str, student: str) -> Path:
    return course.root / MARKER_DIR / assignment / student


def _marked(counted: Counted) -> str:
    return f"{counted.result_id} {counted.sha256}\n"


def _read_marker(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def write_student(course: Course, counted: Counted, gradebook: object, assignment: object,
                  store: object, force: bool = False) -> bool:
    """Write one student's counted submission into the course (the caller holds the course's
    lock and gives the loaded assignment, its NbgraderGradebook and the result store). False
    when the files already hold it."""
    from autograder import commands
    from autograder.submissions import TIMESTAMP_FILE

    marker = _marker(course, counted.assignment, counted.student_id)
    before = _read_marker(marker)
    if before == _marked(counted) and not force:
        return False
    folder = course.submitted_dir(counted.student_id, counted.assignment)
    for path in (folder.parent, folder):  # nothing is written through a planted link
        if path.is_symlink():
            raise OSError(f"{path} is a symbolic link: nothing is written through it")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = nbgrader_time(counted.submitted_at)
    write_atomic(folder / f"{assignment.notebook_name}.ipynb", counted.content)
    write_atomic(folder / TIMESTAMP_FILE, stamp.encode("ascii"))
    result = SubmissionResult.from_json(counted.result_json)
    result.timestamp = stamp  # judged late (gradebook.db) on the upload time, as nbgrader
    commands.record_result(course, assignment, gradebook, store, result)
    if before is not None and before.split()[1:] != [counted.sha256]:
        # A new notebook: a TA's manual grades of the earlier one still count, as in
        # nbgrader, so they are flagged for review in formgrader (as `grade` does).
        gradebook.flag_manual_grades(counted.student_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, _marked(counted).encode("ascii"))
    return True


def _in_gradebook(course: Course, row: Result) -> bool:
    """Whether gradebook.db still holds this graded result's score for its student: a
    `grade` run on the course beside the service changes it without the service's marker
    knowing (one student's rows of gradebook.db read)."""
    from autograder.scores import final_score

    if row.status != "graded":  # no autograded score of its own to compare
        return True
    try:
        book = final_score(course, SubmissionResult.from_json(row.result_json)).autograded
    except Exception:  # unreadable: write it again
        return False
    return book is not None and abs(book - row.score) < 1e-6


def _sync_students(course: Course, db: Database, assignment_name: str,
                   students: list[str] | None, wait: float, force: bool = False,
                   load: Callable[[str], Assignment] | None = None) -> SyncReport:
    """Bring these students (None: every student with a counted result) up to date; `force`:
    write each one again, whatever the markers say. `load`: the assignment by name (a
    long-lived grader's, already loaded; else read from the course)."""
    from autograder.assignment import Assignment
    from autograder.gradebook_db import NbgraderGradebook
    from autograder.store import result_store

    report = SyncReport()
    with db.session(readonly=True) as session:
        found = counted_by_policy(session, course, assignment_name, students=students)
        hashes = _hashes(session, [row.submission_id for row in found.values()])
        chosen: list[Result] = []
        rewrite: set[str] = set()  # marked as written, but gradebook.db says otherwise
        for student, row in sorted(found.items()):
            if not usable_student_id(student):  # the roster's ids only reach the disk
                report.failed.append(f"{clean_text(student, 100)}: not a usable student id")
                continue
            marked = (_read_marker(_marker(course, assignment_name, student))
                      == f"{row.id} {hashes.get(row.submission_id)}\n")
            if marked and not force and _in_gradebook(course, row):
                report.unchanged += 1
                continue
            if marked:
                rewrite.add(student)
            chosen.append(row)
        todo = _read_counted(session, chosen) if chosen else []
    if not todo:
        return report
    with _holding_course(course, wait):
        assignment = (load or partial(Assignment.load, course))(assignment_name)
        store = result_store(course)
        with NbgraderGradebook(course, assignment) as gradebook:
            for counted in todo:
                try:
                    if write_student(course, counted, gradebook, assignment, store, force
                                     or counted.student_id in rewrite):
                        report.written.append(counted.student_id)
                    else:
                        report.unchanged += 1
                except Exception as error:  # one student's trouble is not the others'
                    log.warning("could not bring %s's files of %s up to date: %s",
                                counted.student_id, assignment_name, error)
                    report.failed.append(f"{counted.student_id}: {clean_text(error, 300)}")
    return report


def sync_result(course: Course, db: Database, result: Result) -> bool:
    """After `result` is committed: bring its student's files up to date with their counted
    submission. Never raises: a failure is logged and the student is tried again on the next
    call (and by `sync_all`). True when every pending student is up to date."""
    try:
        state = inspect(result)
        result_id = state.identity[0] if state.identity else result.id
        with db.session(readonly=True) as session:
            row = session.get(Result, result_id)
            if row is None:  # deleted meanwhile (a student's data deleted)
                return True
            mark_pending(course, db, [(row.assignment, row.student_id)])
    except Exception:
        log.exception("could not read the result to bring the course's files up to date")
        return False
    return retry_pending(course, db)


def mark_pending(course: Course, db: Database, keys: list[tuple[str, str]]) -> None:
    with _pending_lock:
        _pending.setdefault((str(course.root), db.url), set()).update(keys)


def _done(course: Course, db: Database, keys: list[tuple[str, str]]) -> None:
    with _pending_lock:
        _pending.setdefault((str(course.root), db.url), set()).difference_update(keys)


def pending(course: Course, db: Database) -> set[tuple[str, str]]:
    """(assignment, student) whose files are not up to date yet in this process's view."""
    with _pending_lock:
        return set(_pending.get((str(course.root), db.url), set()))


def retry_pending(course: Course, db: Database, wait: float = LOCK_WAIT_SECONDS,
                  load: Callable[[str], Assignment] | None = None) -> bool:
    """Bring the pending students' files up to date (those just graded, and those that could
    not be written before). Never raises. `load`: as for `_sync_students`."""
    by_assignment: dict[str, list[str]] = {}
    for assignment, student in sorted(pending(course, db)):
        by_assignment.setdefault(assignment, []).append(student)
    done = True
    for assignment, students in by_assignment.items():
        try:
            report = _sync_students(course, db, assignment, students, wait, load=load)
        except Exception as error:  # busy course, gradebook.db refused, disk full: later
            log.warning("the course's files of %s are not up to date yet (tried again on "
                        "the next result): %s", assignment, clean_text(error, 300))
            done = False
            continue
        failed = _failed_ids(report)
        _done(course, db, [(assignment, s) for s in students if s not in failed])
        done = done and not failed
    return done


def _failed_ids(report: SyncReport) -> set[str]:
    return {line.split(":", 1)[0] for line in report.failed}


def sync_all(course: Course, db: Database, assignment: str,
             wait: float = 60.0, force: bool = False) -> SyncReport:
    """Every student's counted submission of `assignment` into the course's files (what
    `autograder service sync` runs, and the instructor's gradebook before an LMS export).
    Raises CourseBusy if the course stays locked for `wait` seconds. `force`: every counted
    submission is written again, whatever the markers say."""
    report = _sync_students(course, db, assignment, None, wait, force)
    failed = _failed_ids(report)
    _done(course, db, [(a, s) for a, s in pending(course, db)
                       if a == assignment and s not in failed])
    try:  # serve's HTTP process cannot read results/: it serves this
        write_gradebook_snapshot(course, assignment)
    except Exception as error:  # the files are synced; the snapshot follows next round
        log.warning("the gradebook of %s for the service is not up to date: %s", assignment,
                    clean_text(error, 300))
    return report


def gradebook_rows(course: Course, assignment: str,
                   scores: list[StudentScore] | None = None) -> list[dict]:
    """gradebook.db's final scores of `assignment` (manual grades, extra credit and late
    penalties in), one dict per student, as the instructor's gradebook JSON shows them
    (`scores`: those final scores, if read already)."""
    from autograder.scores import final_scores

    if scores is None:
        scores = final_scores(course, assignment)
    return [{"student_id": row.student_id, "name": clean_text(row.display_name, 300),
             "score": row.score, "max_score": row.max_score, "autograded": row.autograded,
             "manual_adjustment": row.manual_adjustment, "extra_credit": row.extra_credit,
             "late_penalty": row.late_penalty, "status": str(row.status), "late": row.late,
             "seconds_late": row.seconds_late}
            for row in scores]


@dataclass(frozen=True)
class Snapshot:
    """The gradebook as the course-files thread last made it: what a process that cannot
    read the course's results (serve's HTTP process) serves."""

    rows: Path  # the gradebook JSON's rows
    csv: Path  # the export's CSV
    scores: Path  # the final scores whole (StudentScore), that the LMS files are filled from

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return self.rows, self.csv, self.scores


def snapshot_paths(course: Course, assignment: str) -> Snapshot:
    folder = course.root / MARKER_DIR
    return Snapshot(folder / f"{assignment}.gradebook.json",
                    folder / f"{assignment}.gradebook.csv",
                    folder / f"{assignment}.scores.json")


def read_snapshot_scores(path: Path) -> list[StudentScore]:
    """The final scores the worker kept (`write_gradebook_snapshot`)."""
    from autograder.scores import StudentScore

    known = set(StudentScore.__dataclass_fields__)
    return [StudentScore(**{key: value for key, value in row.items() if key in known})
            for row in json.loads(path.read_bytes())]


def _write_readable(path: Path, data: bytes) -> None:
    """Atomically, readable by all (the HTTP process runs as another user): scores only,
    never a result's expected values."""
    write_atomic(path, data, mode=0o644)


def write_gradebook_snapshot(course: Course, assignment: str, force: bool = False) -> bool:
    """The gradebook's JSON rows, CSV export and final scores, for serve's HTTP process, when
    gradebook.db or the stored results changed since they were made (or `force`). True if
    written."""
    from autograder.commands import export_report
    from autograder.scores import final_scores
    from autograder.tempfiles import make_temp_dir, remove_tree

    snapshot = snapshot_paths(course, assignment)
    sources = [course.root / "gradebook.db", course.root / "results" / assignment]
    try:
        made = min(path.stat().st_mtime_ns for path in snapshot.paths)
        newest = max(p.stat().st_mtime_ns for p in sources if p.exists())
        if not force and newest < made:
            return False
    except (OSError, ValueError):
        pass  # none yet
    scores = final_scores(course, assignment)
    folder = make_temp_dir("export")
    try:
        content = Path(export_report(course, assignment, "csv",
                                     folder / f"{assignment}.csv").path).read_bytes()
    finally:
        remove_tree(folder)
    snapshot.rows.parent.mkdir(parents=True, exist_ok=True)
    _write_readable(snapshot.csv, content)
    _write_readable(snapshot.scores, json.dumps([asdict(row) for row in scores]).encode())
    _write_readable(snapshot.rows, json.dumps(gradebook_rows(course, assignment,
                                                             scores)).encode())
    return True


def can_sync(course: Course) -> bool:
    """Whether this process may bring the course's files up to date: it can write the course
    (its folder, the lock file, gradebook.db) and read its secret. As root, `serve`'s HTTP
    process (c.Service.user, the course read-only) cannot: there the embedded worker keeps
    the files, and the HTTP process only reads them."""
    from autograder.course import SECRET_FILE
    from autograder.lock import LOCK_FILE

    root = course.root
    if not os.access(root, os.W_OK | os.X_OK):
        return False
    for name, mode in ((LOCK_FILE, os.W_OK), ("gradebook.db", os.W_OK),
                       (SECRET_FILE, os.R_OK)):
        path = root / name
        if path.exists() and not os.access(path, mode):
            return False
    return True


def synced_assignments(db: Database) -> list[str]:
    """The assignments the database holds results of."""
    with db.session(readonly=True) as session:
        return sorted(set(session.scalars(select(Result.assignment).distinct())))
