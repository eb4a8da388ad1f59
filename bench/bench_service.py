"""Benchmark: N students (default 200) upload at once to a real `autograder serve` over
loopback and wait for their feedback; then `autograder grade` on the same notebooks.

    .venv/bin/python bench/bench_service.py [--students 200] [--wait 30 | --poll 0.05]

A scratch course (autograder.demo.scratch_course) with N rostered students and a token each;
`autograder serve` with its embedded worker on a SQLite file. First one student on the idle
service, timed with the real `autograder submit` command (p50 of 10 runs; from process start)
and with the same client's `submit()` in this process (from the start of the upload); then
every student uploads one of the shipped example notebooks at the same moment (one thread
each) and waits for its result with long polls (`?wait=`, pushed results), or with `--wait 0`
polls its status every `--poll` seconds (<= 50 ms), until graded. Prints the throughput
(graded/s), the CPU seconds of the service's processes (HTTP, worker, grading pool),
upload-to-feedback p50/p95/max, acknowledged ids against graded ids (lost must be 0), the
service's peak memory (RSS of serve and all its processes), and `autograder grade`'s
throughput on the same notebooks, with the ratio (the issue wants the service >= 0.8 of it).
A benchmark: it asserts nothing timed, but exits 1 if any acknowledged upload was lost.
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the real-process harness the tests use

from databases import (  # noqa: E402
    ServeProcess,
    _children,
    add_students,
    student_tokens,
)

EXAMPLES = REPO / "examples" / "submitted"
AUTOGRADER = [sys.executable, "-m", "autograder.cli"]
CLIENTS = "clients (this bench)"


@dataclass
class LoadReport:
    students: int
    acknowledged: set[str] = field(default_factory=set)
    graded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # what an upload got instead of 202
    latencies: list[float] = field(default_factory=list)  # upload sent -> feedback read
    seconds: float = 0.0  # first upload sent -> last feedback read
    peak_rss: int = 0  # bytes, serve's whole process tree
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds during load

    @property
    def lost(self) -> set[str]:
        return self.acknowledged - self.graded - self.failed

    @property
    def throughput(self) -> float:
        return len(self.graded) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def example_notebooks() -> list[bytes]:
    return [path.read_bytes() for path in sorted(EXAMPLES.glob("*/backprop/backprop.ipynb"))]


def make_service_course(folder: Path, students: list[str]) -> tuple[Path, str]:
    """A scratch course readable by the service's user, `students` rostered, a budget that
    lets each submit often (the bench times grading, not refusals); its SQLite URL."""
    from autograder.course import Course
    from autograder.demo import scratch_course

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    root = scratch_course(Course.load(REPO), folder / "course").root
    os.chmod(root, 0o755)
    with (root / "nbgrader_config.py").open("a") as config:
        config.write("\nc.AssignmentPolicy.budget_capacity = 1000\n"
                     # every simulated student connects from 127.0.0.1, where real ones
                     # come from their own addresses (or through a trusted proxy, not capped)
                     f"c.Service.connections_per_address = {len(students) + 16}\n")
    subprocess.run([*AUTOGRADER, "--course", str(root), "release", "backprop"], check=True,
                   capture_output=True)
    add_students(root, students)
    (folder / "db").mkdir()
    return root, f"sqlite:///{folder / 'db' / 'service.db'}"


def tree_rss(pid: int) -> int:
    total = 0
    for each in (pid, *_children(pid)):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of serve's processes, by role: the HTTP process (serve
    itself), the embedded worker (its child running `--embedded-worker`), the grading pool
    (everything below the worker, with its children that have ended: a job's sandbox)."""
    tick = os.sysconf("SC_CLK_TCK")

    def of(each: int, ended: bool = False) -> float:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])
            return (own + (int(fields[13]) + int(fields[14]) if ended else 0)) / tick
        except (OSError, IndexError, ValueError):
            return 0.0

    shown = {"http": of(pid), "worker": 0.0, "pool": 0.0}
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"--embedded-worker" in command:
            shown["worker"] += of(child)
            shown["pool"] += sum(of(grandchild, ended=True)
                                 for grandchild in _children(child))
    return shown


def run_load(server_url: str, serve_pid: int, tokens: dict[str, str],
             notebooks: list[bytes], poll: float = 0.05, timeout: float = 600,
             wait: float = 30.0) -> LoadReport:
    """Every student uploads at the same moment, then waits until graded: long polls of
    `wait` seconds (pushed results), or with wait=0 a status request every `poll` s."""
    report = LoadReport(students=len(tokens))
    lock = threading.Lock()
    first_sent: list[float] = []  # the barrier's release: every client is ready, uploads go
    cpu_before: dict[str, float] = {}

    def go() -> None:
        cpu_before.update(cpu_seconds(serve_pid), **{CLIENTS: time.process_time()})
        first_sent.append(time.monotonic())

    start = threading.Barrier(len(tokens), action=go)
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            report.peak_rss = max(report.peak_rss, tree_rss(serve_pid))
            stop_sampling.wait(0.1)

    def student(index: int, sid: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server_url, headers=headers, timeout=60) as http:
            start.wait()
            sent = time.monotonic()
            answer = http.post("/api/assignments/backprop/submissions", files={
                "notebook": ("backprop.ipynb", notebooks[index % len(notebooks)],
                             "application/x-ipynb+json")})
            if answer.status_code != 202:
                with lock:
                    report.refused.append(f"{sid}: {answer.status_code} {answer.text[:200]}")
                return
            submission = answer.json()["id"]
            with lock:
                report.acknowledged.add(submission)
            deadline = sent + timeout
            params = {"wait": str(wait)} if wait > 0 else None
            while time.monotonic() < deadline:
                status = http.get(f"/api/submissions/{submission}",
                                  params=params).json().get("status")
                if status in ("graded", "failed"):
                    if status == "graded":
                        http.get(f"/api/submissions/{submission}/feedback").raise_for_status()
                    with lock:
                        (report.graded if status == "graded" else report.failed).add(
                            submission)
                        report.latencies.append(time.monotonic() - sent)
                    return
                if not params:
                    time.sleep(poll)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=student, args=(index, sid, token))
               for index, (sid, token) in enumerate(sorted(tokens.items()))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # From the first upload sent (not from making 200 HTTP clients) to the last feedback read.
    report.seconds = time.monotonic() - first_sent[0]
    cpu_after = {**cpu_seconds(serve_pid), CLIENTS: time.process_time()}
    report.cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
    stop_sampling.set()
    sampler.join()
    return report


def synced_students(root: Path, assignment: str = "backprop") -> int:
    """Students whose course files (gradebook.db, autograded/, feedback/) the embedded worker
    has brought up to date (course_sync's markers)."""
    from autograder.service.course_sync import MARKER_DIR

    folder = root / MARKER_DIR / assignment
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def course_files_lag(root: Path, students: int, timeout: float = 120) -> tuple[int, float]:
    """How many students' course files were up to date when the last feedback was read, and
    the seconds until all were."""
    at_end = synced_students(root)
    began = time.monotonic()
    while synced_students(root) < students and time.monotonic() - began < timeout:
        time.sleep(0.1)
    return at_end, time.monotonic() - began


def idle_client(server_url: str, token: str, notebook: Path, runs: int) -> list[float]:
    """`autograder submit`'s own function (client.submit) in this process, `runs` times: wall
    seconds from the start of the upload to the feedback read."""
    from autograder.service.client import submit

    times = []
    for _ in range(runs):
        began = time.monotonic()
        outcome = submit(server_url, notebook, token)
        times.append(time.monotonic() - began)
        if outcome.status != "graded":
            raise SystemExit(f"submit: {outcome}")
    return times


def idle_submit(server_url: str, token: str, notebook: Path, runs: int) -> list[float]:
    """The real `autograder submit` on the idle service, `runs` times: wall seconds each,
    process start included."""
    env = {**os.environ, "AUTOGRADER_TOKEN": token}
    times = []
    for _ in range(runs):
        began = time.monotonic()
        done = subprocess.run([*AUTOGRADER, "submit", str(notebook), "--server", server_url],
                              env=env, capture_output=True, text=True)
        times.append(time.monotonic() - began)
        if done.returncode != 0:
            raise SystemExit(f"autograder submit failed:\n{done.stdout}{done.stderr}")
    return times


def grade_batch(root: Path, notebooks: list[bytes], students: list[str],
                folder: Path) -> tuple[float, float]:
    """`autograder grade` on the same notebooks (nbgrader's submitted/ layout): seconds, and
    the CPU seconds of it and its grading pool (the descendants it waited for)."""
    for index, sid in enumerate(students):
        target = folder / sid / "backprop"
        target.mkdir(parents=True)
        (target / "backprop.ipynb").write_bytes(notebooks[index % len(notebooks)])
    before = os.times()
    began = time.monotonic()
    done = subprocess.run([*AUTOGRADER, "--course", str(root), "grade", "backprop",
                           str(folder), "--regrade"], capture_output=True, text=True, cwd=REPO)
    seconds = time.monotonic() - began
    after = os.times()
    cpu = (after.children_user + after.children_system
           - before.children_user - before.children_system)
    if done.returncode != 0:
        raise SystemExit(f"autograder grade failed:\n{done.stdout[-3000:]}{done.stderr}")
    return seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--wait", type=float, default=30.0,
                        help="long-poll seconds (0: poll every --poll seconds instead)")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds (at most 0.05)")
    parser.add_argument("--skip-grade", action="store_true",
                        help="do not run `autograder grade` for comparison")
    parser.add_argument("--idle-runs", type=int, default=10)
    args = parser.parse_args()
    poll = min(args.poll, 0.05)
    students = [f"9{n:05d}" for n in range(args.students)]
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    notebooks = example_notebooks()
    scratch = Path(tempfile.mkdtemp(prefix="bench-service-"))
    try:
        root, url = make_service_course(scratch, [*students, "idle"])
        tokens = student_tokens(root, url)
        idle_token = tokens.pop("idle")
        solution = scratch / "solution" / "backprop.ipynb"
        solution.parent.mkdir()
        shutil.copy(EXAMPLES / "solution" / "backprop" / "backprop.ipynb", solution)
        with ServeProcess(root, url, log_dir=scratch) as server:
            idle_submit(server.url, idle_token, solution, 1)  # warm: the pool, the imports
            idle = idle_submit(server.url, idle_token, solution, args.idle_runs)
            idle_upload = idle_client(server.url, idle_token, solution, args.idle_runs)
            report = run_load(server.url, server.pid, tokens, notebooks, poll,
                              wait=min(args.wait, 30.0))
            synced_at_end, sync_lag = course_files_lag(root, len(students) + 1)  # + idle
        grade_seconds, grade_cpu = ((float("nan"), float("nan")) if args.skip_grade else
                                    grade_batch(root, notebooks, students,
                                                scratch / "incoming"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    grade_rate = len(students) / grade_seconds
    how = (f"long polls of {min(args.wait, 30.0):g} s" if args.wait > 0
           else f"polling every {poll * 1000:.0f} ms")
    print(f"students: {report.students} uploading at once over loopback, {how}; "
          f"{os.cpu_count()} cores; load average before: {load_before}")
    print(f"acknowledged: {len(report.acknowledged)}  graded: {len(report.graded)}  "
          f"failed: {len(report.failed)}  refused: {len(report.refused)}  "
          f"lost: {len(report.lost)}")
    for line in report.refused[:5]:
        print(f"  refused {line}")
    print(f"service: {report.throughput:.1f} graded/s ({report.seconds:.1f} s for all); "
          f"upload to feedback p50 {report.percentile(0.5):.2f} s, "
          f"p95 {report.percentile(0.95):.2f} s, max {max(report.latencies, default=0):.2f} s")
    print(f"course files (gradebook.db, feedback/) up to date at the last feedback: "
          f"{synced_at_end - 1} of {len(students)} students; all {sync_lag:.1f} s later")
    print(f"service peak memory (serve + worker + pool, RSS): {report.peak_rss / 2**20:.0f} MiB")
    print("service CPU during the load: " + ", ".join(
        f"{role} {seconds:.1f} s" for role, seconds in report.cpu.items())
        + f" (over {report.seconds:.1f} s wall)")
    print(f"idle service, `autograder submit` from the start of the upload to the feedback "
          f"read: p50 {statistics.median(idle_upload):.2f} s of {len(idle_upload)} runs "
          f"(min {min(idle_upload):.2f}, max {max(idle_upload):.2f})")
    print(f"idle service, `autograder submit` command, process start included: "
          f"p50 {statistics.median(idle):.2f} s of {len(idle)} runs "
          f"(min {min(idle):.2f}, max {max(idle):.2f})")
    print(f"`autograder grade` on the same {len(students)} notebooks: {grade_seconds:.1f} s, "
          f"{grade_rate:.1f} graded/s (start-up included), {grade_cpu:.1f} s of CPU")
    print(f"ratio service/grade: {report.throughput / grade_rate:.2f} (the issue wants >= 0.8)")
    print("load average after: " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    return 1 if report.lost else 0


if __name__ == "__main__":
    sys.exit(main())
