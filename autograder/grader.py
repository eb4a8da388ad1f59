"""The one seam every way of grading goes through: a long-lived `Grader` that owns the warm
sandboxed pool (or the Dask client) and the loaded assignments.

The command line's `grade` makes one for a run; the service's worker keeps one for its life and
grades each claimed job with `grade_one`, from as many threads as the grader has slots. Both
grade with `autograder.engine.grade_submission`; only where it runs differs (configuration).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType

from autograder.assignment import Assignment
from autograder.course import Course
from autograder.engine import grade_submission
from autograder.errors import UserError
from autograder.execute.runner import Budgets
from autograder.execute.warm import WarmPool
from autograder.pipeline import default_workers, grade_batch
from autograder.results import SubmissionResult
from autograder.submissions import Submission


class StaleAssignment(UserError):
    """A job names a version (fingerprint) of an assignment that the course no longer has:
    the release or the hidden tests changed since it was queued."""


class Grader:
    """Grades submissions of a course's assignments, on `workers` warm slots of this machine,
    or on the Dask cluster at `scheduler`. Thread-safe: `grade_one` may be called from up to
    `size` threads at once (more wait for a slot)."""

    def __init__(self, course: Course, workers: int | None = None,
                 scheduler: str | None = None, timeout: float | None = None,
                 unsafe: bool = False) -> None:
        self.course = course
        self.scheduler = scheduler if scheduler is not None else course.scheduler
        self.unsafe = unsafe
        self.budgets = Budgets(notebook=timeout or course.timeout,
                               locked_cell=course.locked_cell_timeout,
                               probe=course.probe_timeout)
        self._size = workers or default_workers()
        self.pool: WarmPool | None = None if self.scheduler else WarmPool(self._size,
                                                                           unsafe=unsafe)
        self._assignments: dict[str, Assignment] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """How many submissions it grades at once."""
        return self.pool.size if self.pool is not None else self._size

    def launch(self) -> None:
        """Start warming up without waiting (the first job waits for what is left)."""
        if self.pool is not None:
            self.pool.launch()

    def start(self) -> None:
        """Warm up now (about 2 s)."""
        if self.pool is not None:
            self.pool.start()

    def cancel(self) -> None:
        """End the jobs in flight at once (Ctrl-C)."""
        if self.pool is not None:
            self.pool.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def assignment(self, name: str, fingerprint: str | None = None) -> Assignment:
        """The assignment as the course has it now (loaded once, loaded again when its release
        or hidden tests change). With `fingerprint`, that version or StaleAssignment."""
        with self._lock:
            loaded = self._assignments.get(name)
            if loaded is None or (fingerprint is not None and loaded.fingerprint != fingerprint):
                loaded = Assignment.load(self.course, name)
                self._assignments[name] = loaded
        if fingerprint is not None and loaded.fingerprint != fingerprint:
            raise StaleAssignment(f"{name}: the job was queued for version {fingerprint[:12]}, "
                                  f"the course now has {loaded.fingerprint[:12]}")
        return loaded

    def grade_one(self, assignment: Assignment, submission: Submission) -> SubmissionResult:
        """Grade one submission now, on a free slot (waiting for one). Never raises for
        anything the student did."""
        if self.pool is None:
            return grade_batch(assignment, [submission], self.budgets,
                               scheduler=self.scheduler, unsafe=self.unsafe)[0]
        with self.pool.worker() as worker:
            return grade_submission(assignment, submission, self.budgets, worker)

    def grade_many(self, assignment: Assignment, submissions: Iterable[Submission],
                   on_result: Callable[[SubmissionResult], None] | None = None
                   ) -> list[SubmissionResult]:
        """Grade a batch, handing each result to `on_result` (in this thread) as it exists."""
        return grade_batch(assignment, submissions, self.budgets, self._size,
                           on_result=on_result, scheduler=self.scheduler, pool=self.pool,
                           unsafe=self.unsafe)
