"""The warm worker: imports torch and the notebook machinery once, then forks a fresh, sandboxed
child per submission, so a submission costs milliseconds instead of the seconds of `import torch`.

It holds nothing secret (the same modules as the child) and runs nothing that could start a
thread pool: an OpenMP pool started before fork would deadlock the children.

It serves from PID 1 of a PID namespace of its own, created once: each job is then a single
fork, and after each job -- finished, crashed or out of time -- the server kills every other
process in the namespace, which takes everything the job started, setsid or not.

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
from dataclasses import dataclass, field
from pathlib import Path

from autograder.execute import sandbox

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_INTERNAL_ERROR = 70


@dataclass
class Server:
    """What every job of this server shares: its id on the host and the namespace report."""

    host_pid: int  # this server's pid as the host sees it: part of each job's uid
    report: dict[str, str]  # the server-wide layers (the PID namespace)
    in_pid_namespace: bool
    jobs: itertools.count = field(default_factory=itertools.count)


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


def spawn(server: Server, scratch: Path, timeout: float, job: Callable[[dict[str, str]], int],
          log_fd: int) -> int:
    """Fork the sandboxed process that runs `job`; returns its pid."""
    uid = sandbox.sandbox_uid(server.host_pid, next(server.jobs))
    pid = os.fork()
    if pid == 0:
        _become_job(server, scratch, timeout, job, log_fd, uid)
    return pid


def _become_job(server: Server, scratch: Path, timeout: float,
                job: Callable[[dict[str, str]], int], log_fd: int, uid: int) -> None:
    """In the fork: new namespaces, confinement, then the job; never returns."""
    code = EXIT_INTERNAL_ERROR
    try:
        _die_with_parent()
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the server's pipes to the grader are not the job's
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        report = {**server.report, **sandbox.enter_job_namespaces()}
        os.environ.update(job_environment(scratch))
        tempfile.tempdir = None  # recomputed from TMPDIR
        sandbox.confine(scratch, timeout, report, uid)
        code = job(report)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_one(server: Server, scratch: Path, timeout: float) -> dict:
    from autograder.execute import child

    log = os.open(scratch / "child.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        pid = spawn(server, scratch, timeout, lambda report: child.run(scratch), log)
    finally:
        os.close(log)
    return wait_or_kill(server, pid, timeout, grader=sys.stdin.fileno())


def wait_or_kill(server: Server, pid: int, timeout: float, grader: int | None = None) -> dict:
    """Wait for the job, at most `timeout` s, then kill whatever it left running. If the
    `grader` pipe closes meanwhile (the grader is gone), kill the job and leave."""
    pidfd = os.pidfd_open(pid)
    try:
        watched = [pidfd] if grader is None else [pidfd, grader]
        ready, _, _ = select.select(watched, [], [], timeout)
        finished = pidfd in ready
    finally:
        os.close(pidfd)
    if server.in_pid_namespace:
        if not finished:
            _kill_all_but_me()
        _, status = os.waitpid(pid, 0)
        _kill_and_reap_the_rest()
    else:  # the process group catches what stayed in it; setsid escapes are out of reach
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status = os.waitpid(pid, 0)
        _reap_orphans()
    if grader is not None and grader in ready and not finished:
        sys.exit(0)
    return {"returncode": None if not finished else os.waitstatus_to_exitcode(status),
            "timed_out": not finished}


def _kill_all_but_me() -> None:
    """From PID 1 of our namespace, kill(-1) reaches every other process in it."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_and_reap_the_rest(patience: float = 2.0) -> None:
    """Whatever the job left behind (a daemon, a setsid escape, a fork bomb's children) dies,
    and, reparented to us as PID 1, is collected: not even a zombie is left. Repeated while
    anything remains, in case one was forking; bounded, in case one lingers in the kernel."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        _kill_all_but_me()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.001)


def _reap_orphans(patience: float = 2.0) -> None:
    """Without a PID namespace: killed jobs' processes are handed to us (a subreaper)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.002)


def check_sandbox(server: Server) -> dict[str, str]:
    """Build the sandbox once around a job that only reports which layers are on."""
    with tempfile.TemporaryDirectory(prefix="autograder-check-") as folder:
        scratch = Path(folder)
        report_path = scratch / "sandbox.json"

        def report_layers(report: dict[str, str]) -> int:
            report_path.write_text(json.dumps(report))
            return 0

        pid = spawn(server, scratch, 10, report_layers, sys.stderr.fileno())
        wait_or_kill(server, pid, 10)
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            report = {}
    return {layer: report.get(layer, "off (the check did not finish)")
            for layer in sandbox.LAYERS}


def serve(server: Server) -> int:
    preload()
    print(json.dumps({"ready": True, "sandbox": check_sandbox(server)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        reply = run_one(server, Path(request["scratch"]), float(request["timeout"]))
        print(json.dumps(reply), flush=True)
    return 0


def _die_with_parent() -> None:
    """For single-threaded processes (the parent-death signal follows the thread that forked)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _adopt_orphans() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader decides when we stop
    host_pid = os.getpid()
    report = sandbox.enter_pid_namespace()
    if not report["pid-namespace"].startswith("on"):
        _adopt_orphans()
        return serve(Server(host_pid, report, in_pid_namespace=False))
    # Our next child is PID 1 of the new namespace: it serves; we only wait. If we are
    # killed, it follows (and with it, the namespace and every job in it).
    init = os.fork()
    if init == 0:
        code = EXIT_INTERNAL_ERROR
        try:
            _die_with_parent()
            code = serve(Server(host_pid, report, in_pid_namespace=True))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(0)  # the grader's pipes are the server's alone: its EOF must reach it
    os.close(1)
    _, status = os.waitpid(init, 0)
    os._exit(max(0, os.waitstatus_to_exitcode(status)))

if __name__ == "__main__":
    sys.exit(main())
