"""Faults against a real `autograder serve`: its PostgreSQL cut off for a while (a TCP proxy in
between), its disk full (SQLite on a tiny tmpfs), and a restart with a full queue. Whatever
happens, an upload is acknowledged (202) only once stored, nothing is stored half-way, and
every acknowledged submission is graded exactly once."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import nbformat
import pytest
from conftest import make_course
from databases import (
    CuttableProxy,
    ServeProcess,
    add_students,
    fill,
    student_tokens,
    tmpfs,
    wait_for,
)
from sqlalchemy import func, select

from autograder.author import with_answers
from autograder.service.database import Database
from autograder.service.models import Job, JobState, Result, Submission

STUDENTS = [f"3{n:04d}" for n in range(12)]


@pytest.fixture(scope="module")
def fault_course():  # -> Course, readable by the service's user, 12 students, big budgets
    root = Path(tempfile.mkdtemp(prefix="agfault-course-"))
    os.chmod(root, 0o755)
    course = make_course(root)
    with (root / "nbgrader_config.py").open("a") as config:
        # Many uploads per student in these tests: the budget is not what is tested here.
        config.write("\nc.AssignmentPolicy.budget_capacity = 1000\n"
                     "c.Service.lease_seconds = 3.0\n")
    add_students(root, STUDENTS)
    yield course
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def notebook(fault_course, solution) -> bytes:  # noqa: ANN001
    release = nbformat.read(fault_course.release_dir("backprop") / "backprop.ipynb",
                            as_version=4)
    return nbformat.writes(with_answers(release, solution)).encode()


def upload(url: str, token: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/api/assignments/backprop/submissions",
                      headers={"Authorization": f"Bearer {token}"},
                      files={"notebook": ("backprop.ipynb", content,
                                          "application/x-ipynb+json")}, timeout=30)


def stored(url: str) -> dict[str, int]:
    """What the database holds, read directly (not through the service)."""
    db = Database(url)
    try:
        with db.session() as session:
            return {
                "submissions": session.scalar(select(func.count()).select_from(Submission)),
                "orphans": session.scalar(select(func.count()).select_from(Submission).where(
                    ~Submission.jobs.any())),
                "jobs": session.scalar(select(func.count()).select_from(Job)),
                "results": session.scalar(select(func.count()).select_from(Result)),
                "unfinished": session.scalar(select(func.count()).select_from(Job).where(
                    Job.state != JobState.DONE)),
            }
    finally:
        db.dispose()


def ids_in(url: str) -> set[str]:
    db = Database(url)
    try:
        with db.session() as session:
            return set(session.scalars(select(Submission.id)))
    finally:
        db.dispose()


def results_per_job(url: str) -> dict[int, int]:
    db = Database(url)
    try:
        with db.session() as session:
            rows = session.execute(select(Result.job_id, func.count()).group_by(Result.job_id))
            return dict(rows.all())
    finally:
        db.dispose()


def test_database_cut_off_answers_503_stores_nothing_and_recovers(
        fault_course, notebook, postgres, tmp_path):  # noqa: ANN001
    direct = postgres.create()
    name = direct.rsplit("/", 1)[1]
    proxy = CuttableProxy(postgres.host, postgres.port)
    through = proxy.url(name)
    tokens = student_tokens(fault_course.root, direct)
    acknowledged: list[str] = []
    try:
        with ServeProcess(fault_course.root, through, log_dir=tmp_path) as server:
            answer = upload(server.url, tokens[STUDENTS[0]], notebook)
            assert answer.status_code == 202, answer.text
            acknowledged.append(answer.json()["id"])
            proxy.cut()
            refused = [upload(server.url, tokens[sid], notebook) for sid in STUDENTS[1:6]]
            assert {answer.status_code for answer in refused} == {503}, [
                (answer.status_code, answer.text) for answer in refused]
            assert all("nothing was stored" in answer.json()["detail"] for answer in refused)
            time.sleep(1.0)  # the worker, too, finds the database gone meanwhile
            proxy.restore()
            # Back without a restart: the next uploads are stored and graded.
            for sid in STUDENTS[6:9]:
                answer = wait_for(lambda sid=sid: (a := upload(server.url, tokens[sid],
                                                                notebook)).status_code == 202
                                  and a, 10, 0.2)
                acknowledged.append(answer.json()["id"])
            wait_for(lambda: stored(direct)["unfinished"] == 0 and stored(direct)["results"]
                     >= len(acknowledged), 120, 0.2)
            assert server.process.poll() is None
    finally:
        proxy.close()
    counts = stored(direct)
    assert counts["orphans"] == 0  # no submission without its job
    assert ids_in(direct) == set(acknowledged)  # nothing from the refused uploads
    assert counts["jobs"] == counts["results"] == len(acknowledged)
    assert "Traceback" not in server.log, server.log


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_answers_507_or_503_and_never_loses_an_acknowledged_upload(
        fault_course, notebook, tmp_path):  # noqa: ANN001
    with tmpfs("3m") as disk:
        (disk / "service").mkdir()
        url = f"sqlite:///{disk / 'service' / 'service.db'}"
        tokens = student_tokens(fault_course.root, url)
        acknowledged: list[str] = []
        with ServeProcess(fault_course.root, url, log_dir=tmp_path) as server:
            answer = upload(server.url, tokens[STUDENTS[0]], notebook)
            assert answer.status_code == 202, answer.text
            acknowledged.append(answer.json()["id"])
            filler = fill(disk)
            codes = []
            for n in range(8):  # the last free pages of the database may still take a few
                answer = upload(server.url, tokens[STUDENTS[n % len(STUDENTS)]], notebook)
                codes.append(answer.status_code)
                if answer.status_code == 202:
                    acknowledged.append(answer.json()["id"])
            assert set(codes) <= {202, 503, 507}, codes
            assert codes[-1] in (503, 507), codes
            filler.unlink()
            answer = wait_for(lambda: (a := upload(server.url, tokens[STUDENTS[1]],
                                                   notebook)).status_code == 202 and a, 10, 0.2)
            acknowledged.append(answer.json()["id"])
            wait_for(lambda: stored(url)["unfinished"] == 0
                     and stored(url)["results"] >= len(acknowledged), 120, 0.2)
        counts = stored(url)
        assert ids_in(url) == set(acknowledged)  # every acknowledged id, nothing else
        assert counts["orphans"] == 0 and counts["jobs"] == len(acknowledged)
        assert set(results_per_job(url).values()) == {1}
        assert "Traceback" not in server.log, server.log


def test_restart_with_a_full_queue_grades_everything_once(fault_course, notebook,
                                                          tmp_path):  # noqa: ANN001
    folder = Path(tempfile.mkdtemp(prefix="agfault-db-"))
    url = f"sqlite:///{folder / 'service.db'}"
    tokens = student_tokens(fault_course.root, url)
    try:
        acknowledged = []
        server = ServeProcess(fault_course.root, url, log_dir=tmp_path).start()
        for n in range(30):
            answer = upload(server.url, tokens[STUDENTS[n % len(STUDENTS)]], notebook)
            assert answer.status_code == 202, answer.text
            acknowledged.append(answer.json()["id"])
        wait_for(lambda: stored(url)["results"] >= 1, 60, 0.05)
        assert stored(url)["unfinished"] > 0  # stopped with a queue
        server.kill()  # kill -9, the worker too: jobs in hand are lost with their lease
        server = ServeProcess(fault_course.root, url, port=server.port,
                              log_dir=tmp_path).start()
        try:
            wait_for(lambda: stored(url)["unfinished"] == 0, 180, 0.1)
        finally:
            assert server.stop() == 0, server.log
        assert ids_in(url) == set(acknowledged)
        per_job = results_per_job(url)
        assert len(per_job) == stored(url)["jobs"] == len(acknowledged)
        assert set(per_job.values()) == {1}  # none twice
    finally:
        shutil.rmtree(folder, ignore_errors=True)
