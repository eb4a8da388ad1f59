"""The warm server: imports torch and the notebook machinery once, then forks a fresh,
sandboxed child per submission, so a submission costs milliseconds instead of the seconds of
`import torch`.

It holds nothing secret (the same modules as the child) and runs nothing that could start a
thread pool: an OpenMP pool started before fork would deadlock the children.

One warm server serves several slots, one job at a time each: the grader asks for a slot by
sending it one end of a socket pair; the server forks the slot, which serves from PID 1 of a
PID namespace of its own. Each job is then a single fork of that slot, and after each job --
finished, crashed or out of time -- the slot kills every other process in its namespace,
which takes everything the job started, setsid or not.

    python -I -m autograder.execute.forkserver      stdin: a UNIX socket (the control channel)
    control: b"slot" + one file descriptor           per slot wanted
    slot:    {"ready": true, "sandbox": {layer: status}}       once, when the slot is up
    grader:  {"timeout": 60} + [job channel, log pipe]         per job
    slot:    {"pid": 7} + [the job's pidfd]                    when the job has started
    slot:    {"returncode": 0, "timed_out": false}             when it and all it started ended

The job talks to the grader itself, over its channel (`child.serve`); the slot only starts it,
kills what is left of it, and says how it ended.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autograder.execute import sandbox
from autograder.execute.child import CHANNEL_FD

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_INTERNAL_ERROR = 70


class GraderGone(Exception):
    """The grader closed the slot while a job ran: the job is killed, the slot ends."""


@dataclass
class Server:
    """One slot: its id on the host, its layers, and the grader's end of the conversation."""

    host_pid: int  # the slot's pid as the host sees it: part of each job's uid
    report: dict[str, str]  # the slot-wide layers (the PID namespace)
    in_pid_namespace: bool
    channel: int | None = None  # the slot's socket: watched, to stop when the grader is gone
    jobs: itertools.count = field(default_factory=itertools.count)


def preload() -> None:
    """Everything a job imports, imported once here (about 2 s, shared by every fork), and
    the first-call costs of autograd and the optimizer paid on one-element tensors: far below
    any size at which torch would start a thread pool (which must never exist before fork)."""
    import torch
    import torch._dynamo  # noqa: F401  (imported by the first optimizer: another second)
    from torch import nn, optim

    from autograder.execute import child

    sandbox.preload()
    torch.set_num_threads(1)
    model = nn.Linear(1, 1)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    loss = nn.MSELoss()(model(torch.ones(1, 1)), torch.ones(1, 1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # First calls that each job would otherwise pay again (milliseconds each): seeding (it
    # looks for other devices once; the generator's state is left as import made it) and
    # printing tensors, which notebooks do.
    state = torch.get_rng_state()
    torch.manual_seed(0)
    torch.set_rng_state(state)
    str(model.weight), repr(loss)
    child.make_shell()  # the IPython shell, created once; each fork gets a fresh namespace
    # What IPython imports on the first run_cell: 5 ms that each job would pay again.
    import bdb  # noqa: F401

    import IPython.core.logger  # noqa: F401
    gc.freeze()  # the children's garbage collector leaves these shared pages alone


def job_environment(folder: Path) -> dict[str, str]:
    return {"HOME": str(folder), "TMPDIR": str(folder), "IPYTHONDIR": str(folder / ".ipython")}


def spawn(server: Server, timeout: float, job: Callable[[dict[str, str]], int],
          channel_fd: int, log_fd: int) -> int:
    """Fork the sandboxed process that runs `job`, with `channel_fd` as its file descriptor 3
    and `log_fd` as its stdout and stderr; returns its pid. The job's folder lives in its own
    private /tmp (sized in bytes and files), never on the host's disk."""
    uid = sandbox.sandbox_uid(server.host_pid, next(server.jobs))
    pid = os.fork()
    if pid == 0:
        _become_job(server, timeout, job, channel_fd, log_fd, uid)
    return pid


def _become_job(server: Server, timeout: float,
                job: Callable[[dict[str, str]], int], channel_fd: int, log_fd: int,
                uid: int) -> None:
    """In the fork: new namespaces, confinement, then the job; never returns."""
    code = EXIT_INTERNAL_ERROR
    try:
        _die_with_parent()
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # nothing to read
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        if channel_fd != CHANNEL_FD:
            os.dup2(channel_fd, CHANNEL_FD, inheritable=False)
        os.set_inheritable(CHANNEL_FD, False)  # the job's own subprocesses do not get it
        os.closerange(CHANNEL_FD + 1, os.sysconf("SC_OPEN_MAX"))  # the slot's socket is not
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the job's (the job handles SIGINT)
        report = {**server.report, **sandbox.enter_job_namespaces()}
        folder = sandbox.confine(None, timeout, report, uid)
        os.environ.update(job_environment(folder))
        tempfile.tempdir = None  # recomputed from TMPDIR
        code = job(report)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_one(server: Server, channel: socket.socket, timeout: float, fds: list[int]) -> dict:
    """One job: its channel to the grader and its log are `fds`; the grader gets the job's
    pidfd (to interrupt a step that runs too long), then how it ended."""
    from autograder.execute import child

    job_channel, log = fds
    try:
        pid = spawn(server, timeout, lambda report: child.serve(), job_channel, log)
    finally:
        os.close(job_channel)
        os.close(log)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(channel, [json.dumps({"pid": pid}).encode()], [pidfd])
    finally:
        os.close(pidfd)
    return wait_or_kill(server, pid, timeout, grader=server.channel)


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
        raise GraderGone
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
    read_end, write_end = os.pipe()

    def report_layers(report: dict[str, str]) -> int:
        os.write(CHANNEL_FD, json.dumps(report).encode())
        return 0

    try:
        pid = spawn(server, 10, report_layers, write_end, sys.stderr.fileno())
        os.close(write_end)
        wait_or_kill(server, pid, 10)
        try:
            report = json.loads(os.read(read_end, 65536))
        except (OSError, ValueError):
            report = {}
    finally:
        os.close(read_end)
    return {layer: report.get(layer, "off (the check did not finish)")
            for layer in sandbox.LAYERS}


def serve(server: Server, channel: socket.socket, cgroups: list[str]) -> int:
    """A slot's life: join its cgroups (each job is born in them), report the layers, then one
    job per request until the grader hangs up. The slot's socket carries one message per
    request or reply (SOCK_SEQPACKET), file descriptors with them."""
    server.report["cgroup"] = sandbox.join_cgroups(cgroups) or server.report["cgroup"]
    server.channel = channel.fileno()
    channel.send(json.dumps({"ready": True, "sandbox": check_sandbox(server)}).encode())
    try:
        while True:
            message, fds, _, _ = socket.recv_fds(channel, 65536, 2)
            if not message:
                break
            request = json.loads(message)
            reply = run_one(server, channel, float(request["timeout"]), fds)
            channel.send(json.dumps(reply).encode())
    except (GraderGone, BrokenPipeError, ConnectionResetError):
        pass
    return 0


def _start_slot(channel: socket.socket, user_namespace_error: str | None) -> None:
    """In a fork of the warm server: a PID namespace whose PID 1 serves the slot. (This
    process only waits, then removes the slot's cgroups; the namespace's PID 1 must be a
    fresh fork.) Never returns."""
    code = EXIT_INTERNAL_ERROR
    cgroups: list[str] = []
    try:
        _die_with_parent()
        host_pid = os.getpid()
        report = sandbox.enter_pid_namespace(user_namespace_error)
        cgroups, report["cgroup"] = sandbox.slot_cgroups(str(host_pid))
        in_pid_namespace = report["pid-namespace"].startswith("on")
        server = Server(host_pid, report, in_pid_namespace)
        if not in_pid_namespace:
            _adopt_orphans()
            code = serve(server, channel, cgroups)
            return
        init = os.fork()
        if init == 0:
            try:
                _die_with_parent()
                code = serve(server, channel, cgroups)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        channel.close()
        _, status = os.waitpid(init, 0)
        code = max(0, os.waitstatus_to_exitcode(status))
    except BaseException:
        traceback.print_exc()
    finally:
        sandbox.remove_cgroups(cgroups)  # everything in them died with the namespace
        os._exit(code)


def _die_with_parent() -> None:
    """For single-threaded processes (the parent-death signal follows the thread that forked)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _adopt_orphans() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main() -> int:
    """The warm server: import once, then fork a slot for each socket the grader sends, until
    the grader closes the control channel; then wait for the slots to end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader decides when we stop
    grader = os.getppid()
    _die_with_parent()  # a grader killed outright takes its server (and slots, jobs) along
    if os.getppid() != grader:  # it died before we asked
        return 0
    control = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again: a received descriptor must never be 0
    user_namespace_error = sandbox.enter_user_namespace()  # before any thread exists
    preload()
    slots: set[int] = set()
    while True:
        message, fds, _, _ = socket.recv_fds(control, 64, 1)
        if not message:
            break
        for fd in fds:
            channel = socket.socket(fileno=fd)
            pid = os.fork()
            if pid == 0:
                control.close()
                _start_slot(channel, user_namespace_error)
            channel.close()
            slots.add(pid)
        slots -= _finished(slots)
    for pid in slots:
        os.waitpid(pid, 0)
    return 0


def _finished(pids: set[int]) -> set[int]:
    done = set()
    for pid in pids:
        if os.waitpid(pid, os.WNOHANG)[0]:
            done.add(pid)
    return done


if __name__ == "__main__":
    code = main()
    # No exit handlers: IPython's would write into its folder after the grader removed it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
