"""The warm worker: imports torch and the notebook machinery once, then forks a fresh, sandboxed
child per submission, so a submission costs milliseconds instead of the seconds of `import torch`.

It holds nothing secret (the same modules as the child) and runs nothing that could start a
thread pool: an OpenMP pool started before fork would deadlock the children. It enforces each job's
wall-clock timeout by killing the job's PID namespace, which takes everything the job started.

    python -I -m autograder.execute.forkserver
    stdout: {"ready": true, "sandbox": {layer: status}}        once, when warm
    stdin:  {"scratch": "/tmp/autograder-...", "timeout": 60}   one JSON line per job
    stdout: {"returncode": 0, "timed_out": false}              one JSON line per job
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from autograder.execute import sandbox

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_jobs = itertools.count()  # numbers this server's jobs: each gets a uid of its own


def preload() -> None:
    """Everything a job imports, imported once here (about 2 s, shared by every fork), and
    the first-call costs of autograd and the optimizer paid on one-element tensors: far below
    any size at which torch would start a thread pool (which must never exist before fork)."""
    import torch
    import torch._dynamo  # noqa: F401  (imported by the first optimizer: another second)
    from torch import nn, optim

    from autograder.execute import child

    torch.set_num_threads(1)
    model = nn.Linear(1, 1)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    loss = nn.MSELoss()(model(torch.ones(1, 1)), torch.ones(1, 1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    child.make_shell()  # the IPython shell, created once; each fork gets a fresh namespace
    gc.freeze()  # the children's garbage collector leaves these shared pages alone


def job_environment(scratch: Path) -> dict[str, str]:
    return {"HOME": str(scratch / "work"), "TMPDIR": str(scratch / "tmp"),
            "IPYTHONDIR": str(scratch / "tmp" / "ipython")}


def spawn(scratch: Path, timeout: float, job: Callable[[dict[str, str]], int],
          log_fd: int) -> tuple[int, int]:
    """Fork the sandboxed process that runs `job`. Returns (pid of our child, pid of PID 1 of
    the job's namespace, as seen from here)."""
    read_end, write_end = os.pipe()
    uid = sandbox.sandbox_uid(next(_jobs))
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _become_job_parent(scratch, timeout, job, log_fd, write_end, uid)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        inner = pipe.read().decode() or "0"
    return pid, int(inner)


def _become_job_parent(scratch: Path, timeout: float, job: Callable[[dict[str, str]], int],
                       log_fd: int, pid_pipe: int, uid: int) -> None:
    """In the fork: enter the namespaces, fork PID 1, pass its pid up, wait, exit like it."""
    code = 70
    try:
        _die_with_parent_and_adopt_orphans()  # a killed fork server takes its jobs along
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        report = sandbox.enter_namespaces()
        inner = os.fork()
        if inner == 0:
            os.close(pid_pipe)
            _become_init(scratch, timeout, job, report, uid)
        os.write(pid_pipe, str(inner).encode())
        os.close(pid_pipe)
        _, status = os.waitpid(inner, 0)
        code = os.waitstatus_to_exitcode(status)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _become_init(scratch: Path, timeout: float, job: Callable[[dict[str, str]], int],
                 report: dict[str, str], uid: int) -> None:
    """PID 1 of the job's namespace: confine, fork the job, reap, and leave when the job
    does -- which ends the namespace and every process the job left behind. (The job is not
    PID 1 itself, so that signals it sends itself work as usual.)"""
    code = 70
    try:
        _die_with_parent_and_adopt_orphans()
        os.environ.update(job_environment(scratch))
        tempfile.tempdir = None  # recomputed from TMPDIR
        sandbox.confine(scratch, timeout, report, uid)
        job_pid = os.fork()
        if job_pid == 0:
            try:
                code = job(report)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        while True:
            pid, status = os.wait()
            if pid == job_pid:
                break
        # PID 1 cannot re-raise a signal on itself: 128 + signal, as shells report it.
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def run_one(scratch: Path, timeout: float) -> dict:
    from autograder.execute import child

    log = os.open(scratch / "child.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        pid, inner = spawn(scratch, timeout, lambda report: child.run(scratch), log)
    finally:
        os.close(log)
    return wait_or_kill(pid, inner, timeout, grader=sys.stdin.fileno())


def wait_or_kill(pid: int, inner: int, timeout: float, grader: int | None = None) -> dict:
    """Wait for the job, at most `timeout` s. If the `grader` pipe closes meanwhile (the grader
    is gone), kill the job and leave: nothing outlives the grader for long."""
    pidfd = os.pidfd_open(pid)
    try:
        watched = [pidfd] if grader is None else [pidfd, grader]
        ready, _, _ = select.select(watched, [], [], timeout)
        finished = pidfd in ready
    finally:
        os.close(pidfd)
    # On time or not, nothing the job started outlives it: killing PID 1 of its namespace
    # kills the namespace; the process group catches the rest where namespaces are off. PID 1
    # is killed only if still running: once our child has finished, it has reaped PID 1, whose
    # number may already belong to someone else.
    targets = [(os.killpg, pid)] if finished else [(os.kill, inner), (os.killpg, pid)]
    for kill, target in targets:
        try:
            if target > 0:
                kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _, status = os.waitpid(pid, 0)
    _reap_orphans()
    if grader is not None and grader in ready and not finished:
        sys.exit(0)
    return {"returncode": None if not finished else os.waitstatus_to_exitcode(status),
            "timed_out": not finished}


def _reap_orphans(patience: float = 2.0) -> None:
    """Killed jobs' processes are handed to us (we are a subreaper): collect them, so nothing
    is left behind, not even a zombie. Bounded, in case a process outside a namespace lingers."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.005)


def check_sandbox() -> dict[str, str]:
    """Build the sandbox once around a job that only reports which layers are on."""
    with tempfile.TemporaryDirectory(prefix="autograder-check-") as folder:
        scratch = Path(folder)
        report_path = scratch / "sandbox.json"

        def report_layers(report: dict[str, str]) -> int:
            report_path.write_text(json.dumps(report))
            return 0

        pid, inner = spawn(scratch, 10, report_layers, sys.stderr.fileno())
        wait_or_kill(pid, inner, 10)
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            report = {}
    return {layer: report.get(layer, "off (the check did not finish)")
            for layer in sandbox.LAYERS}


def _die_with_parent_and_adopt_orphans() -> None:
    """For the job's ancestors, which are single-threaded (the parent-death signal follows the
    thread that forked). The fork server itself watches its stdin instead."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _adopt_orphans() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main() -> int:
    _adopt_orphans()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader decides when we stop
    preload()
    print(json.dumps({"ready": True, "sandbox": check_sandbox()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        reply = run_one(Path(request["scratch"]), float(request["timeout"]))
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
