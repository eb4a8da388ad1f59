"""Benchmark: this project against `nbgrader autograde`, side by side, in one run.

    .venv/bin/python bench/bench_grading.py [--n 200] [--workers N]

Generates N submissions (the solution, three typical mistakes, the blank release: the kinds on
which nbgrader's visible-test scoring and our hidden tests agree), grades them with
`nbgrader autograde` and with `autograder grade` (once just before and once just after
nbgrader, each in a fresh copy of the course), checks that the scores agree, and prints both
throughputs, their ratio, our p50/p95 per-submission latency, peak memory (of the largest
process, and of each tool's whole process tree with shared pages counted once), and both CLIs'
start-up times. A benchmark, not a test: it asserts nothing timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autograder.store import load_results

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The course's nbgrader_config.py makes `nbgrader autograde` run this grader; the benchmark
# measures nbgrader's own (its Execute preprocessor and the rest of its default chain).
STOCK_NBGRADER = ["--Autograde.autograde_preprocessors=['nbgrader.preprocessors.Execute', "
                  "'nbgrader.preprocessors.IgnorePattern', "
                  "'nbconvert.preprocessors.ClearMetadataPreprocessor', "
                  "'nbgrader.preprocessors.LimitOutput', 'nbgrader.preprocessors.SaveAutoGrades', "
                  "'nbgrader.preprocessors.AssignLatePenalties', "
                  "'nbgrader.preprocessors.CheckCellMetadata']"]
KINDS = ("solution", "missing-zero-grad", "step-before-backward", "no-backward", "blank")


def make_course(root: Path, n: int, tree: Path = REPO,
                autograder: list[str] | None = None) -> dict[str, str]:
    """A course with the assignment released and n submissions under submitted/ (the course's
    files from `tree`, released by `autograder`; the submissions are always this tree's)."""
    for name in ("nbgrader_config.py", "source", "hidden_tests"):
        source = tree / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy(source, root / name)
    run([*(autograder or [str(BIN / "autograder")]), "--course", str(root), "release", "backprop"])
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


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float  # of the largest single process it started
    peak_pss_mib: float  # of all its processes together, shared pages counted once


def run(command: list[str], cwd: Path | None = None) -> Run:
    """Run to completion, sampling the memory of its whole process tree."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    with tempfile.TemporaryFile() as log:  # a pipe nobody reads would fill and block the tool
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
        sampler = PssSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        sampler.stop()
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read().decode()[-3000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, sampler.peak_kib / 1024)


class PssSampler(threading.Thread):
    """Every 0.5 s, the proportional set size of a process and all its descendants: memory
    shared between forks (torch, once imported) counts once, not once per process."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak_kib, self._done = root, 0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(pid) for pid in _tree(self.root)))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _tree(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except OSError:
            pass  # it ended meanwhile
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def nbgrader_scores(root: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id="backprop-course") as book:
        return {s.student.id: s.score for s in book.assignment_submissions("backprop")}


def our_results(root: Path) -> list[dict]:
    return [result.to_dict() for result in load_results(root, "backprop")]


def _grade_command(root: Path, workers: int) -> list[str]:
    return [str(BIN / "autograder"), "--course", str(root), "grade", "backprop",
            "--workers", str(workers)]


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
        theirs_root = Path(folder) / "nbgrader"
        ours_roots = [Path(folder) / "ours-before", Path(folder) / "ours-after"]
        for root in [theirs_root, *ours_roots]:
            root.mkdir()
            kinds = make_course(root, args.n)

        print(f"grading {args.n} submissions ({', '.join(KINDS)}) on {os.cpu_count()} cores",
              flush=True)
        # Ours runs just before and just after nbgrader's quarter of an hour, so that a slow
        # or fast spell of this shared machine weighs on both sides alike.
        ours_runs = [run(_grade_command(ours_roots[0], args.workers))]
        print(f"autograder grade:   {ours_runs[0].seconds:.1f} s", flush=True)
        theirs = run([str(BIN / "nbgrader"), "autograde", "backprop", "--create",
                      *STOCK_NBGRADER], cwd=theirs_root)
        print(f"nbgrader autograde: {theirs.seconds:.1f} s", flush=True)
        ours_runs.append(run(_grade_command(ours_roots[1], args.workers)))
        print(f"autograder grade:   {ours_runs[1].seconds:.1f} s", flush=True)

        their_scores = nbgrader_scores(theirs_root)
        disagree = {}
        latencies = []
        for root in ours_roots:
            results = our_results(root)
            our_scores = {r["student_id"]: sum(t["points"] for t in r["tests"]) for r in results}
            disagree |= {s: (our_scores.get(s), their_scores.get(s)) for s in kinds
                         if our_scores.get(s) != their_scores.get(s)}
            latencies += [r["seconds"] for r in results]
        latencies.sort()
        quantile = statistics.quantiles(latencies, n=20)
        ours_s = statistics.mean(r.seconds for r in ours_runs)
        ours_pss = max(r.peak_pss_mib for r in ours_runs)
        ours_rss = max(r.peak_rss_mib for r in ours_runs)

        print()
        print(f"submissions                {args.n}")
        print(f"scores agree               {'yes' if not disagree else f'NO: {disagree}'}")
        print(f"nbgrader autograde         {theirs.seconds:8.1f} s  "
              f"{args.n / theirs.seconds:7.2f} /s")
        print(f"autograder grade ({args.workers} wkrs) {ours_s:8.1f} s  "
              f"{args.n / ours_s:7.2f} /s  (mean of "
              f"{' s before and '.join(f'{r.seconds:.1f}' for r in ours_runs)} s after)")
        print(f"speed-up                   {theirs.seconds / ours_s:8.1f} x")
        print(f"our latency per submission p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {quantile[18] * 1000:.0f} ms (in its own sandboxed process)")
        print(f"memory, nbgrader           peak {theirs.peak_pss_mib:4.0f} MiB for all its "
              f"processes (largest process {theirs.peak_rss_mib:.0f} MiB RSS)")
        print(f"memory, autograder         peak {ours_pss:4.0f} MiB for all its "
              f"processes = {ours_pss / args.workers:.0f} MiB per worker (largest "
              f"process {ours_rss:.0f} MiB RSS, most of it shared)")
        ours_cli = startup([str(BIN / "autograder"), "--help"])
        theirs_cli = startup([str(BIN / "nbgrader"), "--help"])
        print(f"CLI start-up (--help)      autograder {ours_cli:.2f} s, "
              f"nbgrader {theirs_cli:.2f} s")


if __name__ == "__main__":
    main()
