"""The load bench, small: 20 students upload at once to a real `autograder serve` and poll every
50 ms; every acknowledged upload is graded (none lost), every student got feedback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from databases import ServeProcess, student_tokens

from bench.bench_service import example_notebooks, make_service_course, run_load

STUDENTS = [f"4{n:04d}" for n in range(20)]


def test_twenty_students_at_once_all_graded_none_lost() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="agload-"))
    try:
        root, url = make_service_course(scratch, STUDENTS)
        tokens = student_tokens(root, url)
        with ServeProcess(root, url, log_dir=scratch) as server:
            report = run_load(server.url, server.pid, tokens, example_notebooks(), poll=0.05,
                              timeout=300)
        assert report.refused == []
        assert len(report.acknowledged) == len(STUDENTS)
        assert report.lost == set() and report.failed == set()
        assert report.graded == report.acknowledged
        assert len(report.latencies) == len(STUDENTS)
        assert "Traceback" not in server.log, server.log
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
