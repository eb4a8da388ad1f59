"""Pushed results for the HTTP process: `GET /api/submissions/{id}?wait=S` long-polls here.

One shared poller per HTTP process, not one query loop per waiting request: while anyone waits,
a daemon thread asks the database every `tick` seconds one cheap indexed question -- which
results were written since the last one it saw (`Result.id > last`, the primary key), and which
jobs at or above the oldest waiting job failed (`ix_job_claim`: state, id) -- and wakes the
waiters of those submissions (an `asyncio.Event` each, set on their event loop). Nobody waiting:
it sleeps and asks nothing.

A safety net covers what `Result.id > last` can miss: on PostgreSQL with several workers, ids
are taken in one order and committed in another, so a result may appear below `last`. Every
`sweep` seconds the poller also asks for the waiting submissions' jobs that ended (one IN
query), so such a waiter is woken within `sweep`, not at the end of its wait.

The poller is a thread rather than an asyncio task because the database layer is synchronous:
a task would hand every tick to a worker thread anyway.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import func, literal, select, union_all

from autograder.service.database import Database, DatabaseUnavailable
from autograder.service.models import Job, JobState, Result

log = logging.getLogger(__name__)

TICK_SECONDS = 0.02
SWEEP_SECONDS = 1.0
SWEEP_CAP = 500  # waiting ids per IN query


@dataclass(eq=False)
class Waiter:
    """One request waiting for one submission's job to end."""

    submission_id: str
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    job_id: int | None = None  # its job, once the route has read it (for failed jobs)

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class ResultWaiters:
    """The HTTP process's waiters and the one poller that wakes them."""

    def __init__(self, db: Database, tick: float = TICK_SECONDS,
                 sweep: float = SWEEP_SECONDS) -> None:
        self.db = db
        self.tick = tick
        self.sweep = sweep
        self.queries = 0  # issued by the poller (tests count them)
        self.ticks = 0
        self._waiters: dict[str, set[Waiter]] = {}
        self._lock = threading.Lock()
        self._someone = threading.Event()  # someone waits: poll
        self._last: int | None = None  # the highest Result.id seen
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # --- the routes' side ------------------------------------------------------------------

    def start(self) -> None:
        """Read where the results are now, then poll from there (idempotent). Called before a
        waiter reads its status, so that a result written after that read is one the poller
        sees (its id is above `last`)."""
        with self._lock:
            if self._thread is not None:
                return
            self._last = self._max_result_id()
            self._thread = threading.Thread(target=self._run, name="result-poller",
                                            daemon=True)
            self._thread.start()

    def add(self, submission_id: str, loop: asyncio.AbstractEventLoop) -> Waiter:
        waiter = Waiter(submission_id, loop)
        with self._lock:
            self._waiters.setdefault(submission_id, set()).add(waiter)
            self._someone.set()
        return waiter

    def remove(self, waiter: Waiter) -> None:
        with self._lock:
            same = self._waiters.get(waiter.submission_id)
            if same is not None:
                same.discard(waiter)
                if not same:
                    del self._waiters[waiter.submission_id]
            if not self._waiters:
                self._someone.clear()

    def waiting(self) -> int:
        with self._lock:
            return sum(len(each) for each in self._waiters.values())

    def close(self) -> None:
        self._stopped.set()
        self._someone.set()

    # --- the poller ------------------------------------------------------------------------

    def _max_result_id(self) -> int:
        with self.db.session(readonly=True) as session:
            self.queries += 1
            return int(session.execute(select(func.max(Result.id))).scalar_one() or 0)

    def _run(self) -> None:
        last_sweep = time.monotonic()
        while not self._stopped.is_set():
            self._someone.wait()
            if self._stopped.is_set():
                return
            self.ticks += 1
            try:
                ended = self._poll()
                if time.monotonic() - last_sweep >= self.sweep:
                    last_sweep = time.monotonic()
                    ended |= self._sweep()
            except DatabaseUnavailable as error:  # the waits end at their deadline instead
                log.warning("result poller: %s", error)
                self._stopped.wait(1.0)
                continue
            except Exception:  # a bug must not end the poller: waits end at their deadline
                log.exception("result poller")
                self._stopped.wait(1.0)
                continue
            if ended:
                with self._lock:
                    woken = [waiter for sid in ended for waiter in self._waiters.get(sid, ())]
                for waiter in woken:
                    waiter.wake()
            self._stopped.wait(self.tick)

    def _poll(self) -> set[str]:
        """One query: results above `last`, and failed jobs at or above the oldest waiting
        job. The submissions they end."""
        with self._lock:
            job_ids = [w.job_id for each in self._waiters.values() for w in each
                       if w.job_id is not None]
        last = self._last or 0
        results = select(Result.id, Result.submission_id).where(Result.id > last)
        if job_ids:
            failed = (select(literal(0).label("id"), Job.submission_id)
                      .where(Job.state == JobState.FAILED, Job.id >= min(job_ids)))
            query = union_all(results, failed)
        else:
            query = results
        with self.db.session(readonly=True) as session:
            self.queries += 1
            rows = session.execute(query).all()
        if rows:
            self._last = max(last, *(row[0] for row in rows))
        return {row[1] for row in rows}

    def _sweep(self) -> set[str]:
        """The waiting submissions whose job ended, however the poll missed it."""
        with self._lock:
            waiting = list(self._waiters)
        ended: set[str] = set()
        for chunk in _chunks(waiting, SWEEP_CAP):
            with self.db.session(readonly=True) as session:
                self.queries += 1
                ended.update(session.execute(
                    select(Job.submission_id).where(
                        Job.submission_id.in_(chunk),
                        Job.state.in_([JobState.DONE, JobState.FAILED]))).scalars())
        return ended


def _chunks(items: list[str], size: int) -> list[list[str]]:
    iterator = iter(items)
    return [chunk for chunk in iter(lambda: list(itertools.islice(iterator, size)), [])]
