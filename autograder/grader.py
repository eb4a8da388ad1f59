"""The one seam every way of grading goes through: a long-lived `Grader` that owns the warm
sandboxed pool (or the Dask client) and the loaded assignments.

The command line's `grade` (and formgrader's Autograde button, through it) makes one for a
run; the service's worker keeps one for its life and grades each claimed job with
`grade_one`, from as many threads as the grader has slots. Every path grades with
`autograder.engine.grade_submission`; only where the job runs differs, and that is
configuration: a local pool of warm slots, a Dask cluster (`scheduler`), or for tests
executors made by a factory (`execute.fake.FakeExecutor`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from types import TracebackType

from autograder.assignment import Assignment
from autograder.cluster import ClusterGrading
from autograder.course import Course
from autograder.engine import grade_submission
from autograder.errors import UserError
from autograder.execute.executor import Executor
from autograder.execute.runner import Budgets
from autograder.execute.warm import WarmPool
from autograder.files import change_stamp
from autograder.results import SubmissionResult
from autograder.submissions import Submission
from autograder.verify.hidden import PROBES_FILE, TESTS_FILE


def default_workers() -> int:
    """How many submissions a machine grades at once by default: one per core."""
    return max(1, os.cpu_count() or 1)


class StaleAssignment(UserError):
    """A job names a version (fingerprint) of an assignment that the course no longer has:
    the release or the hidden tests changed since it was queued."""


class ExecutorSlots:
    """`size` executors made by a factory, shared by the grading threads as the warm pool's
    slots are (one job at a time each). Their launch/start/cancel/close, where they have
    them, are called as the pool's."""

    def __init__(self, factory: Callable[[], Executor], size: int) -> None:
        self._executors = [factory() for _ in range(size)]
        self._idle: queue.SimpleQueue[Executor] = queue.SimpleQueue()
        for executor in self._executors:
            self._idle.put(executor)

    @property
    def size(self) -> int:
        return len(self._executors)

    @contextmanager
    def slot(self) -> Iterator[Executor]:
        executor = self._idle.get()
        try:
            yield executor
        finally:
            self._idle.put(executor)

    def _each(self, method: str) -> None:
        for executor in self._executors:
            action = getattr(executor, method, None)
            if callable(action):
                action()

    def launch(self) -> None:
        self._each("launch")

    def start(self) -> None:
        self._each("start")

    def cancel(self) -> None:
        self._each("cancel")

    def close(self) -> None:
        self._each("close")


class Grader:
    """Grades submissions of a course's assignments, on `workers` warm slots of this machine,
    on the Dask cluster at `scheduler` (default: the course's c.Autograder.scheduler), or on
    executors made by `executors` (tests: no sandbox, no process). Thread-safe: `grade_one`
    may be called from any number of threads; `size` of them grade at once, the others wait
    for a slot (on Dask, the cluster queues them).

    Unless `unsafe`, the local pool refuses to start (UnsafeSandboxError, from `start`, or the
    first grade) where a sandbox layer protecting the grader itself is off."""

    def __init__(self, course: Course, workers: int | None = None,
                 scheduler: str | None = None, timeout: float | None = None,
                 unsafe: bool = False,
                 executors: Callable[[], Executor] | None = None) -> None:
        self.course = course
        self.unsafe = unsafe
        self.budgets = Budgets(notebook=timeout or course.timeout,
                               locked_cell=course.locked_cell_timeout,
                               probe=course.probe_timeout)
        self._size = workers or default_workers()
        # Injected executors are local by definition: a fake cannot be sent to a cluster.
        self.scheduler = None if executors is not None else (scheduler or course.scheduler)
        self.pool: WarmPool | ExecutorSlots | None = None
        self.cluster: ClusterGrading | None = None
        if executors is not None:
            self.pool = ExecutorSlots(executors, self._size)
        elif self.scheduler:
            self.cluster = ClusterGrading(self.scheduler, self.budgets, unsafe)
        else:
            self.pool = WarmPool(self._size, unsafe=unsafe)
        self._assignments: dict[str, tuple[tuple, Assignment]] = {}  # name -> (files, loaded)
        self._lock = threading.Lock()
        self._started = False

    @property
    def size(self) -> int:
        """How many submissions it grades at once (on Dask: as many as asked; the cluster
        decides)."""
        return self.pool.size if self.pool is not None else self._size

    def launch(self) -> None:
        """Start warming up without waiting (the first job waits for what is left)."""
        if self.pool is not None:
            self.pool.launch()

    def start(self) -> None:
        """Warm up now (about 2 s; once): the local pool's slots, or the cluster's client."""
        with self._lock:
            if self._started:
                return
            if self.pool is not None:
                self.pool.start()
            elif self.cluster is not None:
                self.cluster.client()
            self._started = True

    def cancel(self) -> None:
        """End the jobs in flight at once and start no more (Ctrl-C): the grader is done."""
        if self.pool is not None:
            self.pool.cancel()
        if self.cluster is not None:
            self.cluster.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def assignment(self, name: str, fingerprint: str | None = None) -> Assignment:
        """The assignment as the course has it now: loaded once, and again when a file it is
        made of (the release notebook, probes.py, tests.py) changed since -- a few stat calls
        each time, so a long-lived grader never grades with a version the course no longer
        has. With `fingerprint`, that version, or StaleAssignment."""
        with self._lock:
            files = self._files_of(name)
            cached = self._assignments.get(name)
            if cached is None or cached[0] != files:
                assignment = Assignment.load(self.course, name)
                _ = assignment.fingerprint  # now, from the files just loaded (cached property)
                cached = (files, assignment)
                self._assignments[name] = cached
            loaded = cached[1]
        if fingerprint is not None and loaded.fingerprint != fingerprint:
            raise StaleAssignment(f"{name}: the job was queued for version {fingerprint[:12]}, "
                                  f"the course now has {loaded.fingerprint[:12]}")
        return loaded

    def _files_of(self, name: str) -> tuple:
        """What tells a change of the assignment's files without reading them."""
        hidden = self.course.hidden_dir(name)
        paths = [*sorted(self.course.release_dir(name).glob("*.ipynb")),
                 hidden / PROBES_FILE, hidden / TESTS_FILE]
        # (a file not there: None, and Assignment.load says what is wrong)
        return tuple((str(path), change_stamp(path)) for path in paths)

    def grade_one(self, assignment: Assignment, submission: Submission) -> SubmissionResult:
        """Grade one submission now, on a free slot (waiting for one). Never raises for
        anything the student did; a fault of the grader's own gives status ERROR."""
        self.start()
        if self.cluster is not None:
            return self.cluster.grade_one(assignment, submission)
        with self.pool.slot() as executor:
            return grade_submission(assignment, submission, self.budgets, executor)

    def grade_many(self, assignment: Assignment, submissions: Iterable[Submission],
                   on_result: Callable[[SubmissionResult], None] | None = None
                   ) -> list[SubmissionResult]:
        """Grade a batch, `size` at once, handing each result to `on_result` (in this thread)
        as soon as it exists, so that the caller stores it before going on. Returns them all,
        by student. A batch stopped midway (Ctrl-C, an `on_result` that raises) ends the jobs
        in flight at once: the grader is then done."""
        submissions = list(submissions)
        if not submissions:
            return []
        self.start()  # here, so that UnsafeSandboxError reaches the caller
        finished = (self.cluster.grade_many(assignment, submissions)
                    if self.cluster is not None else self._grade_here(assignment, submissions))
        results = []
        try:
            for result in finished:
                if on_result is not None:
                    on_result(result)
                results.append(result)
        finally:
            finished.close()  # on Ctrl-C or a failing store: stop now, drop what is queued
        return sorted(results, key=lambda result: result.student_id)

    def _grade_here(self, assignment: Assignment,
                    submissions: list[Submission]) -> Iterator[SubmissionResult]:
        threads = ThreadPoolExecutor(max_workers=self.size)
        try:
            futures = [threads.submit(self.grade_one, assignment, submission)
                       for submission in submissions]
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # Ctrl-C, or the consumer stopped: end the jobs in flight now
            self.cancel()
            raise
        finally:
            threads.shutdown(wait=True, cancel_futures=True)
