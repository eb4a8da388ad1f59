"""Benchmark: this project against `nbgrader autograde`, side by side, in one run.

    .venv/bin/python bench/bench_grading.py [--n 200] [--workers N]

Generates N submissions (the solution, three typical mistakes, the blank release: the kinds on
which nbgrader's visible-test scoring and our hidden tests agree), grades them with
`nbgrader autograde` and with `autograder grade` in two copies of the course, checks that the
scores agree, and prints both throughputs, their ratio, our p50/p95 per-submission latency,
peak memory, and both CLIs' start-up times. A benchmark, not a test: it asserts nothing timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KINDS = ("solution", "missing-zero-grad", "step-before-backward", "no-backward", "blank")


def make_course(root: Path, n: int) -> dict[str, str]:
    """A course with the assignment released and n submissions under submitted/."""
    for name in ("nbgrader_config.py", "source", "hidden_tests"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy(source, root / name)
    run([str(BIN / "autograder"), "--course", str(root), "release", "backprop"])
    kinds = {}
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        student = f"s{i:04d}-{kind}"
        target = root / "submitted" / student / "backprop"
        target.mkdir(parents=True)
        shutil.copy(REPO / "examples" / "submitted" / kind / "backprop" / "backprop.ipynb", target)
        (target / "timestamp.txt").write_text("2026-11-20 12:00:00.000000 UTC\n")
        kinds[student] = kind
    return kinds


def run(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Run to completion; returns (seconds, peak RSS in MiB of any process it started)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    with tempfile.TemporaryFile() as log:  # a pipe nobody reads would fill and block the tool
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def nbgrader_scores(root: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id="backprop-course") as book:
        return {s.student.id: s.score for s in book.assignment_submissions("backprop")}


def our_results(root: Path) -> list[dict]:
    return [json.loads(path.read_text())
            for path in sorted((root / "autograded").glob("*/backprop/results.json"))]


def startup(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="submissions (default 200)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="autograder-bench-") as folder:
        ours_root, theirs_root = Path(folder) / "ours", Path(folder) / "nbgrader"
        ours_root.mkdir()
        theirs_root.mkdir()
        kinds = make_course(ours_root, args.n)
        make_course(theirs_root, args.n)

        print(f"grading {args.n} submissions ({', '.join(KINDS)}) on {os.cpu_count()} cores",
              flush=True)
        theirs_s, theirs_mib = run([str(BIN / "nbgrader"), "autograde", "backprop", "--create"],
                                   cwd=theirs_root)
        print(f"nbgrader autograde: {theirs_s:.1f} s", flush=True)
        ours_s, ours_mib = run([str(BIN / "autograder"), "--course", str(ours_root), "grade",
                                "backprop", "--workers", str(args.workers)])
        print(f"autograder grade:   {ours_s:.1f} s", flush=True)

        theirs = nbgrader_scores(theirs_root)
        results = our_results(ours_root)
        ours = {r["student_id"]: sum(t["points"] for t in r["tests"]) for r in results}
        disagree = {s: (ours.get(s), theirs.get(s)) for s in kinds if ours.get(s) != theirs.get(s)}
        latencies = sorted(r["seconds"] for r in results)
        quantile = statistics.quantiles(latencies, n=20)

        print()
        print(f"submissions                {args.n}")
        print(f"scores agree               {'yes' if not disagree else f'NO: {disagree}'}")
        print(f"nbgrader autograde         {theirs_s:8.1f} s  {args.n / theirs_s:7.2f} /s  "
              f"peak {theirs_mib:6.0f} MiB (largest process)")
        print(f"autograder grade ({args.workers} wkrs) {ours_s:8.1f} s  {args.n / ours_s:7.2f} /s  "
              f"peak {ours_mib:6.0f} MiB (largest process: a warm worker)")
        print(f"speed-up                   {theirs_s / ours_s:8.1f} x")
        print(f"our latency per submission p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {quantile[18] * 1000:.0f} ms (in its own sandboxed process)")
        ours_cli = startup([str(BIN / "autograder"), "--help"])
        theirs_cli = startup([str(BIN / "nbgrader"), "--help"])
        print(f"CLI start-up (--help)      autograder {ours_cli:.2f} s, "
              f"nbgrader {theirs_cli:.2f} s")


if __name__ == "__main__":
    main()
