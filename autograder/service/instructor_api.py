"""The instructor's API (/api/instructor/..., instructors only): submissions and students of an
assignment, regrades published only when confirmed, the gradebook (JSON, CSV, Canvas, Moodle)
and the audit log of every manual change.

Handlers find the course and the database in the app's state (`create_app` puts them there)
and the person asking in the app-wide `principal` dependency (autograder.service.auth). A
regrade grades each student's counted submission again with the assignment's current version;
its results are drafts (Result.published False) that neither students nor exports see until
an instructor confirms them; confirming publishes them (older results stay, for the history)
and writes one audit entry per student whose score changed. The gradebook's files are made as
`autograder export` makes them, from gradebook.db after the course's files are brought up to
date (course_sync.sync_all), so both give the same numbers; where this process cannot write the
course (as root, serve's HTTP process), from gradebook.db as the embedded worker keeps it, and
the header X-Autograder-Synced says which.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response, Router, delete, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import func, select

from autograder.course import Course
from autograder.errors import UserError
from autograder.lock import CourseBusy
from autograder.results import clean_text
from autograder.service import course_sync
from autograder.service.auth import Who, instructor_only
from autograder.service.models import (
    AuditEntry,
    Job,
    JobKind,
    JobState,
    Person,
    Regrade,
    Result,
    Submission,
    utcnow,
)
from autograder.service.retention import KEPT, student_data_counts

log = logging.getLogger(__name__)


MAX_LISTED = 5_000  # rows of one list answer (audit, submissions) at most
MAX_ID = 2**31 - 1  # ids are INTEGER (32 bits on PostgreSQL): a larger one names nothing
MAX_REGRADE_STUDENTS = 10_000
GRADEBOOK_FORMATS = ("json", "csv", "canvas", "moodle")
JOB_STATES = {JobState.QUEUED: "queued", JobState.LEASED: "grading", JobState.DONE: "graded",
              JobState.FAILED: "failed"}
REGRADE_STATES = {JobState.QUEUED: "queued", JobState.LEASED: "grading",
                  JobState.DONE: "done", JobState.FAILED: "failed"}
SYNC_WAIT_SECONDS = 10.0


class Conflict(HTTPException):
    status_code = 409


class Unprocessable(HTTPException):
    status_code = 422


class CourseBusyNow(HTTPException):
    status_code = 503


@dataclass
class RegradeRequest:
    """Whom to grade again: these students' counted submissions, or (null) every student's."""

    students: list[str] | None = None


# --- Helpers -------------------------------------------------------------------------------

def _course(request: Request) -> Course:
    return request.app.state.course


def _db(request: Request) -> Any:
    return request.app.state.db


def _known_assignment(course: Course, assignment: str) -> None:
    from autograder.commands import known_assignments

    if assignment not in known_assignments(course):
        raise NotFoundException(f"unknown assignment '{clean_text(assignment, 100)}'")


def _lateness(course: Course, assignment: str) -> Callable[[str, datetime], float | None]:
    """(student, upload time) -> seconds late (their extension counted), None if the due date
    cannot be read."""
    from autograder.late import LateRules, due_date, list_extensions

    try:
        due = due_date(course, assignment)
        extensions = {e.student_id: e for e in list_extensions(course, assignment)}
        rules = LateRules(course, assignment, due, extensions)
    except Exception as error:  # no gradebook.db yet, an older one: lateness unknown
        log.warning("lateness of %s unknown: %s", assignment, clean_text(error, 300))
        return lambda student, at: None

    def seconds_late(student: str, at: datetime) -> float | None:
        try:
            return rules.judge(student, course_sync.nbgrader_time(at)).seconds_late
        except Exception:
            return None

    return seconds_late


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _audit(session: Any, actor: str, action: str, target: str, old: Any = "",
           new: Any = "") -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target,
                           old_value=old if isinstance(old, str) else json.dumps(old),
                           new_value=new if isinstance(new, str) else json.dumps(new)))


def _newest_published(session: Any, submission_ids: list[str],
                      excluding_regrade: int | None = None) -> dict[str, Result]:
    """{submission id: its newest published result} (leaving out one regrade's results)."""
    if not submission_ids:
        return {}
    query = (select(Result).join(Job, Job.id == Result.job_id)
             .where(Result.submission_id.in_(submission_ids), Result.published.is_(True))
             .order_by(Result.id))
    if excluding_regrade is not None:
        query = query.where((Job.regrade_id.is_(None)) | (Job.regrade_id != excluding_regrade))
    return {row.submission_id: row for row in session.scalars(query)}


def sync_students(course: Course, db: Any, assignment: str, students: list[str]) -> None:
    """After published scores changed: the course's files of these students, best effort (a
    failure leaves them pending for the worker's next result, or `autograder service sync`).
    Where this process cannot write the course (as root, serve's HTTP process), the embedded
    worker's course-files round brings them up to date (c.Service.course_sync_seconds)."""
    if not course_sync.can_sync(course):
        return
    try:
        course_sync.mark_pending(course, db, [(assignment, s) for s in students])
        course_sync.retry_pending(course, db)
    except Exception:  # the change is stored; the files follow later
        log.exception("the course's files of %s are not up to date yet", assignment)


# --- Submissions and students ---------------------------------------------------------------

@get("/assignments/{assignment:str}/submissions", sync_to_thread=True)
def list_submissions(request: Request, assignment: FromPath[str],
                     status: FromQuery[str | None] = None, late: FromQuery[bool | None] = None,
                     student: FromQuery[str | None] = None) -> list[dict[str, Any]]:
    """Every upload of the assignment, newest first: its grading state (queued, grading,
    graded, failed), its result's status and score, and whether it was late. Filters:
    `status` (a state or a result status: graded, timeout, invalid, ...), `late`, `student`."""
    course, db = _course(request), _db(request)
    _known_assignment(course, assignment)
    seconds_late = _lateness(course, assignment)
    with db.session(readonly=True) as session:
        query = (select(Submission.id, Submission.student_id, Submission.submitted_at,
                        Submission.size, Submission.sha256, Submission.charged)
                 .where(Submission.assignment == assignment)
                 .order_by(Submission.submitted_at.desc(), Submission.id))
        if student is not None:
            query = query.where(Submission.student_id == student)
        rows = session.execute(query).all()
        ids = [row.id for row in rows]
        states = _submit_job_states(session, ids)
        results = _newest_published(session, ids)
        counted = {r.submission_id for r in course_sync.counted_by_policy(
            session, course, assignment, student).values()}
    listed = []
    for row in rows:
        result = results.get(row.id)
        late_by = seconds_late(row.student_id, row.submitted_at)
        item = {"id": row.id, "student_id": row.student_id,
                "submitted_at": _iso(row.submitted_at), "size": row.size,
                "sha256": row.sha256, "charged": row.charged,
                "state": states.get(row.id, "queued"),
                "status": None if result is None else result.status,
                "score": None if result is None else result.score,
                "max_score": None if result is None else result.max_score,
                "graded_at": None if result is None else _iso(result.graded_at),
                "late": None if late_by is None else late_by > 0,
                "seconds_late": late_by, "counted": row.id in counted}
        if status is not None and status not in (item["state"], item["status"]):
            continue
        if late is not None and item["late"] is not late:
            continue
        listed.append(item)
        if len(listed) >= MAX_LISTED:
            break
    return listed


def _submit_job_states(session: Any, ids: list[str]) -> dict[str, str]:
    states: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        for submission_id, state in session.execute(
                select(Job.submission_id, Job.state)
                .where(Job.submission_id.in_(ids[start:start + 500]),
                       Job.kind == JobKind.SUBMIT)):
            states[submission_id] = JOB_STATES.get(state, str(state))
    return states


@get("/assignments/{assignment:str}/students", sync_to_thread=True)
def list_students(request: Request, assignment: FromPath[str],
                  missing: FromQuery[bool] = False) -> list[dict[str, Any]]:
    """The roster's students and everyone who submitted: how many uploads, and the counted
    one's score, status and lateness. `missing=true`: rostered students with no upload."""
    from autograder.roster import roster_students

    course, db = _course(request), _db(request)
    _known_assignment(course, assignment)
    roster = {student.id: student for student in roster_students(course)}
    seconds_late = _lateness(course, assignment)
    with db.session(readonly=True) as session:
        uploads = dict(session.execute(
            select(Submission.student_id, func.count(Submission.id))
            .where(Submission.assignment == assignment)
            .group_by(Submission.student_id)).all())
        counted = course_sync.counted_by_policy(session, course, assignment)
        times = dict(session.execute(
            select(Submission.id, Submission.submitted_at)
            .where(Submission.id.in_([r.submission_id for r in counted.values()] or [""])))
            .all())
        people = {person.id: person for person in session.scalars(
            select(Person).where(Person.id.in_(sorted(set(roster) | set(uploads)) or [""])))}
    listed = []
    for student in sorted(set(roster) | set(uploads)):
        if missing and uploads.get(student):
            continue
        result = counted.get(student)
        at = times.get(result.submission_id) if result is not None else None
        late_by = seconds_late(student, at) if at is not None else None
        entry = roster.get(student)
        name = entry.name if entry is not None else getattr(people.get(student), "name", "")
        listed.append({"student_id": student, "name": clean_text(name or "", 300),
                       "rostered": student in roster, "submissions": uploads.get(student, 0),
                       "counted_submission": None if result is None else result.submission_id,
                       "score": None if result is None else result.score,
                       "max_score": None if result is None else result.max_score,
                       "status": "missing" if not uploads.get(student)
                       else (result.status if result is not None else "pending"),
                       "late": None if late_by is None else late_by > 0})
    return listed


# --- Regrades -------------------------------------------------------------------------------

@post("/assignments/{assignment:str}/regrades", status_code=202, sync_to_thread=True)
def start_regrade(request: Request, assignment: FromPath[str], data: JSONBody[RegradeRequest],
                  principal: Who) -> dict[str, Any]:
    """Grade again the counted submission of these students (null: of every student who has
    one), with the assignment as the course has it now. The results wait unpublished."""
    from autograder.service.queue import enqueue_regrade

    course, db = _course(request), _db(request)
    _known_assignment(course, assignment)
    if data.students is not None:
        if len(data.students) > MAX_REGRADE_STUDENTS:
            raise Unprocessable(f"at most {MAX_REGRADE_STUDENTS} students per regrade")
        if not all(isinstance(s, str) for s in data.students):
            raise Unprocessable("students: a list of student ids (strings), or null for all")
    # The version as the upload route names it (the app's catalog: hashes the release and
    # the hidden tests' files). Not Assignment.load: as root, this process cannot read the
    # course's secret, and it never imports the hidden tests.
    current = request.app.state.catalog.get(assignment)
    if current is None:
        raise Conflict(f"{assignment} cannot be graded now: its release or hidden tests "
                       "cannot be read")
    fingerprint = current.fingerprint
    with db.session() as session:
        counted = course_sync.counted_by_policy(session, course, assignment)
        wanted = sorted(counted) if data.students is None else list(dict.fromkeys(data.students))
        without = [s for s in wanted if s not in counted]
        if without:  # nothing is queued: a typo in one id is not half a regrade
            raise Unprocessable("no graded submission of " + ", ".join(
                clean_text(s, 100) for s in without[:20]) + (" ..." if len(without) > 20
                                                              else ""))
        if not wanted:
            raise Unprocessable(f"nobody has a graded submission of {assignment} yet")
        regrade = Regrade(assignment=assignment, fingerprint=fingerprint,
                          requested_by=principal.id)
        session.add(regrade)
        session.flush()
        for student in wanted:
            enqueue_regrade(session, submission_id=counted[student].submission_id,
                            fingerprint=fingerprint, regrade_id=regrade.id)
        _audit(session, principal.id, "regrade.start", f"{assignment} regrade {regrade.id}",
               new={"students": wanted})
        return {"id": regrade.id, "assignment": assignment, "students": len(wanted),
                "state": regrade.state}


def _regrade_or_404(session: Any, regrade_id: int) -> Regrade:
    # checked before the query: SQLite and PostgreSQL refuse a too large integer with an error
    regrade = session.get(Regrade, regrade_id) if 0 < regrade_id <= MAX_ID else None
    if regrade is None:
        raise NotFoundException(f"no regrade {regrade_id}")
    return regrade


def _regrade_rows(session: Any, regrade: Regrade) -> list[dict[str, Any]]:
    """Per student: the score before (the published result the regrade would replace) and
    after (its own result), and the job's state."""
    jobs = list(session.execute(
        select(Job, Submission.student_id).join(Submission, Submission.id == Job.submission_id)
        .where(Job.regrade_id == regrade.id).order_by(Submission.student_id, Job.id)))
    submission_ids = [job.submission_id for job, _ in jobs]
    before = _newest_published(session, submission_ids, excluding_regrade=regrade.id)
    after = {row.job_id: row for row in session.scalars(
        select(Result).where(Result.job_id.in_([job.id for job, _ in jobs] or [-1])))}
    rows = []
    for job, student in jobs:
        old, new = before.get(job.submission_id), after.get(job.id)
        rows.append({"student_id": student, "submission_id": job.submission_id,
                     "state": REGRADE_STATES.get(job.state, str(job.state)),
                     "before": None if old is None else old.score,
                     "after": None if new is None else new.score,
                     "max_score": (new or old).max_score if (new or old) else None,
                     "status_before": None if old is None else old.status,
                     "status_after": None if new is None else new.status,
                     "reason": clean_text(job.error, 500) if job.error else "",
                     "changed": old is not None and new is not None
                     and (old.score != new.score or old.status != new.status)})
    return rows


def _regrade_view(session: Any, regrade: Regrade) -> dict[str, Any]:
    rows = _regrade_rows(session, regrade)
    return {"id": regrade.id, "assignment": regrade.assignment, "state": regrade.state,
            "fingerprint": regrade.fingerprint, "requested_by": regrade.requested_by,
            "requested_at": _iso(regrade.requested_at), "decided_by": regrade.decided_by,
            "decided_at": _iso(regrade.decided_at),
            "done": all(row["state"] in ("done", "failed") for row in rows),
            "changed": sum(row["changed"] for row in rows), "students": rows}


@get("/regrades/{regrade_id:int}", sync_to_thread=True)
def show_regrade(request: Request, regrade_id: FromPath[int]) -> dict[str, Any]:
    with _db(request).session(readonly=True) as session:
        return _regrade_view(session, _regrade_or_404(session, regrade_id))


@post("/regrades/{regrade_id:int}/confirm", status_code=200, sync_to_thread=True)
def confirm_regrade(request: Request, regrade_id: FromPath[int],
                    principal: Who) -> dict[str, Any]:
    """Publish the regrade's results (every job must be finished); one audit entry per
    student whose score or status changed. Students and exports see the new scores now."""
    course, db = _course(request), _db(request)
    with db.session() as session:
        regrade = _regrade_or_404(session, regrade_id)
        if regrade.state != "running":
            raise Conflict(f"regrade {regrade_id} was {regrade.state} already")
        rows = _regrade_rows(session, regrade)
        waiting = [row["student_id"] for row in rows if row["state"] in ("queued", "grading")]
        if waiting:
            raise Conflict(f"regrade {regrade_id} is not finished: {len(waiting)} student(s) "
                           "still queued or grading; confirm when GET shows done")
        drafts = list(session.scalars(
            select(Result).join(Job, Job.id == Result.job_id)
            .where(Job.regrade_id == regrade.id, Result.published.is_(False))))
        for draft in drafts:
            draft.published = True
        for row in rows:
            if row["changed"]:
                _audit(session, principal.id, "regrade.confirm",
                       f"{regrade.assignment}/{row['student_id']}",
                       old={"score": row["before"], "status": row["status_before"]},
                       new={"score": row["after"], "status": row["status_after"]})
        regrade.state, regrade.decided_by, regrade.decided_at = ("confirmed", principal.id,
                                                                 utcnow())
        assignment = regrade.assignment
        changed = [row["student_id"] for row in rows if row["after"] is not None]
        session.flush()
        view = _regrade_view(session, regrade)
    sync_students(course, db, assignment, changed)
    return view


@post("/regrades/{regrade_id:int}/discard", status_code=200, sync_to_thread=True)
def discard_regrade(request: Request, regrade_id: FromPath[int],
                    principal: Who) -> dict[str, Any]:
    """Drop the regrade: its jobs (a worker still grading one loses it) and draft results."""
    with _db(request).session() as session:
        regrade = _regrade_or_404(session, regrade_id)
        if regrade.state != "running":
            raise Conflict(f"regrade {regrade_id} was {regrade.state} already")
        view = _regrade_view(session, regrade)
        jobs = list(session.scalars(select(Job).where(Job.regrade_id == regrade.id)))
        drafts = 0
        for job in jobs:
            drafts += session.execute(
                Result.__table__.delete().where(Result.job_id == job.id)).rowcount
            session.delete(job)
        regrade.state, regrade.decided_by, regrade.decided_at = ("discarded", principal.id,
                                                                 utcnow())
        _audit(session, principal.id, "regrade.discard",
               f"{regrade.assignment} regrade {regrade.id}",
               old={"drafts": drafts, "changed": view["changed"]}, new="discarded")
        view.update(state="discarded", decided_by=principal.id,
                    decided_at=_iso(regrade.decided_at))
        return view


# --- The gradebook ----------------------------------------------------------------------------

def _synced(course: Course, db: Any, assignment: str) -> dict[str, str]:
    """Bring the course's files up to date, where this process can write them; the headers
    that say how the gradebook was produced. Where it cannot (as root, serve's HTTP process
    runs as c.Service.user on a read-only course), gradebook.db is read as the embedded
    worker keeps it: after each result, and every c.Service.course_sync_seconds."""
    if not course_sync.can_sync(course):
        return {"X-Autograder-Synced": "false"}
    try:
        course_sync.sync_all(course, db, assignment, wait=SYNC_WAIT_SECONDS)
    except CourseBusy:
        raise CourseBusyNow("the course is being graded by another process (its lock is "
                            "held): try again in a moment",
                            headers={"Retry-After": "5"}) from None
    except UserError as error:  # e.g. the assignment is not released in gradebook.db
        raise Conflict(clean_text(error, 1000)) from None
    return {"X-Autograder-Synced": "true"}


def _export_file(course: Course, assignment: str, fmt: str, template: bytes | None,
                 scores: list[Any] | None = None) -> tuple[bytes, list[str]]:
    """`autograder export`'s file, made in a private temporary folder; its bytes and what
    the instructor should know. `scores`: the LMS file is filled from these final scores
    (the worker's snapshot) rather than from the course's results."""
    from autograder.commands import export_report
    from autograder.lms.gradebook_files import fill_lms_file
    from autograder.tempfiles import make_temp_dir, remove_tree

    folder = make_temp_dir("export")
    try:
        template_path = None
        if template is not None:
            template_path = folder / "template.csv"
            template_path.write_bytes(template)
        path = folder / f"{assignment}.csv"
        try:
            filled = (export_report(course, assignment, fmt, path, template_path)
                      if scores is None else
                      fill_lms_file(fmt, scores, assignment, path, course.config, template_path))
        except UserError as error:
            text = str(error).replace("pass it with --template",
                                      "POST it to this URL as the request body")
            raise Unprocessable(clean_text(text, 1000)) from None
        warnings = [clean_text(w, 1000) for w in filled.warnings]
        if filled.matched == 0:
            warnings.append("the template matched none of our students: it is returned as "
                            "the LMS gave it, with no score")
        return Path(filled.path).read_bytes(), warnings
    finally:
        remove_tree(folder)


def _gradebook(request: Request, assignment: str, fmt: str,
               template: bytes | None) -> Response | list[dict[str, Any]]:
    course, db = _course(request), _db(request)
    _known_assignment(course, assignment)
    if fmt not in GRADEBOOK_FORMATS:
        raise Unprocessable(f"format must be one of {', '.join(GRADEBOOK_FORMATS)}")
    produced = _synced(course, db, assignment)
    if produced["X-Autograder-Synced"] == "false":
        return _gradebook_as_kept(course, db, assignment, fmt, template, produced)
    if fmt == "json":
        return Response(_gradebook_json(course, db, assignment,
                                        course_sync.gradebook_rows(course, assignment)),
                        headers=produced)
    return _lms_file(assignment, fmt, *_export_file(course, assignment, fmt, template),
                     produced)


def _lms_file(assignment: str, fmt: str, content: bytes, warnings: list[str],
              headers: dict[str, str]) -> Response:
    suffix = "" if fmt == "csv" else f"-{fmt}"
    name = f"{assignment}{suffix}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{_header_text(name)}"; '
                                      f"filename*=UTF-8''{quote(name)}", **headers}
    if warnings:  # they name students, whose ids may be in any script
        headers["X-Autograder-Warnings"] = _header_text(
            clean_text(" | ".join(warnings), 2000).replace("\n", " "))
    return Response(content, media_type="text/csv; charset=utf-8", headers=headers)


def _header_text(text: str) -> str:
    """Text an HTTP header can carry (ASCII: "łukasz" as "\\u0142ukasz"), never a quote."""
    return text.encode("ascii", "backslashreplace").decode("ascii").replace('"', "'")


def _gradebook_as_kept(course: Course, db: Any, assignment: str, fmt: str,
                       template: bytes | None, headers: dict[str, str]) -> Response:
    """The gradebook as the embedded worker last made it (course_sync.write_gradebook_snapshot,
    every c.Service.course_sync_seconds): this process can neither write the course nor read
    its results. The LMS files are filled here from the final scores the worker kept."""
    snapshot = course_sync.snapshot_paths(course, assignment)
    path = {"json": snapshot.rows, "csv": snapshot.csv}.get(fmt, snapshot.scores)
    try:
        made = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        content = path.read_bytes()
    except OSError:
        raise CourseBusyNow("the grading worker has not written this gradebook yet: try "
                            "again in a moment", headers={"Retry-After": "5"}) from None
    headers = {**headers, "X-Autograder-Gradebook-Made": made.isoformat()}
    if fmt == "json":
        return Response(_gradebook_json(course, db, assignment, json.loads(content)),
                        headers=headers)
    if fmt == "csv":
        return _lms_file(assignment, fmt, content, [], headers)
    scores = course_sync.read_snapshot_scores(path)
    return _lms_file(assignment, fmt, *_export_file(course, assignment, fmt, template, scores),
                     headers)


def _gradebook_json(course: Course, db: Any, assignment: str,
                    scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """gradebook.db's rows (course_sync.gradebook_rows) with the counted submission's id."""
    with db.session(readonly=True) as session:
        counted = course_sync.counted_by_policy(session, course, assignment)
    rows = []
    for row in scores:
        result = counted.get(row["student_id"])
        rows.append({**row, "submission_id": None if result is None else result.submission_id,
                     "graded_at": None if result is None else _iso(result.graded_at)})
    return rows


@get("/assignments/{assignment:str}/gradebook", sync_to_thread=True)
def gradebook(request: Request, assignment: FromPath[str],
              fmt: Annotated[str, QueryParameter(name="format")] = "json") -> Any:
    """Final scores (gradebook.db's: manual grades, extra credit and late penalties in) of
    every rostered and every graded student. format: json, csv (the export's CSV, every text
    cell neutralised for spreadsheets), canvas (needs c.CanvasExport.assignment_id; or POST
    the gradebook CSV downloaded from Canvas), moodle (POST the grading worksheet)."""
    return _gradebook(request, assignment, fmt, None)


@post("/assignments/{assignment:str}/gradebook", status_code=200)
async def gradebook_from_template(
        request: Request, assignment: FromPath[str],
        fmt: Annotated[str, QueryParameter(name="format")] = "canvas") -> Any:
    """The LMS's own file filled: the body is the CSV downloaded from Canvas (Grades >
    Export) or Moodle (the grading worksheet); only our assignment's column is filled."""
    import anyio.to_thread

    if fmt not in ("canvas", "moodle"):
        raise Unprocessable("a template is filled for format canvas or moodle")
    template = await request.body()  # raw CSV; its size is capped by the app
    if not template:
        raise Unprocessable("the request body must be the CSV downloaded from the LMS")
    return await anyio.to_thread.run_sync(_gradebook, request, assignment, fmt, template)


# --- Audit and data deletion ------------------------------------------------------------------

@get("/audit", sync_to_thread=True)
def audit_log(request: Request,
              limit: Annotated[int, QueryParameter(ge=1, le=MAX_LISTED)] = 200,
              offset: Annotated[int, QueryParameter(ge=0, le=MAX_ID)] = 0,
              ) -> list[dict[str, Any]]:
    """Every manual change, newest first: who, when, what, the old and the new value."""
    with _db(request).session(readonly=True) as session:
        entries = session.scalars(select(AuditEntry)
                                  .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                                  .limit(limit).offset(offset))
        return [{"id": e.id, "at": _iso(e.at), "actor": e.actor, "action": e.action,
                 "target": clean_text(e.target, 300), "old": clean_text(e.old_value, 2000),
                 "new": clean_text(e.new_value, 2000)} for e in entries]


@delete("/students/{student_id:str}/data", status_code=200, sync_to_thread=True)
def delete_student(request: Request, student_id: FromPath[str],
                   principal: Who) -> dict[str, Any]:
    """Everything the service keeps of one student (uploads, jobs, results, tokens, sessions),
    on their request; audited with how many rows went. The course's own files (submitted/,
    gradebook.db) are the instructor's records and stay."""
    with _db(request).session() as session:
        counts = student_data_counts(session, student_id)
        _audit(session, principal.id, "student.delete_data", clean_text(student_id, 100),
               old=counts, new="deleted")
    return {"student_id": student_id, "deleted": counts, "rows": sum(counts.values()),
            "kept": KEPT}


instructor_router = Router(
    path="/api/instructor", guards=[instructor_only], tags=["instructor"],
    route_handlers=[list_submissions, list_students, start_regrade, show_regrade,
                    confirm_regrade, discard_regrade, gradebook, gradebook_from_template,
                    audit_log, delete_student])
