"""Grading on an existing Dask cluster: the same `grade_submission`, run on its workers.

The client sends each worker the assignment once (release notebook, hidden tests, probes: the
cluster is the instructor's, trusted side) and each submission's notebook as bytes; results
come back as plain dicts. Each Dask worker process keeps one warm server, and each of its
threads a slot of it, between submissions.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import nbformat

from autograder.assignment import Assignment
from autograder.course import SECRET_FILE, Course
from autograder.execute.runner import Budgets
from autograder.results import SubmissionResult
from autograder.submissions import Submission
from autograder.tempfiles import log_problems, make_temp_dir, remove_tree, sweep_stale
from autograder.verify.hidden import PROBES_FILE, TESTS_FILE


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


_local = threading.local()  # per Dask worker thread: its warm slot and unpacked assignments
_server_lock = threading.Lock()
_server = None  # per Dask worker process: one warm server, a slot of it per thread
_slots: list = []  # its slots: closed first at exit, so that the server ends at once
_swept = False  # per Dask worker process: what killed workers left, removed before its first task


def _warm_slot():  # -> WarmWorker
    from autograder.execute.warm import WarmServer, WarmWorker

    global _server
    with _server_lock:
        if _server is None:
            _server = WarmServer()
            atexit.register(_close_warm_server)
        slot = WarmWorker(_server)
        _slots.append(slot)
    return slot


def _close_warm_server() -> None:
    """At the worker process's exit, quickly (Dask kills a worker that takes seconds to end,
    and then nothing is cleaned up): the slots first, then the server and its folder."""
    for slot in _slots:
        slot.close()
    _server.close()


def _unpack(package: AssignmentPackage) -> Assignment:
    cache = _local.__dict__.setdefault("assignments", {})
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
    """Runs on a Dask worker."""
    from autograder.engine import grade_submission

    _sweep_once()
    assignment = _unpack(package)
    if getattr(_local, "worker", None) is None:
        _local.worker = _warm_slot()
    _local.worker.unsafe = unsafe
    folder = make_temp_dir("submission")
    try:
        path = None
        if notebook is not None:
            path = folder / f"{package.notebook_name}.ipynb"
            path.write_bytes(notebook)
        submission = Submission(student_id, path, timestamp, lms_late=lms_late, reason=reason)
        return grade_submission(assignment, submission, timeout, _local.worker).to_dict()
    finally:
        log_problems(remove_tree(folder))


def _sweep_once() -> None:
    global _swept
    with _server_lock:
        if not _swept:
            _swept = True
            log_problems(sweep_stale())


def grade_on_cluster(scheduler: str, assignment: Assignment, submissions: list[Submission],
                     timeout: float | Budgets,
                     unsafe: bool = False) -> Iterator[SubmissionResult]:
    """Yield results as the cluster finishes them; a submission whose task fails gets 0."""
    from distributed import Client, as_completed

    from autograder.engine import failed_result

    if not submissions:
        return
    with Client(scheduler) as client:
        package = client.scatter(AssignmentPackage.of(assignment), broadcast=True)
        futures: dict = {}
        for submission in submissions:
            notebook = submission.read() if submission.notebook else None
            future = client.submit(grade_on_worker, package, submission.student_id, notebook,
                                   submission.timestamp, timeout, unsafe,
                                   reason=submission.reason, lms_late=submission.lms_late,
                                   pure=False)
            futures[future] = submission
        try:
            for future in as_completed(futures):
                try:
                    result = SubmissionResult.from_dict(future.result())
                except Exception as error:  # a lost worker, say: this submission only
                    result = failed_result(assignment, futures[future], error)
                yield result
        finally:
            client.cancel(list(futures))
