"""Grading on an existing Dask cluster: the same `grade_submission`, run on its workers.

`ClusterGrading` is the Grader's (autograder.grader) side of it: one long-lived Client, each
assignment version (fingerprint) scattered to every worker once (release notebook, hidden
tests, probes: the cluster is the instructor's, trusted side), each submission's notebook sent
as bytes; results come back as plain dicts. Each Dask worker process keeps one warm server,
and each of its threads a slot of it, between submissions. Dask is not a queue: nothing here
outlives the process that submitted it (the service's queue is in its database).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from autograder.assignment import Assignment
from autograder.course import SECRET_FILE, Course
from autograder.errors import SubmissionError
from autograder.execute.runner import Budgets
from autograder.results import SubmissionResult
from autograder.submissions import Submission
from autograder.tempfiles import log_problems, make_temp_dir, remove_tree, sweep_stale
from autograder.verify.hidden import PROBES_FILE, TESTS_FILE

if TYPE_CHECKING:
    from distributed import Client, Future


@dataclass(frozen=True)
class AssignmentPackage:
    """Everything a Dask worker needs to grade an assignment, as text."""

    name: str
    notebook_name: str
    release_notebook: str
    tests_source: bytes  # bytes, not text: the fingerprint must match byte for byte
    probes_source: bytes
    fingerprint: str
    secret: bytes  # the course's: the workers draw each submission's unseen inputs with it

    @classmethod
    def of(cls, assignment: Assignment) -> AssignmentPackage:
        probes = assignment.hidden.probes_file
        return cls(assignment.name, assignment.notebook_name,
                   nbformat.writes(assignment.release_notebook),
                   probes.with_name(TESTS_FILE).read_bytes(), probes.read_bytes(),
                   assignment.fingerprint, assignment.secret)


_local = threading.local()  # per Dask worker thread: its warm slot
_server_lock = threading.Lock()
_server = None  # per Dask worker process: one warm server, a slot of it per thread
_slots: list = []  # its slots: closed first at exit, so that the server ends at once
_swept = False  # per Dask worker process: what killed workers left, removed before its first task


def _warm_slot():  # -> WarmSlot
    from autograder.execute.warm import WarmServer, WarmSlot

    global _server
    with _server_lock:
        if _server is None:
            _server = WarmServer()
            atexit.register(_close_warm_server)
        slot = WarmSlot(_server)
        _slots.append(slot)
    return slot


def _close_warm_server() -> None:
    """At the worker process's exit, quickly (Dask kills a worker that takes seconds to end,
    and then nothing is cleaned up): the slots first, then the server and its folder."""
    for slot in _slots:
        slot.close()
    _server.close()


_assignments: dict[str, Assignment] = {}  # per Dask worker process, by fingerprint
_unpack_lock = threading.Lock()


def _unpack(package: AssignmentPackage) -> Assignment:
    """The package as an Assignment, unpacked once per worker process and shared by its
    threads (as the local pool's threads share one). Under a lock: loading parses the hidden
    tests with `ast`, which CPython 3.11 does not allow from two threads at once
    (SystemError: AST constructor recursion depth mismatch)."""
    with _unpack_lock:
        return _unpacked(package)


def _unpacked(package: AssignmentPackage) -> Assignment:
    cache = _assignments
    if package.fingerprint not in cache:
        root = make_temp_dir("assignment")
        # Kept while the worker process lives (its threads grade from it), removed when it
        # ends; a killed worker's copy is swept by the next worker's first task.
        atexit.register(lambda: log_problems(remove_tree(root)))
        course = Course(root=root, course_id="cluster")
        release = course.release_dir(package.name)
        release.mkdir(parents=True)
        (release / f"{package.notebook_name}.ipynb").write_text(package.release_notebook,
                                                                 encoding="utf-8")
        hidden = course.hidden_dir(package.name)
        hidden.mkdir(parents=True)
        (hidden / TESTS_FILE).write_bytes(package.tests_source)
        (hidden / PROBES_FILE).write_bytes(package.probes_source)
        (root / SECRET_FILE).write_bytes(package.secret)
        cache[package.fingerprint] = Assignment.load(course, package.name)
    return cache[package.fingerprint]


def grade_on_worker(package: AssignmentPackage, student_id: str, notebook: bytes | None,
                    timestamp: str | None, timeout: float | Budgets,
                    unsafe: bool = False, reason: str | None = None,
                    lms_late: bool = False) -> dict:
    """Runs on a Dask worker: grades the notebook's bytes (None: there is none, `reason`
    says why) on this thread's warm slot."""
    from autograder.engine import grade_submission

    _sweep_once()
    assignment = _unpack(package)
    if getattr(_local, "slot", None) is None:
        _local.slot = _warm_slot()
    _local.slot.unsafe = unsafe
    name = Path(f"{package.notebook_name}.ipynb") if notebook is not None else None
    submission = Submission(student_id, name, timestamp, lms_late=lms_late, reason=reason,
                            content=notebook)
    return grade_submission(assignment, submission, timeout, _local.slot).to_dict()


def _sweep_once() -> None:
    global _swept
    with _server_lock:
        if not _swept:
            _swept = True
            log_problems(sweep_stale())


class ClusterGrading:
    """The Grader's connection to the Dask cluster at `scheduler`: one Client for its life
    (opened on first use), thread-safe. Each assignment version is scattered once."""

    def __init__(self, scheduler: str, budgets: Budgets, unsafe: bool = False) -> None:
        self.scheduler = scheduler
        self.budgets = budgets
        self.unsafe = unsafe
        self._client: Client | None = None
        self._packages: dict[str, tuple[str, Future]] = {}  # name -> (fingerprint, scattered)
        self._in_flight: set[Future] = set()
        self._lock = threading.Lock()

    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                from distributed import Client

                self._client = Client(self.scheduler, set_as_default=False)
            return self._client

    def _package(self, assignment: Assignment) -> Future:
        """The assignment, on every worker: scattered once per version (a new version
        replaces the old one, which the cluster may then forget)."""
        client = self.client()
        with self._lock:
            known = self._packages.get(assignment.name)
            if known is None or known[0] != assignment.fingerprint:
                scattered = client.scatter(AssignmentPackage.of(assignment), broadcast=True)
                known = (assignment.fingerprint, scattered)
                self._packages[assignment.name] = known
            return known[1]

    def submit(self, assignment: Assignment, submission: Submission) -> Future:
        package = self._package(assignment)
        notebook, reason = None, submission.reason
        if submission.notebook is not None:
            try:
                notebook = submission.read()
            except SubmissionError as error:  # that student's notebook only: INVALID, why
                reason = str(error)
        future = self.client().submit(grade_on_worker, package, submission.student_id,
                                      notebook, submission.timestamp, self.budgets,
                                      self.unsafe, reason=reason, lms_late=submission.lms_late,
                                      pure=False)
        with self._lock:
            self._in_flight.add(future)
        return future

    def outcome(self, future: Future, assignment: Assignment,
                submission: Submission) -> SubmissionResult:
        """The task's result; a task that failed (a lost worker, say) costs its submission
        only: 0 and a reason, status ERROR (the grader's fault, not the student's)."""
        from autograder.engine import failed_result

        try:
            return SubmissionResult.from_dict(future.result())
        except Exception as error:
            return failed_result(assignment, submission, error)
        finally:
            with self._lock:
                self._in_flight.discard(future)

    def grade_one(self, assignment: Assignment, submission: Submission) -> SubmissionResult:
        return self.outcome(self.submit(assignment, submission), assignment, submission)

    def grade_many(self, assignment: Assignment,
                   submissions: list[Submission]) -> Iterator[SubmissionResult]:
        """Yield results as the cluster finishes them."""
        from distributed import as_completed

        if not submissions:
            return
        futures: dict[Any, Submission] = {}
        try:
            for submission in submissions:
                futures[self.submit(assignment, submission)] = submission
            # Its loop given: this grader's Client is not the process's default one.
            for future in as_completed(futures, loop=self.client().loop):
                yield self.outcome(future, assignment, futures[future])
        finally:
            pending = [future for future in futures if not future.done()]
            if pending:
                self.client().cancel(pending)

    def cancel(self) -> None:
        """Cancel every task in flight (Ctrl-C)."""
        with self._lock:
            pending, client = list(self._in_flight), self._client
        if pending and client is not None:
            client.cancel(pending)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._packages.clear()
            self._in_flight.clear()
        if client is not None:
            client.close()
