"""The student's API: upload, status, feedback, history, the assignment's terms, and sign-in.

A student reaches only their own submissions: another student's id gets the same 404 as an id
that does not exist, so ids cannot be probed. The upload is checked in this order, and nothing
is stored until the last step: authenticated -> the assignment is released (404) -> a read of
the student's budget: empty, 429 before the body is even read -> the body's size (413) and its
parts (400) -> intake's checks of the notebook (400/413/415/422), at most PARSES_AT_ONCE at a
time in the process (503 after waiting PARSE_WAIT_SECONDS for a turn) -> one transaction that
takes from the budget (429 with when the next one is possible: this one is the authority) and
stores the submission with its job -> 202.

The HTTP process never imports the hidden tests (they import torch, and they are the secret):
it reads the release notebook, and hashes the hidden tests' files for the assignment's
fingerprint (`Assignment.fingerprint`, which only reads bytes).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import Cookie, UploadFile
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy import select
from sqlalchemy.orm import Session

from autograder.assemble import InvalidNotebook, read_notebook
from autograder.assignment import Assignment, grade_cells_of, released_notebook
from autograder.course import Course
from autograder.errors import UserError
from autograder.files import change_stamp
from autograder.results import clean_text
from autograder.service import auth, intake, notify, queue, views
from autograder.service import budget as budgets
from autograder.service import policy as policies
from autograder.service.auth import Who
from autograder.service.models import Job, JobKind, JobState, Person, Result, Submission
from autograder.service.settings import Service
from autograder.verify.hidden import PROBES_FILE, TESTS_FILE

log = logging.getLogger(__name__)
JSON_TYPES = ("application/json", "application/x-ipynb+json")
SUBMISSION_ID_CAP = 64


class TooManyRequests(ClientException):
    status_code = 429


class UnsupportedMediaType(ClientException):
    status_code = 415


@dataclass(frozen=True)
class _HiddenFiles:
    """What `Assignment.fingerprint` reads of the hidden tests: the file, never the module."""

    probes_file: Path


class AssignmentCatalog:
    """The released assignments as the HTTP process knows them: the release notebook and the
    fingerprint, read again when the release or the hidden tests' files change."""

    def __init__(self, course: Course) -> None:
        self.course = course
        self._loaded: dict[str, tuple[tuple, _Catalogued]] = {}
        self._names: tuple[tuple, frozenset[str]] | None = None  # release/'s folders
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        release = self.course.root / "release"
        return sorted(p.name for p in release.iterdir() if p.is_dir()) if release.is_dir() else []

    def _released(self, name: str) -> bool:
        """Whether `name` is exactly one folder's name in release/ (listed again when release/
        changes): not a path ("..", "a/b"), and not another spelling of a name on a file
        system that ignores case (it would escape the name's policy and budget)."""
        stamp = change_stamp(self.course.root / "release")
        if stamp is None:
            return False
        with self._lock:
            if self._names is None or self._names[0] != stamp:
                self._names = (stamp, frozenset(self.names()))
            return name in self._names[1]

    def get(self, name: str) -> Assignment | None:
        """The assignment, or None if `name` is not a released assignment with hidden tests."""
        if not self._released(name):
            return None
        folder = self.course.release_dir(name)
        hidden = self.course.hidden_dir(name)
        with self._lock:
            cached = self._loaded.get(name)
        if cached is not None and cached[0] == _stamp(folder, cached[1].notebook_path, hidden):
            return cached[1].assignment  # a few stat calls: every upload asks
        try:
            path = released_notebook(self.course, name)
            stamp = _stamp(folder, path, hidden)
        except (UserError, OSError):
            return None
        if stamp is None:
            return None
        try:
            notebook = read_notebook(path)
        except InvalidNotebook:
            return None
        assignment = Assignment(name, path.stem, notebook, grade_cells_of(notebook),
                                _HiddenFiles(hidden / PROBES_FILE))  # type: ignore[arg-type]
        _ = assignment.fingerprint  # computed now, from the files as they are now
        with self._lock:
            self._loaded[name] = (stamp, _Catalogued(path, assignment))
        return assignment


@dataclass(frozen=True)
class _Catalogued:
    notebook_path: Path
    assignment: Assignment


def _stamp(folder: Path, notebook: Path, hidden: Path) -> tuple | None:
    """What changes when the release (its folder: a notebook added or renamed; the notebook)
    or the hidden tests change; None if one of them is missing."""
    stamps = tuple(change_stamp(path) for path in (folder, notebook, hidden / PROBES_FILE,
                                                   hidden / TESTS_FILE))
    return None if None in stamps else stamps


# --- helpers ----------------------------------------------------------------------------------

def _state(request: Request) -> Any:
    return request.app.state


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _assignment_or_404(request: Request, name: str) -> Assignment:
    found = _state(request).catalog.get(name)
    if found is None:
        raise NotFoundException(f"no released assignment '{clean_text(name, 100)}'")
    return found


def _own_submission(session: Session, submission_id: str, who: auth.Principal) -> Submission:
    """The caller's submission; 404 for another's, exactly as for one that does not exist."""
    found = (session.get(Submission, submission_id)
             if len(submission_id) <= SUBMISSION_ID_CAP else None)
    if found is None or found.student_id != who.id:
        raise NotFoundException("no such submission")
    return found


def _submit_job(session: Session, submission_id: str) -> Job | None:
    return session.scalars(select(Job).where(Job.submission_id == submission_id,
                                             Job.kind == JobKind.SUBMIT)
                           .order_by(Job.id.desc()).limit(1)).first()


def _status(session: Session, submission: Submission, graders: int) -> dict[str, Any]:
    job = _submit_job(session, submission.id)
    shown: dict[str, Any] = {"id": submission.id, "assignment": submission.assignment,
                             "submitted_at": _iso(submission.submitted_at),
                             "size": submission.size, "sha256": submission.sha256}
    if job is None or job.state == JobState.QUEUED:
        shown.update(status="queued", **_place(session, job, graders))
    elif job.state == JobState.LEASED:
        shown["status"] = "grading"
    elif job.state == JobState.DONE:
        shown["status"] = "graded"
    else:
        shown.update(status="failed", reason=clean_text(job.error or "the grader failed", 500),
                     charged=submission.charged)
    return shown


def _place(session: Session, job: Job | None, graders: int) -> dict[str, Any]:
    """A queued job's position and ETA."""
    place = queue.position(session, job.id) if job is not None else None
    return {"position": place,
            "eta_seconds": queue.eta_seconds(session, job.id, graders, place)
            if place is not None else None}


def _published_result(session: Session, submission_id: str) -> Result | None:
    return session.scalars(select(Result).where(Result.submission_id == submission_id,
                                                Result.published.is_(True))
                           .order_by(Result.graded_at.desc(), Result.id.desc()).limit(1)).first()


def _feedback(request: Request, session: Session, result: Result, now: datetime
              ) -> dict[str, Any]:
    course = _state(request).course
    policy = _policy(course, result.assignment)
    until = views.hidden_until(course, policy, result.assignment, result.student_id)
    return views.student_result(result, policy, now, until)


_policy_errors_logged: set[str] = set()
_policy_log_lock = threading.Lock()
POLICY_BROKEN = "the course's settings are being fixed: try again later"


def _policy(course: Course, assignment: str) -> policies.AssignmentPolicy:
    """The assignment's policy; one that became unusable while the service runs (a hidden
    test renamed under tests_shown, an assignment's folder removed): 503 for the student,
    whose answer must not show the instructor's configuration (its path, its text); the
    real message is logged once."""
    try:
        return policies.policy_for(course, assignment)
    except policies.PolicyError as error:
        message = str(error)
        with _policy_log_lock:
            first = message not in _policy_errors_logged
            _policy_errors_logged.add(message)
        if first:
            log.error("the course's policy is not usable: %s", clean_text(message, 1000))
        raise HTTPException(status_code=503, detail=POLICY_BROKEN,
                            headers={"Retry-After": "60"}) from None


# --- routes -----------------------------------------------------------------------------------

@post("/api/assignments/{assignment:str}/submissions", status_code=202,
      summary="Submit a notebook (multipart field 'notebook', or the notebook as the body)")
async def submit(request: Request, assignment: FromPath[str], principal: Who) -> Response:
    found = _assignment_or_404(request, assignment)
    # The cheap refusal first: a student with nothing left is answered before their upload
    # is read or parsed (a parse costs seconds of CPU and tens of MB for a hostile notebook).
    terms, refused = await anyio.to_thread.run_sync(_refused_by_budget, request, found,
                                                    principal)
    if refused is not None:
        return refused
    content, filename = await _read_upload(request, found)
    async with _parse_slot(request):
        await anyio.to_thread.run_sync(_check_upload, request, found, content)
    return await anyio.to_thread.run_sync(_store_upload, request, found, principal, terms,
                                          content, filename)


PARSES_AT_ONCE = 2  # intake's parses of uploads at once in this process (CPU- and memory-bound)
PARSE_WAIT_SECONDS = 10.0  # an upload waits this long for a parse slot, then 503


class ServiceBusy(ClientException):  # not the client's fault, but theirs to retry
    status_code = 503


@asynccontextmanager
async def _parse_slot(request: Request) -> AsyncIterator[None]:
    """One of the process's PARSES_AT_ONCE slots to parse an upload in: forty hostile uploads
    parsed at once took 3 GB and starved every other request of the GIL; the others wait
    their turn, a bounded time."""
    state = _state(request)
    slots = getattr(state, "parse_slots", None)
    if slots is None:  # made on first use, in the event loop (one thread: no race)
        slots = asyncio.Semaphore(PARSES_AT_ONCE)
        state.parse_slots = slots
    try:
        async with asyncio.timeout(PARSE_WAIT_SECONDS):  # (not wait_for: 3.11's may lose a
            await slots.acquire()  # slot acquired just as it times out)
    except TimeoutError:
        raise ServiceBusy("the service is busy checking other uploads; nothing was stored: "
                          "send it again shortly", headers={"Retry-After": "5"}) from None
    try:
        yield
    finally:
        slots.release()


@dataclass(frozen=True)
class _Terms:
    """What an upload is taken on: the assignment's policy and the student's due date (read
    once for the upload)."""

    policy: policies.AssignmentPolicy
    due: datetime | None


def _refused_by_budget(request: Request, assignment: Assignment,
                       who: auth.Principal) -> tuple[_Terms, Response | None]:
    """The upload's terms, and the 429 for a student whose budget is empty now (no grace
    either), read without a lock (None otherwise): `_store_upload`'s take_from_budget stays
    the authority."""
    course: Course = _state(request).course
    terms = _Terms(_policy(course, assignment.name),
                   policies.student_due(course, assignment.name, who.id))
    return terms, _over_budget_now(request, assignment, who, terms)


def _over_budget_now(request: Request, assignment: Assignment, who: auth.Principal,
                     terms: _Terms) -> Response | None:
    policy, due = terms.policy, terms.due
    now = datetime.now(UTC)
    with _state(request).db.session(readonly=True) as session:
        left = budgets.budget_of(session, policy, who.id, assignment.name, now, due)
    if left.remaining > 0 or left.grace_available:
        return None
    # The exact answer (when the next one is possible, the grace to come) is take_from_budget's:
    # asked in a transaction that stores nothing.
    with _state(request).db.session() as session:
        try:
            budgets.take_from_budget(session, policy, who.id, assignment.name, now, due)
        except budgets.OverBudget as over:
            session.rollback()
            return _over_budget(over, now)
        session.rollback()  # a token came back meanwhile: nothing taken here
    return None


def _check_upload(request: Request, assignment: Assignment, content: bytes) -> None:
    intake.check_upload(content, assignment, _state(request).settings.max_upload_bytes)


async def _read_upload(request: Request, assignment: Assignment) -> tuple[bytes, str]:
    """The notebook's bytes and its file name (size and part limits are Litestar's)."""
    media_type = request.content_type[0]
    default_name = f"{assignment.notebook_name}.ipynb"
    if media_type in JSON_TYPES:
        return await request.body(), default_name
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType("send the notebook as multipart/form-data (field "
                                   "'notebook') or as an application/json body")
    form = await request.form()
    try:
        files = form.getall("notebook") if "notebook" in form else []
        extra = [key for key in form if key != "notebook"]
        if len(files) != 1 or not isinstance(files[0], UploadFile) or extra:
            raise ClientException("send exactly one file, in the form field 'notebook'"
                                  + (f" (also got: {clean_text(', '.join(extra), 200)})"
                                     if extra else ""))
        upload: UploadFile = files[0]
        content = await upload.read()
        return content, clean_text(Path(upload.filename or default_name).name, 300)
    finally:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()


def _store_upload(request: Request, assignment: Assignment, who: auth.Principal,
                  terms: _Terms, content: bytes, filename: str) -> Response:
    state = _state(request)
    policy, due = terms.policy, terms.due
    now = datetime.now(UTC)
    with state.db.session() as session:
        try:
            budgets.take_from_budget(session, policy, who.id, assignment.name, now, due)
        except budgets.OverBudget as over:
            session.rollback()
            return _over_budget(over, now)
        stored = queue.enqueue_submission(session, student_id=who.id,
                                          assignment=assignment.name, filename=filename,
                                          content=content, fingerprint=assignment.fingerprint,
                                          now=now)
        answer = {"id": stored.id, "status": "queued",
                  **_place(session, stored.jobs[0], state.graders)}
    # Only here, after the commit, is the upload acknowledged.
    return Response(answer, status_code=202)


def _over_budget(over: Any, now: datetime) -> Response:
    retry_at = getattr(over, "retry_at", None)
    headers = {}
    if retry_at is not None:
        headers["Retry-After"] = str(max(1, int((retry_at - now).total_seconds() + 0.999)))
    message = getattr(over, "message", "") or "no submissions left for now"
    return Response({"status_code": 429, "detail": message, "retry_at": _iso(retry_at)},
                    status_code=429, headers=headers)


WAIT_MAX_SECONDS = 30.0
FINAL = ("graded", "failed")


@get("/api/submissions/{submission_id:str}",
     summary="A submission's status: queued (position, eta), grading, graded or failed",
     description="With `?wait=S` (0 < S <= 30) the request long-polls: it is answered as soon "
                 "as the submission is graded or failed (within about 20 ms of the result "
                 "being stored), or after S seconds with the status as it is then, so a "
                 "client waits for its feedback without polling. Without `wait` it answers "
                 "at once.")
async def submission_status(
        request: Request, submission_id: FromPath[str], principal: Who,
        wait: Annotated[float | None, QueryParameter(
            gt=0, le=WAIT_MAX_SECONDS, required=False,
            description="seconds to wait for the submission to be graded or failed "
                        "(0 < wait <= 30)")] = None) -> dict[str, Any]:
    state = _state(request)

    def read() -> dict[str, Any]:
        with state.db.session(readonly=True) as session:
            return _status(session, _own_submission(session, submission_id, principal),
                           state.graders)

    if wait is None:
        return await anyio.to_thread.run_sync(read)

    def read_waiting() -> dict[str, Any]:  # the job's id too: the poller watches it fail
        with state.db.session(readonly=True) as session:
            shown = _status(session, _own_submission(session, submission_id, principal),
                            state.graders)
            if waiter.job_id is None and shown["status"] not in FINAL:
                job = _submit_job(session, submission_id)
                waiter.job_id = job.id if job is not None else None
            return shown

    waiters = _waiters(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    await anyio.to_thread.run_sync(waiters.start)  # before the first read: see start()
    waiter = waiters.add(submission_id, loop)
    try:
        while True:
            shown = await anyio.to_thread.run_sync(read_waiting)  # another's: 404 at once
            left = deadline - loop.time()
            if shown["status"] in FINAL or left <= 0:
                return shown
            try:
                await asyncio.wait_for(waiter.event.wait(), left)
            except TimeoutError:
                pass
            waiter.event.clear()
    finally:
        waiters.remove(waiter)


def _waiters(request: Request) -> notify.ResultWaiters:
    """The HTTP process's one poller (made on first use: the event loop is single-threaded,
    so two requests cannot both make one)."""
    state = _state(request)
    found = getattr(state, "result_waiters", None)
    if found is None:
        found = notify.ResultWaiters(state.db)
        state.result_waiters = found
    return found


@get("/api/submissions/{submission_id:str}/feedback", sync_to_thread=True,
     summary="What the student may see of a graded submission")
def submission_feedback(request: Request, submission_id: FromPath[str],
                        principal: Who) -> dict[str, Any]:
    state = _state(request)
    with state.db.session(readonly=True) as session:
        submission = _own_submission(session, submission_id, principal)
        result = _published_result(session, submission.id)
        if result is None:
            status = _status(session, submission, state.graders)
            return {key: status[key] for key in ("id", "status", "position", "eta_seconds",
                                                 "reason") if key in status}
        return {"id": submission.id,
                **_feedback(request, session, result, datetime.now(UTC))}


@get("/api/assignments/{assignment:str}/submissions", sync_to_thread=True,
     summary="The student's own submissions of an assignment, newest first")
def history(request: Request, assignment: FromPath[str],
            principal: Who) -> dict[str, Any]:
    state = _state(request)
    _assignment_or_404(request, assignment)
    now = datetime.now(UTC)
    with state.db.session(readonly=True) as session:
        rows = session.scalars(select(Submission)
                               .where(Submission.student_id == principal.id,
                                      Submission.assignment == assignment)
                               .order_by(Submission.submitted_at.desc())).all()
        entries = []
        for submission in rows:
            entry = _status(session, submission, state.graders)
            result = _published_result(session, submission.id)
            if result is not None:
                seen = _feedback(request, session, result, now)
                entry.update({key: seen[key] for key in ("status", "score", "max_score")
                              if key in seen})
            entries.append(entry)
    return {"assignment": assignment, "submissions": entries}


@get("/api/assignments/{assignment:str}", sync_to_thread=True,
     summary="The assignment's due date (the student's extension included), late policy and "
             "the student's remaining budget")
def assignment_terms(request: Request, assignment: FromPath[str],
                     principal: Who) -> dict[str, Any]:
    state = _state(request)
    found = _assignment_or_404(request, assignment)
    course: Course = state.course
    policy = _policy(course, found.name)
    due = policies.student_due(course, found.name, principal.id)
    now = datetime.now(UTC)
    with state.db.session(readonly=True) as session:
        left = budgets.budget_of(session, policy, principal.id, found.name, now, due)
    late = course.config.LateSubmissionPlugin if course.config is not None else {}
    return {
        "name": found.name,
        "max_score": found.max_score,
        "due": _iso(due),  # the student's: their extension included
        "late_policy": {"penalty_method": str(late.get("penalty_method", "none"))},
        "counts": policy.counts,
        "results_shown": policy.results_shown,
        "budget": {"capacity": left.capacity, "remaining": left.remaining,
                   "next_at": _iso(left.next_at), "grace_available": left.grace_available},
    }


@get("/api/me", sync_to_thread=True, summary="Who the caller is")
def me(request: Request, principal: Who) -> dict[str, Any]:
    with _state(request).db.session(readonly=True) as session:
        person = session.get(Person, principal.id)
        return {"id": principal.id, "role": str(principal.role),
                "name": clean_text(person.name if person else "", 300)}


# --- sign-in ----------------------------------------------------------------------------------

SIGN_IN_BODY_BYTES = 16 * 1024  # an id and a password; 413 beyond, before the body is read


@post("/api/session", sync_to_thread=True, status_code=200,
      request_max_body_size=SIGN_IN_BODY_BYTES,
      summary="Sign in with id and password: a session cookie, and its CSRF token to send as "
              "X-CSRF-Token with every POST and DELETE")
def sign_in(request: Request, data: JSONBody[dict[str, Any]]) -> Response:
    state = _state(request)
    settings: Service = state.settings
    # JSON only: a cross-site form can post text/plain (and sign a victim's browser into the
    # attacker's account, where the victim's uploads would land); application/json cannot be
    # sent across sites without the browser asking first (CORS is off).
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != \
            "application/json":
        raise HTTPException(status_code=415, detail="sign in with a JSON body "
                                                    "(Content-Type: application/json)")
    person_id, password = data.get("id"), data.get("password")
    if not isinstance(person_id, str) or not isinstance(password, str) or not person_id:
        raise ClientException("send {\"id\": ..., \"password\": ...} as JSON strings")
    if len(password) > 1024:
        raise ClientException("password too long")
    address = auth.client_address(request.client.host if request.client else None,
                                  request.headers.getall("x-forwarded-for", []), state.proxies)
    with state.db.session() as session:
        try:
            who = auth.sign_in(session, person_id, password, address,
                               settings.sign_in_attempts, settings.sign_in_window_minutes)
        except auth.SignInLimited as limited:
            wait = int(limited.retry_after + 0.999)
            return Response({"status_code": 429, "detail": "too many failed sign-ins: try "
                             f"again in {wait} s", "retry_after": wait},
                            status_code=429, headers={"Retry-After": str(wait)})
        if who is None:
            session.commit()  # the failure counts, whatever happens next
            return Response({"status_code": 401, "detail": "wrong id or password"},
                            status_code=401)
        cookie, csrf, expires = auth.start_session(session, who.id, settings.session_hours)
    secure = request.url.scheme == "https"
    return Response({"id": who.id, "role": str(who.role), "csrf_token": csrf,
                     "expires_at": _iso(expires)},
                    cookies=[Cookie(key=auth.SESSION_COOKIE, value=cookie, httponly=True,
                                    samesite="lax", secure=secure, path="/",
                                    max_age=int(settings.session_hours * 3600))])


@delete("/api/session", sync_to_thread=True, status_code=200, summary="Sign out")
def sign_out(request: Request, principal: Who) -> Response:
    with _state(request).db.session() as session:
        auth.end_session(session, request.cookies.get(auth.SESSION_COOKIE))
    return Response({"signed_out": principal.id},
                    cookies=[Cookie(key=auth.SESSION_COOKIE, value="", max_age=0, path="/",
                                    httponly=True, samesite="lax")])


student_router = Router(
    path="/", route_handlers=[submit, submission_status, submission_feedback, history,
                              assignment_terms, me, sign_in, sign_out])
