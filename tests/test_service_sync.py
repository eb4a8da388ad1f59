"""The course's files follow the service's database: after the service grades students,
`nbgrader export`, our gradebook and the files formgrader reads show the database's scores, for
the submission that counts (last or best); a busy course never takes the worker down."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from conftest import make_course, nbgrader_export

from autograder.author import with_answers
from autograder.course import Course
from autograder.grader import Grader
from autograder.lock import course_lock
from autograder.results import SubmissionResult
from autograder.scores import final_scores
from autograder.service import course_sync
from autograder.service.models import Result
from autograder.submissions import Submission

# --- Test helpers shared with tests/test_service_instructor.py -------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def open_database(url: str):  # noqa: ANN201 (autograder.service.database.Database)
    from autograder.service.database import Database

    db = Database(url)
    db.upgrade()
    return db


def notebook_bytes(release_notebook, answers: dict[str, str]) -> bytes:  # noqa: ANN001
    return nbformat.writes(with_answers(release_notebook, answers)).encode("utf-8")


@pytest.fixture(scope="module")
def graded_notebooks(course: Course, release_notebook, solution):  # noqa: ANN001, ANN201
    return grade_notebooks(course, release_notebook, solution)


def grade_notebooks(course: Course, release_notebook, solution):  # noqa: ANN001, ANN201
    """Three notebooks, graded for real once: {name: (bytes, SubmissionResult as JSON)}."""
    broken = "def chain_rule(x_value):\n    raise NotImplementedError\n"
    notebooks = {
        "full": notebook_bytes(release_notebook, solution),
        "partial": notebook_bytes(release_notebook, {**solution, "chain_rule": broken}),
        "blank": nbformat.writes(release_notebook).encode("utf-8"),
    }
    graded = {}
    with Grader(course, workers=2) as grader:
        assignment = grader.assignment("backprop")
        for name, content in notebooks.items():
            result = grader.grade_one(assignment, Submission(
                name, notebook=Path("backprop.ipynb"), timestamp=T0.isoformat(),
                content=content))
            graded[name] = (content, result.to_json())
    full, partial, blank = (SubmissionResult.from_json(graded[n][1]).score
                            for n in ("full", "partial", "blank"))
    assert full > partial > blank  # the three tell best from last apart
    return graded


def store_graded(db, student: str, graded: tuple[bytes, str], at: datetime,  # noqa: ANN001
                 published: bool = True, kind: str = "submit",
                 submission_id: str | None = None, regrade_id: int | None = None) -> Result:
    """A submission graded by the service, as the queue leaves it: Submission, its Job done,
    its Result (with the service's models). With `submission_id`: another result of that
    submission (a regrade)."""
    import hashlib
    import uuid

    from autograder.service.models import Job, JobState, Person, Submission

    content, result_json = graded
    result = SubmissionResult.from_json(result_json)
    result.student_id = student
    with db.session() as session:
        if session.get(Person, student) is None:
            session.add(Person(id=student, role="student", name=f"Student {student}"))
            session.flush()
        if submission_id is None:
            submission_id = uuid.uuid4().hex
            session.add(Submission(id=submission_id, student_id=student, assignment="backprop",
                                   filename="backprop.ipynb", content=content,
                                   sha256=hashlib.sha256(content).hexdigest(),
                                   size=len(content), submitted_at=at))
            session.flush()
        job = Job(submission_id=submission_id, kind=kind, assignment="backprop",
                  fingerprint="f" * 64, state=JobState.DONE, finished_at=at,
                  regrade_id=regrade_id)
        session.add(job)
        session.flush()
        row = Result(job_id=job.id, submission_id=submission_id, student_id=student,
                     assignment="backprop", status=result.status, score=result.score,
                     max_score=result.max_score, seconds=result.seconds,
                     result_json=result.to_json(), graded_at=at, published=published)
        session.add(row)
        session.flush()
        session.refresh(row)
        session.expunge(row)
        return row


def set_counts(root: Path, counts: str) -> Course:
    with (root / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.AssignmentPolicy.counts = {counts!r}\n")
    return Course.load(root)


@pytest.fixture
def fresh_course(tmp_path: Path) -> Course:
    (tmp_path / "course").mkdir()
    return make_course(tmp_path / "course")


# --- The tests ---------------------------------------------------------------------------------

def test_nbgrader_export_and_gradebook_show_the_database_scores(
        fresh_course: Course, database_url: str, graded_notebooks, tmp_path: Path) -> None:
    db = open_database(database_url)
    try:
        rows = {student: store_graded(db, student, graded_notebooks[name],
                                      T0 + timedelta(minutes=i))
                for i, (student, name) in enumerate([("10001", "full"), ("10002", "partial"),
                                                     ("10003", "blank")])}
        report = course_sync.sync_all(fresh_course, db, "backprop")
        assert sorted(report.written) == ["10001", "10002", "10003"] and not report.failed
        exported = nbgrader_export(fresh_course, tmp_path / "export")
        ours = {row.student_id: row.score for row in final_scores(fresh_course, "backprop")}
        for student, row in rows.items():
            assert float(exported[student]["score"]) == pytest.approx(row.score)
            assert ours[student] == pytest.approx(row.score)
            folder = fresh_course.submitted_dir(student, "backprop")
            content = graded_notebooks[{"10001": "full", "10002": "partial",
                                        "10003": "blank"}[student]][0]
            assert (folder / "backprop.ipynb").read_bytes() == content  # the exact bytes
            assert (folder / "timestamp.txt").read_text() == \
                course_sync.nbgrader_time(row.graded_at)
            assert (fresh_course.autograded_dir(student, "backprop") / "backprop.ipynb").is_file()
            assert (fresh_course.feedback_dir(student, "backprop")).is_dir()
        # Nothing changed: the second run writes nothing (one marker read per student).
        again = course_sync.sync_all(fresh_course, db, "backprop")
        assert again.written == [] and again.unchanged == 3
    finally:
        db.dispose()


@pytest.mark.parametrize("counts", ["last", "best"])
def test_the_counted_submission_is_last_or_best(tmp_path: Path, graded_notebooks,
                                                counts: str, database_url: str) -> None:
    root = tmp_path / "course"
    root.mkdir()
    course = set_counts(make_course(root).root, counts)
    db = open_database(database_url)
    try:
        first = store_graded(db, "10001", graded_notebooks["full"], T0)
        later = store_graded(db, "10001", graded_notebooks["partial"], T0 + timedelta(hours=1))
        assert course_sync.sync_result(course, db, later) is True
        counted = first if counts == "best" else later
        name = "full" if counts == "best" else "partial"
        exported = nbgrader_export(course, tmp_path / "export")
        assert float(exported["10001"]["score"]) == pytest.approx(counted.score)
        assert (course.submitted_dir("10001", "backprop") / "backprop.ipynb").read_bytes() \
            == graded_notebooks[name][0]
        # A third, worse submission: under "best" nothing is written again.
        worst = store_graded(db, "10001", graded_notebooks["blank"], T0 + timedelta(hours=2))
        course_sync.sync_result(course, db, worst)
        expected = first.score if counts == "best" else worst.score
        assert float(nbgrader_export(course, tmp_path / "export2")["10001"]["score"]) == \
            pytest.approx(expected)
    finally:
        db.dispose()


def test_an_unpublished_regrade_does_not_count(fresh_course: Course, graded_notebooks,
                                               tmp_path: Path, database_url: str) -> None:
    db = open_database(database_url)
    try:
        row = store_graded(db, "10001", graded_notebooks["partial"], T0)
        # A draft of a regrade of the same submission, with a different score: not counted.
        store_graded(db, "10001", graded_notebooks["full"], T0, published=False,
                     kind="regrade", submission_id=row.submission_id)
        course_sync.sync_all(fresh_course, db, "backprop")
        exported = nbgrader_export(fresh_course, tmp_path / "export")
        assert float(exported["10001"]["score"]) == pytest.approx(row.score)
    finally:
        db.dispose()


def test_a_busy_course_is_synced_later_and_never_raises(fresh_course: Course, graded_notebooks,
                                                        database_url: str) -> None:
    db = open_database(database_url)
    try:
        row = store_graded(db, "10001", graded_notebooks["full"], T0)
        # Another process holds the course's lock (a `grade` run): the sync waits briefly,
        # then leaves the student pending; nothing is raised to the worker.
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time; from autograder.lock import course_lock\n"
             f"with course_lock({str(fresh_course.root)!r}):\n"
             "    print('held', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            started = datetime.now(UTC)
            assert course_sync.sync_result(fresh_course, db, row) is False
            assert (datetime.now(UTC) - started).total_seconds() < 10
            assert ("backprop", "10001") in course_sync.pending(fresh_course, db)
            assert not (fresh_course.submitted_dir("10001", "backprop")
                        / "backprop.ipynb").exists()
        finally:
            holder.communicate("", timeout=30)
        assert course_sync.retry_pending(fresh_course, db) is True
        assert course_sync.pending(fresh_course, db) == set()
        assert (fresh_course.submitted_dir("10001", "backprop") / "backprop.ipynb").is_file()
        with course_lock(fresh_course.root):  # and the sync let go of the lock
            pass
    finally:
        db.dispose()


def test_the_service_command_syncs_purges_and_deletes(fresh_course: Course, graded_notebooks,
                                                      tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from autograder.service.models import AuditEntry
    from autograder.service.models import Submission as Stored

    url = f"sqlite:///{tmp_path / 'service.db'}"
    db = open_database(url)
    try:
        store_graded(db, "10001", graded_notebooks["full"], T0)
        store_graded(db, "10002", graded_notebooks["partial"], datetime.now(UTC))

        def service(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "autograder.cli", "--course",
                                   str(fresh_course.root), "service", *args, "--database", url],
                                  capture_output=True, text=True, timeout=300)

        synced = service("sync")
        assert synced.returncode == 0, synced.stderr
        assert "backprop: 2 written, 0 already up to date, 0 failed" in synced.stdout
        assert (fresh_course.submitted_dir("10002", "backprop") / "backprop.ipynb").is_file()
        kept = service("purge")  # c.Service.retention_days is 0: nothing goes
        assert kept.returncode == 0 and "nothing purged" in kept.stdout
        purged = service("purge", "--days", "30")
        assert purged.returncode == 0 and "purged 1 submission(s)" in purged.stdout
        deleted = service("delete-student", "10002")
        assert deleted.returncode == 0 and "1 submission" in deleted.stdout, deleted.stderr
        assert service("delete-student").returncode == 2  # a clear error: no id
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Stored)) == 0
            [entry] = session.scalars(select(AuditEntry)).all()
            assert entry.action == "student.delete_data" and entry.actor.startswith("cli:")
    finally:
        db.dispose()


def test_the_embedded_worker_keeps_the_course_files_up_to_date(
        fresh_course: Course, graded_notebooks, database_url: str, tmp_path: Path) -> None:
    """The service as `serve` runs it: uploads queued, a real ServiceWorker grading them on
    the real grader, course_sync.sync_result after each result: nbgrader's export and our
    gradebook then equal the database, with no `service sync`."""
    from sqlalchemy import select

    from autograder.service import queue
    from autograder.service.models import Person
    from autograder.service.worker import ServiceWorker

    db = open_database(database_url)
    uploads = {"10001": "full", "10002": "partial", "10003": "blank"}
    try:
        with Grader(fresh_course, workers=2) as grader:
            fingerprint = grader.assignment("backprop").fingerprint
            with db.session() as session:
                for student, name in uploads.items():
                    session.add(Person(id=student, role="student"))
                    session.flush()
                    queue.enqueue_submission(session, student_id=student, assignment="backprop",
                                             filename="mine.ipynb",
                                             content=graded_notebooks[name][0],
                                             fingerprint=fingerprint)
            with ServiceWorker(db, grader, on_result=lambda row: course_sync.sync_result(
                    fresh_course, db, row)) as worker:
                assert worker.run_until_idle(timeout=120) == 3
        with db.session() as session:
            scores = {row.student_id: row.score for row in session.scalars(select(Result))}
        assert len(scores) == 3
        exported = nbgrader_export(fresh_course, tmp_path / "export")
        ours = {row.student_id: row.score for row in final_scores(fresh_course, "backprop")}
        for student, name in uploads.items():
            assert float(exported[student]["score"]) == pytest.approx(scores[student])
            assert ours[student] == pytest.approx(scores[student])
            assert (fresh_course.submitted_dir(student, "backprop") / "backprop.ipynb"
                    ).read_bytes() == graded_notebooks[name][0]
        assert course_sync.pending(fresh_course, db) == set()
    finally:
        db.dispose()


def test_results_graded_elsewhere_reach_the_course_files(fresh_course: Course, graded_notebooks,
                                                          database_url: str) -> None:
    """The embedded worker's keeper brings in, every c.Service.course_sync_seconds, what it did
    not record itself (a worker on another machine): gradebook.db shows it without a command."""
    import threading

    from autograder.service.serve import _keep_course_files
    from autograder.service.settings import Service

    db = open_database(database_url)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_course_files, args=(
        fresh_course, db, Service(course_sync_seconds=0.2), stop))
    keeper.start()
    try:
        row = store_graded(db, "10001", graded_notebooks["partial"], T0)  # graded elsewhere

        def recorded() -> bool:
            scores = {s.student_id: s.score for s in final_scores(fresh_course, "backprop")}
            return scores.get("10001") == pytest.approx(row.score)

        from databases import wait_for

        wait_for(recorded, timeout=30)
    finally:
        stop.set()
        keeper.join()
        db.dispose()


def test_a_grade_run_beside_the_service_is_undone_by_the_next_sync(
        fresh_course: Course, database_url: str, graded_notebooks) -> None:
    """`autograder grade` on the course changes gradebook.db behind the service's markers:
    the next sync finds that student's score differs and writes it again; --force writes
    every student again."""
    import sqlite3

    db = open_database(database_url)
    try:
        rows = {student: store_graded(db, student, graded_notebooks["full"],
                                      T0 + timedelta(minutes=i))
                for i, student in enumerate(["10001", "10002"])}
        assert sorted(course_sync.sync_all(fresh_course, db, "backprop").written) == \
            ["10001", "10002"]
        with sqlite3.connect(fresh_course.root / "gradebook.db") as book:  # as `grade` would
            changed = book.execute(
                "UPDATE grade SET auto_score = 0 WHERE notebook_id IN (SELECT n.id FROM "
                "submitted_notebook n JOIN submitted_assignment a ON a.id = n.assignment_id "
                "WHERE a.student_id = '10001')").rowcount
        assert changed > 0
        book.close()
        ours = {row.student_id: row.score for row in final_scores(fresh_course, "backprop")}
        assert ours["10001"] == 0
        again = course_sync.sync_all(fresh_course, db, "backprop")
        assert again.written == ["10001"] and again.unchanged == 1
        ours = {row.student_id: row.score for row in final_scores(fresh_course, "backprop")}
        assert ours == {s: pytest.approx(row.score) for s, row in rows.items()} | {
            s: ours[s] for s in ours if s not in rows}
        forced = course_sync.sync_all(fresh_course, db, "backprop", force=True)
        assert sorted(forced.written) == ["10001", "10002"]
    finally:
        db.dispose()


def test_best_ranks_a_late_submission_by_its_score_after_the_late_penalty(
        tmp_path: Path, graded_notebooks, database_url: str) -> None:
    """Under "best", a late full score that the course's penalty zeroes (nbgrader's
    LateSubmissionPlugin, penalty_method "zero") does not beat an on-time partial one: the
    partial is what gradebook.db and `nbgrader export` hold. With an extension covering it,
    the late one is on time and counts."""
    from sqlalchemy import create_engine, text

    from autograder.late import make_extension, save_extensions

    root = tmp_path / "course"
    root.mkdir()
    make_course(root)
    with (root / "nbgrader_config.py").open("a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    course = set_counts(root, "best")
    engine = create_engine(course.db_url)
    with engine.begin() as gradebook:  # due half an hour after the first upload
        gradebook.execute(text("UPDATE assignment SET duedate = :due WHERE name = 'backprop'"),
                          {"due": (T0 + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S")})
    engine.dispose()
    db = open_database(database_url)
    try:
        on_time = store_graded(db, "10001", graded_notebooks["partial"], T0)
        late = store_graded(db, "10001", graded_notebooks["full"], T0 + timedelta(hours=1))
        assert late.score > on_time.score
        with db.session(readonly=True) as session:
            counted = course_sync.counted_by_policy(session, course, "backprop")
        assert counted["10001"].id == on_time.id
        course_sync.sync_all(course, db, "backprop")
        exported = nbgrader_export(course, tmp_path / "export")
        assert float(exported["10001"]["score"]) == pytest.approx(on_time.score)
        save_extensions(course, "backprop", [make_extension("10001", hours=2)], force=True)
        with db.session(readonly=True) as session:
            counted = course_sync.counted_by_policy(session, course, "backprop")
        assert counted["10001"].id == late.id
    finally:
        db.dispose()


def _due_course(tmp_path: Path, config: str) -> Course:
    """A course under "best" with a due date half an hour after T0 and `config` added."""
    from sqlalchemy import create_engine, text

    root = tmp_path / "course"
    root.mkdir()
    make_course(root)
    with (root / "nbgrader_config.py").open("a") as handle:
        handle.write("\n" + config + "\n")
    course = set_counts(root, "best")
    engine = create_engine(course.db_url)
    with engine.begin() as gradebook:
        gradebook.execute(text("UPDATE assignment SET duedate = :due WHERE name = 'backprop'"),
                          {"due": (T0 + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S")})
    engine.dispose()
    return course


def test_a_late_penalty_plugin_that_fails_costs_the_ranking_not_the_sync(
        tmp_path: Path, graded_notebooks, database_url: str,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The instructor's plugin raising (an IndexError for a submission later than its table
    goes) ranks by the scores themselves and says so once in the log; the sync goes on: the
    on-time student is written, and each late one fails alone, saying why (gradebook.db's
    late penalty needs the plugin too)."""
    monkeypatch.setattr(course_sync, "_warned", set())
    course = _due_course(tmp_path, "c.AssignLatePenalties.plugin_class = 'table.ByDay'")
    (course.root / "table.py").write_text(
        "from nbgrader.plugins import BasePlugin\n"
        "class ByDay(BasePlugin):\n"
        "    def late_submission_penalty(self, student_id, score, total_seconds_late):\n"
        "        return [0, score / 2][int(total_seconds_late // 86400) + 5]\n")
    db = open_database(database_url)
    try:
        on_time = store_graded(db, "10001", graded_notebooks["partial"], T0)
        late = store_graded(db, "10001", graded_notebooks["full"], T0 + timedelta(hours=1))
        store_graded(db, "10002", graded_notebooks["full"], T0)
        with caplog.at_level("WARNING"), db.session(readonly=True) as session:
            for _ in range(3):
                counted = course_sync.counted_by_policy(session, course, "backprop")
        assert counted["10001"].id == late.id != on_time.id  # by the score itself
        assert sum("late-penalty plugin fails" in r.getMessage() for r in caplog.records) == 1
        report = course_sync.sync_all(course, db, "backprop")
        assert report.written == ["10002"]
        assert [line.split(":")[0] for line in report.failed] == ["10001"]
        assert "list index out of range" in report.failed[0]
    finally:
        db.dispose()


def test_best_waits_while_gradebook_db_cannot_be_read(tmp_path: Path, graded_notebooks,
                                                      database_url: str) -> None:
    """Ranked without the due date, a late submission could count for a moment (and be
    written into gradebook.db): while gradebook.db is locked, the ranking is CourseBusy
    (the sync tries again; the instructor gets a 503), and the right one counts after."""
    import sqlite3

    from autograder.lock import CourseBusy

    course = _due_course(tmp_path, 'c.LateSubmissionPlugin.penalty_method = "zero"')
    db = open_database(database_url)
    holder = sqlite3.connect(course.root / "gradebook.db", timeout=0.1, isolation_level=None)
    try:
        on_time = store_graded(db, "10001", graded_notebooks["partial"], T0)
        store_graded(db, "10001", graded_notebooks["full"], T0 + timedelta(hours=1))
        holder.execute("UPDATE assignment SET duedate = duedate")  # a change: read again
        holder.execute("BEGIN EXCLUSIVE")
        with db.session(readonly=True) as session, pytest.raises(CourseBusy):
            course_sync.counted_by_policy(session, course, "backprop")
        holder.execute("ROLLBACK")
        with db.session(readonly=True) as session:
            assert course_sync.counted_by_policy(session, course, "backprop")["10001"].id \
                == on_time.id
    finally:
        holder.close()
        db.dispose()


def test_a_plugin_this_process_cannot_make_is_named_for_the_services_log(
        tmp_path: Path) -> None:
    """serve's HTTP process ranks "best" for the instructor's lists as the worker does for
    gradebook.db: a plugin it cannot make (unreadable to its user, a typo) is named at its
    start, rather than the two counting different submissions without a word."""
    course = _due_course(tmp_path, "c.AssignLatePenalties.plugin_class = 'nowhere.Plugin'")
    [problem] = course_sync.ranking_problems(course)
    assert problem.startswith("backprop: ") and "nowhere.Plugin" in problem
    assert course_sync.ranking_problems(set_counts(course.root, "last")) == []
