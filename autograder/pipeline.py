"""Grade many submissions at once, where configuration says: the embedded pool of warm
workers, or an existing Dask cluster. Each notebook is graded by `autograder.engine`; each
result is handed to `on_result` as soon as it exists, so the caller can store it before moving
on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from autograder.assignment import Assignment
from autograder.engine import grade_submission
from autograder.execute.runner import Budgets
from autograder.execute.warm import WarmPool
from autograder.results import SubmissionResult
from autograder.submissions import Submission


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def grade_batch(assignment: Assignment, submissions: Iterable[Submission],
                timeout: float | Budgets,
                workers: int | None = None,
                on_result: Callable[[SubmissionResult], None] | None = None,
                scheduler: str | None = None,
                pool: WarmPool | None = None, unsafe: bool = False) -> list[SubmissionResult]:
    """Grade all; `on_result` runs in this thread as each one finishes. Where they run is
    configuration: the embedded pool of `workers` warm workers, or the Dask cluster at
    `scheduler` (each of its worker threads keeps a warm worker) -- the same grade_submission
    either way. A caller that keeps warm workers between batches (a service) passes its
    `pool`, which it also closes; otherwise one is started and closed here. Unless `unsafe`,
    a local pool refuses to start (UnsafeSandboxError) where a layer protecting the grader
    itself is off."""
    if scheduler:
        from autograder.cluster import grade_on_cluster

        finished = grade_on_cluster(scheduler, assignment, list(submissions), timeout, unsafe)
    else:
        finished = _grade_on_local_pool(assignment, list(submissions), timeout,
                                        workers or default_workers(), pool, unsafe)
    results = []
    try:
        for result in finished:
            if on_result is not None:
                on_result(result)
            results.append(result)
    finally:
        finished.close()  # on Ctrl-C or a failing store: stop now, drop what is queued
    return sorted(results, key=lambda result: result.student_id)


def _grade_on_local_pool(assignment: Assignment, submissions: list[Submission],
                         timeout: float | Budgets, size: int, pool: WarmPool | None,
                         unsafe: bool = False) -> Iterator[SubmissionResult]:
    def grade_one(submission: Submission) -> SubmissionResult:
        with warm.worker() as worker:
            return grade_submission(assignment, submission, timeout, worker)

    if not submissions:
        return
    warm = pool or WarmPool(size, unsafe=unsafe)
    threads = ThreadPoolExecutor(max_workers=warm.size)
    try:
        warm.start()
        futures = [threads.submit(grade_one, submission) for submission in submissions]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:  # Ctrl-C, or the consumer stopped: end the jobs in flight now
        warm.cancel()
        raise
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
        if pool is None:
            warm.close()  # jobs in flight end at once, as crashes nobody reads
        threads.shutdown(wait=True)
