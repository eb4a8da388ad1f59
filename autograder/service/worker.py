"""`autograder worker`: claims the service's queued jobs and grades them on the long-lived
`Grader` (the warm sandboxed pool, or a Dask cluster), recording each result exactly once.

Every slot stays busy: the worker claims ahead (up to twice as many jobs as the grader has
slots, their leases renewed by the heartbeat thread with the rest), grades each on a slot
thread (`Grader.grade_one` is thread-safe), and hands the result to a recording thread, so a
slot takes its next job at once. The recording thread writes the Results
(`queue.record_many`: those waiting, in one transaction; the record of the grading,
committed first) and passes them on to a second thread for `on_result` (the course's files:
slower, and not what the student waits for); an exception there is logged and the Result
stays. A worker grades a job only with the assignment version (fingerprint) the job names: a
job queued for a version the course no longer has is left queued, for the instructor's
regrade -- except on the course's own machine (`repoint_stale`: serve's embedded worker),
where queued uploads are moved to the course's current version. On SQLite only one worker
may run (a lock on a file beside the database, released by the kernel when the worker dies,
even by kill -9); on PostgreSQL any number.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import queue as queues
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from sqlalchemy import delete, update

from autograder.course import Course
from autograder.errors import UserError
from autograder.grader import Grader
from autograder.results import ERROR, one_line
from autograder.service import queue
from autograder.service.database import Database, DatabaseUnavailable
from autograder.service.models import Job, JobKind, JobState, Result, WorkerLock, utcnow
from autograder.submissions import Submission

log = logging.getLogger(__name__)

STALE_RECHECK_SECONDS = 10.0  # how often a version found stale is looked for again
VERSIONS_REFRESH_SECONDS = 0.25  # how often an idle worker looks for versions it lacks
UNAVAILABLE_PAUSE_SECONDS = 1.0  # between tries while the database cannot be reached
AHEAD = 2  # jobs claimed per slot (one grading, one waiting for the slot)
HELD = 4  # at most this many per slot held at all (graded ones wait to be recorded)
_END = None  # tells a recording thread to finish
BATCH_CAP = 100  # Results handed to `on_results` at once
AFTER_EVERY_SECONDS = 0.5  # on_results at most this often: under load, larger batches
AFTER_NICE = 10  # the on_result thread's nice increment


class WorkerAlreadyRunning(UserError):
    """Another worker already grades from this SQLite database."""


class ServiceWorker:
    """Grades the queue's jobs on `grader`; `run(stop)` until `stop` is set."""

    def __init__(self, db: Database, grader: Grader, name: str | None = None,
                 lease_seconds: float = 30.0, poll_seconds: float = 0.02,
                 on_result: Callable[[Result], None] | None = None,
                 drain_seconds: float = 10.0,
                 on_results: Callable[[list[Result]], None] | None = None,
                 repoint_stale: bool = False) -> None:
        self.db = db
        # repoint_stale: on the machine that holds the course (serve's embedded worker), the
        # course's version IS the current one: uploads queued for an older version are moved
        # to it (`repoint_queued`) rather than stranded. A worker elsewhere may have an older
        # copy of the course, so it only ever grades with the version a job names.
        self.repoint_stale = repoint_stale
        self.grader = grader
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.on_result = on_result
        # on_results: the same, for every Result recorded since the last call at once (the
        # course's files are brought up to date in batches when results come faster than
        # that: one gradebook.db opened for many, rather than one each)
        self.on_results = on_results
        self.drain_seconds = drain_seconds  # on stop: how long jobs in flight may finish
        self._lock_fd = _sqlite_worker_lock(db, self.name)
        self._versions: dict[str, str] = {}  # assignment -> the fingerprint graded with
        self._stale: dict[tuple[str, str], float] = {}  # version -> when found stale
        self._in_flight: dict[int, queue.ClaimedJob] = {}  # held: claimed, not yet recorded
        self._ungraded: set[int] = set()  # claimed, not graded yet (the slots' share)
        self._to_record: queues.Queue = queues.Queue()  # (job, result) from the slots
        self._recorded: queues.Queue = queues.Queue()  # Result rows for on_result
        self._stopping = threading.Event()  # no new grading: claimed-ahead jobs go back
        self._guard = threading.Lock()
        self._wake = threading.Event()  # a job finished: claim again without waiting
        self._abandon = threading.Event()  # stopping now: give jobs back, record nothing
        self._graded = 0

    @property
    def graded(self) -> int:
        """Results this worker has recorded."""
        return self._graded

    # --- life --------------------------------------------------------------------------

    def close(self) -> None:
        """Let another worker start (SQLite) and forget this one's heartbeat."""
        try:
            with self.db.session() as session:
                session.execute(delete(WorkerLock).where(WorkerLock.name == self.name))
        except DatabaseUnavailable:
            pass  # its heartbeat just goes stale
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def __enter__(self) -> ServiceWorker:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def run(self, stop: threading.Event) -> None:
        """Claim and grade until `stop` is set; then let the jobs in flight finish (up to
        `drain_seconds`) and give back the rest."""
        self._serve(stop, until_idle=False)

    def run_until_idle(self, timeout: float = 60) -> int:
        """Grade what is queued (for versions this worker can load) and return how many
        results were recorded. TimeoutError if the queue is not empty after `timeout`."""
        stop = threading.Event()
        timer = threading.Timer(timeout, stop.set)
        timer.daemon = True
        timer.start()
        try:
            graded = self._serve(stop, until_idle=True)
        finally:
            timer.cancel()
        if stop.is_set():
            raise TimeoutError(f"the queue was not empty after {timeout} s "
                               f"({graded} graded meanwhile)")
        return graded

    # --- the loop ------------------------------------------------------------------------

    def _serve(self, stop: threading.Event, until_idle: bool) -> int:
        graded_before = self._graded
        done_beating = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(done_beating,),
                                     name=f"heartbeat {self.name}", daemon=True)
        heartbeat.start()
        executor = ThreadPoolExecutor(self.grader.size, thread_name_prefix="grade")
        self._abandon.clear()
        self._stopping.clear()
        recorders = [threading.Thread(target=self._recording, name=f"record {self.name}",
                                      daemon=True),
                     threading.Thread(target=self._after_recording,
                                      name=f"on-result {self.name}", daemon=True)]
        for thread in recorders:
            thread.start()
        try:
            last_refresh = float("-inf")
            unavailable_since: float | None = None
            while not stop.is_set():
                try:
                    # Idle: nothing in flight (run_until_idle ends when nothing is claimed).
                    idle = until_idle and not self._in_flight_ids()
                    if idle or not self._versions or (
                            time.monotonic() - last_refresh > VERSIONS_REFRESH_SECONDS
                            and not self._busy()):
                        last_refresh = time.monotonic()
                        self._refresh_versions()
                    claimed = self._claim()
                    if unavailable_since is not None:
                        log.warning("worker %s: the database is back", self.name)
                        unavailable_since = None
                except DatabaseUnavailable as error:
                    if unavailable_since is None:
                        unavailable_since = time.monotonic()
                        log.warning("worker %s: %s; trying again", self.name, error)
                    stop.wait(UNAVAILABLE_PAUSE_SECONDS)
                    continue
                for job in claimed:
                    executor.submit(self._grade, job)
                if claimed:
                    continue
                if idle:
                    break
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
        finally:
            self._drain(executor, recorders)
            done_beating.set()
            heartbeat.join()
        return self._graded - graded_before

    def _busy(self) -> bool:
        with self._guard:
            return len(self._ungraded) >= AHEAD * self.grader.size

    def _in_flight_ids(self) -> list[int]:
        with self._guard:
            return list(self._in_flight)

    def _claim(self) -> list[queue.ClaimedJob]:
        """Claim ahead: up to AHEAD jobs per slot not graded yet, so that a slot that ends a
        job finds the next one already here (fewer when results wait to be recorded)."""
        size = self.grader.size
        with self._guard:
            free = min(AHEAD * size - len(self._ungraded), HELD * size - len(self._in_flight))
        if free < 1:
            return []
        claimed = queue.claim(self.db, self.name, dict(self._versions), free,
                              self.lease_seconds)
        with self._guard:
            for job in claimed:
                self._in_flight[job.job_id] = job
                self._ungraded.add(job.job_id)
        return claimed

    def _refresh_versions(self) -> None:
        """Load the versions that waiting jobs name and this worker lacks, if the course has
        them; a version it no longer has is stale (looked at again now and then)."""
        now = time.monotonic()
        for assignment, fingerprint in sorted(queue.waiting_versions(self.db)):
            if self._versions.get(assignment) == fingerprint:
                continue
            found_stale = self._stale.get((assignment, fingerprint))
            if found_stale is not None and now - found_stale < STALE_RECHECK_SECONDS:
                continue
            try:
                self.grader.assignment(assignment, fingerprint)
            except UserError as error:  # StaleAssignment, or the assignment is gone
                current = self._repoint(assignment) if self.repoint_stale else None
                if current is not None:  # its uploads name the current version now
                    self._versions[assignment] = current
                    self._stale[(assignment, fingerprint)] = now  # regrades may still
                    continue
                if found_stale is None:
                    log.warning("worker %s: jobs of %s wait for a regrade: %s", self.name,
                                one_line(assignment, 200), one_line(error))
                self._stale[(assignment, fingerprint)] = now
                continue
            self._stale.pop((assignment, fingerprint), None)
            self._versions[assignment] = fingerprint  # its older jobs are left from now on

    def _repoint(self, assignment: str) -> str | None:
        """Move the assignment's queued uploads to the course's current version, and return
        it; None if the course cannot load it (then they wait, as before)."""
        try:
            current = self.grader.assignment(assignment).fingerprint
        except UserError:
            return None
        moved = repoint_queued(self.db, assignment, current)
        if moved:
            log.warning("worker %s: %d queued upload(s) of %s named an older version of the "
                        "assignment; they are graded with the current one (%s)", self.name,
                        moved, one_line(assignment, 200), current[:12])
        self._stale.pop((assignment, current), None)
        return current

    # --- one job -----------------------------------------------------------------------

    def _grade(self, job: queue.ClaimedJob) -> None:
        recording = False
        try:
            if self._stopping.is_set():  # claimed ahead, never started: give it back
                queue.release(self.db, [job.job_id], self.name)
            else:
                recording = self._grade_job(job)
        except Exception:  # a bug here must not stop the worker; the lease runs out
            log.exception("worker %s: job %s", self.name, job.job_id)
        finally:
            with self._guard:
                self._ungraded.discard(job.job_id)
                if not recording:  # else it is held until the recording thread is done
                    self._in_flight.pop(job.job_id, None)
            self._wake.set()

    def _grade_job(self, job: queue.ClaimedJob) -> bool:
        """Grade one job; True if its result was handed to the recording thread."""
        try:
            assignment = self.grader.assignment(job.assignment, job.fingerprint)
        except UserError:  # the course changed since the claim: leave it for the regrade
            self._stale[(job.assignment, job.fingerprint)] = time.monotonic()
            if self._versions.get(job.assignment) == job.fingerprint:
                del self._versions[job.assignment]
            queue.release(self.db, [job.job_id], self.name)
            return False
        # Only the file's name: it came from the student, and it only names the bytes.
        name = Path(job.filename).name or f"{assignment.notebook_name}.ipynb"
        submission = Submission(job.student_id, Path(name),
                                timestamp=job.submitted_at.isoformat(), content=job.content)
        try:
            result = self.grader.grade_one(assignment, submission)
        except Exception as error:  # the grader's own fault (the student's never raises)
            if self._abandon.is_set():
                queue.release(self.db, [job.job_id], self.name)
                return False
            log.exception("worker %s: grading job %s failed", self.name, job.job_id)
            self._grader_fault(job, f"the grader failed ({type(error).__name__}); the "
                                    "instructor has been told")
            return False
        if self._abandon.is_set():  # cancelled mid-run: the result is not the notebook's
            queue.release(self.db, [job.job_id], self.name)
            return False
        if result.status == ERROR:
            self._grader_fault(job, result.reason)
            return False
        self._to_record.put((job, result))
        return True

    # --- recording (off the slots) -------------------------------------------------------

    def _recording(self) -> None:
        """Write each graded job's Result (the record), in the order graded, those waiting
        together in one transaction; then hand the rows on for `on_result`. Ends at _END,
        once what was queued before it is written."""
        ending = False
        while not ending:
            batch, ending = _take_waiting(self._to_record)
            if batch:
                self._record_batch(batch)
        self._recorded.put(_END)

    def _record_batch(self, batch: list[tuple[queue.ClaimedJob, object]]) -> None:
        try:
            rows = self._record(batch)
            for (job, _), row in zip(batch, rows, strict=True):
                if row is None:
                    log.warning("worker %s: job %s was taken over (lease lost); its result "
                                "was not recorded here", self.name, job.job_id)
                    continue
                with self._guard:
                    self._graded += 1
                self._recorded.put(row)
        except Exception:  # unreachable database past the lease: another worker grades them
            log.exception("worker %s: recording jobs %s", self.name,
                          ", ".join(str(job.job_id) for job, _ in batch))
        finally:
            with self._guard:
                for job, _ in batch:
                    self._in_flight.pop(job.job_id, None)
            self._wake.set()

    def _after_recording(self) -> None:
        """`on_results` for the Results recorded since its last call (`on_result` for each);
        a failure is logged, the Results stay. This thread runs at a lower CPU priority
        (nice +AFTER_NICE): on a busy machine grading the queue comes first; the course's
        files follow in larger batches, which cost less each."""
        try:  # Linux: a thread's own nice value (its id is a task id)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), AFTER_NICE)
        except OSError:
            pass
        ending = False
        while not ending:
            rows, ending = _take_waiting(self._recorded)
            began = time.monotonic()
            if not rows:
                continue
            try:
                if self.on_results is not None:
                    self.on_results(rows)
                if self.on_result is not None:
                    for row in rows:
                        self.on_result(row)
            except Exception:  # the result is recorded; what follows it must not undo that
                log.exception("worker %s: after jobs %s", self.name,
                              ", ".join(str(row.job_id) for row in rows))
            # Each call has a cost of its own (gradebook.db opened, its rows read): while
            # results keep coming, the next call takes all that came meanwhile.
            self._stopping.wait(AFTER_EVERY_SECONDS - (time.monotonic() - began))

    def _record(self, batch: list[tuple[queue.ClaimedJob, object]]) -> list[Result | None]:
        """Record, trying again while the database is briefly out of reach (until the lease
        would have run out: then another worker grades them again anyway)."""
        deadline = time.monotonic() + self.lease_seconds
        graded = [(job.job_id, result) for job, result in batch]
        retrying = False
        while True:
            try:
                return queue.record_many(self.db, graded, self.name, retrying)
            except DatabaseUnavailable:
                retrying = True  # its commit may have gone through, unanswered
                if time.monotonic() > deadline or self._abandon.is_set():
                    raise
                time.sleep(UNAVAILABLE_PAUSE_SECONDS / 4)

    def _grader_fault(self, job: queue.ClaimedJob, reason: str) -> None:
        """Try again (on the next claim, maybe by another worker), up to MAX_ATTEMPTS; then
        FAILED, and the student is not charged."""
        if job.attempts >= queue.MAX_ATTEMPTS:
            queue.fail(self.db, job.job_id, self.name, reason)
        else:
            queue.release(self.db, [job.job_id], self.name, count_attempt=True)

    # --- background ----------------------------------------------------------------------

    def _heartbeat(self, done: threading.Event) -> None:
        """Renew the leases of the jobs in flight, well before they run out."""
        interval = max(0.05, self.lease_seconds / 3)
        while not done.wait(interval):
            try:
                ids = self._in_flight_ids()
                held = queue.renew(self.db, self.name, ids, self.lease_seconds)
                # Not renewed and still held here: lost (not one recorded meanwhile)
                for lost in (set(ids) - held) & set(self._in_flight_ids()):
                    log.warning("worker %s: lost the lease of job %s", self.name, lost)
                with self.db.session() as session:
                    session.merge(WorkerLock(name=self.name, heartbeat_at=utcnow()))
            except DatabaseUnavailable as error:
                log.warning("worker %s: cannot renew leases: %s", self.name, error)
            except Exception:  # keep beating: a missed renewal only risks a second grading
                log.exception("worker %s: heartbeat", self.name)

    def _drain(self, executor: ThreadPoolExecutor, recorders: list[threading.Thread]) -> None:
        """Stop: jobs claimed ahead and not started go back to the queue; the jobs being
        graded may finish (and be recorded) for `drain_seconds`; then they are cancelled and
        given back (not counted as attempts). `on_result` has run for every Result written
        when this returns."""
        self._stopping.set()
        deadline = time.monotonic() + self.drain_seconds
        while self._in_flight_ids() and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
        if self._in_flight_ids():
            self._abandon.set()
            self.grader.cancel()
        executor.shutdown(wait=True)
        self._to_record.put(_END)  # what was graded before the cancel is still recorded
        for thread in recorders:
            thread.join()
        left = self._in_flight_ids()
        if left:
            try:
                queue.release(self.db, left, self.name)
            except DatabaseUnavailable:
                pass  # their leases run out instead


def _take_waiting(waiting: queues.Queue) -> tuple[list, bool]:
    """The next item (waiting for it) and whatever else is waiting (not waiting for more), up
    to BATCH_CAP; and whether _END came (nothing put after it is taken)."""
    items = [waiting.get()]
    while len(items) < BATCH_CAP and items[-1] is not _END:
        try:
            items.append(waiting.get_nowait())
        except queues.Empty:
            break
    if items[-1] is _END:
        return items[:-1], True
    return items, False


def repoint_queued(db: Database, assignment: str, fingerprint: str) -> int:
    """The assignment's queued (never leased) uploads that name another version now name
    `fingerprint`, in one UPDATE; how many. An ungraded upload is graded by the current
    tests. Regrade jobs keep theirs: a regrade is of the version its instructor asked for."""
    with db.session() as session:
        return session.execute(
            update(Job).where(Job.assignment == assignment, Job.state == JobState.QUEUED,
                              Job.kind == JobKind.SUBMIT, Job.fingerprint != fingerprint)
            .values(fingerprint=fingerprint)).rowcount


def course_sync_batch(course: Course, db: Database,
                      grader: Grader | None = None) -> Callable[[list[Result]], None]:
    """`on_results` for the worker on the course's machine: the students of these Results
    have their course files (submitted/, autograded/, feedback/, gradebook.db) brought up to
    date together (course_sync's pending set: one gradebook.db opened for the batch), with
    the assignments `grader` has loaded (not read again for each batch).
    Never raises; a student who could not be written is tried again with the next batch."""
    from autograder.service import course_sync

    load = grader.assignment if grader is not None else None

    def sync(results: list[Result]) -> None:
        course_sync.mark_pending(course, db, sorted({(row.assignment, row.student_id)
                                                     for row in results}))
        course_sync.retry_pending(course, db, load=load)

    return sync


def _sqlite_worker_lock(db: Database, name: str) -> int | None:
    """SQLite: one worker. A lock on `<database>.worker-lock`, held while this worker lives:
    the kernel drops it when the process ends, however it ends."""
    path = db.sqlite_path
    if path is None:
        return None
    lock = path.with_name(path.name + ".worker-lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip()
        os.close(fd)
        raise WorkerAlreadyRunning(
            f"another worker ({one_line(holder, 200) or 'unknown'}) already grades from "
            f"{path}: a SQLite database has one worker (`serve` runs one itself). Stop it, "
            "or use PostgreSQL (c.Service.database_url) for more workers") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, name.encode(), 0)
    return fd


def run_worker_command(args: argparse.Namespace) -> int:
    """`autograder worker`: grade until SIGTERM or Ctrl-C."""
    from autograder.course import Course
    from autograder.service.settings import check_course_settings

    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    course = Course.load(args.course)
    settings = check_course_settings(course)  # a typo stops the start, in one line
    _check_secret(course)
    db = Database.for_course(course, args.database)
    print(f"autograder worker: database {db.describe()}", file=sys.stderr, flush=True)
    try:
        db.upgrade()
    except DatabaseUnavailable as error:
        raise UserError(str(error)) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Grader(course, workers=args.workers, scheduler=args.scheduler) as grader, \
            ServiceWorker(db, grader, lease_seconds=settings.lease_seconds,
                          poll_seconds=settings.poll_seconds,
                          on_result=_print_result) as worker:
        grader.launch()
        print(f"worker {worker.name}: grading the queue of {db.describe()} on {grader.size} "
              "slots (stop: Ctrl-C or SIGTERM)", flush=True)
        worker.run(stop)
        print(f"worker {worker.name}: stopped, {worker.graded} graded", flush=True)
    db.dispose()
    return 0


def _check_secret(course: Course) -> None:
    """A worker on another machine would otherwise make a secret of its own, and grade with
    unseen inputs other than the course's (each student's differ from what serve's worker
    draws): refused until the course's is copied."""
    from autograder.course import SECRET_FILE

    path = course.root / SECRET_FILE
    if not path.is_file():
        raise UserError(f"{path}: no course secret here: copy {SECRET_FILE} from the course's "
                        "machine (readable by the worker's user only): without it the unseen "
                        "inputs differ (on the course's machine, `autograder release` makes it)")


def _print_result(result: Result) -> None:
    print(f"graded {result.submission_id} ({one_line(result.student_id, 100)}, "
          f"{one_line(result.assignment, 100)}): {result.score:g}/{result.max_score:g} "
          f"{result.status} in {result.seconds:.2f} s", file=sys.stdout, flush=True)
