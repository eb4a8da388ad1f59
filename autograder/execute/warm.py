"""Trusted side of the warm slots: start a `forkserver` process and hand its slots jobs.

One warm server per machine (or per Dask worker) imports torch once; each parallel slot of it
runs one job at a time. A slot that dies is opened again for the next job, and a server that
dies is started again, so one broken submission never takes the pool down.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO

from autograder.errors import UserError
from autograder.execute.runner import Execution, Job, SlotGone, run_job
from autograder.tempfiles import log_problems, make_temp_dir, remove_tree


class SlotStartError(RuntimeError):
    """A warm slot could not start (a broken install, most likely)."""


class UnsafeSandboxError(UserError):
    """A sandbox layer that protects the grader itself is off, and --unsafe was not given."""


def check_protecting_layers(report: dict[str, str]) -> None:
    """Refuse to run student code where it could reach the grader itself: write into its
    installation (no `root` layer) or take the machine's memory (no `cgroup` layer)."""
    from autograder.execute.sandbox import PROTECTING_LAYERS

    off = [f"{layer}: {report.get(layer, 'off (not reported)')}" for layer in PROTECTING_LAYERS
           if not report.get(layer, "").startswith("on")]
    if off:
        raise UnsafeSandboxError(
            "refusing to grade: sandbox layers that protect the grader itself are off ("
            + "; ".join(off) + "). Run as root on Linux with cgroup v1 and user namespaces "
            "(see `autograder doctor`), or pass --unsafe to grade anyway, knowing that "
            "student code is then less contained")


def server_environment() -> dict[str, str]:
    """A bare environment: none of the instructor's variables, one thread per process."""
    return {
        "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class WarmServer:
    """The process that imports torch once (about 2 s) and forks slots on request."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._errors: IO[bytes] | None = None  # its stderr, read if a slot fails to start
        self._lock = threading.Lock()  # slots are asked for from several threads
        self._ipython: weakref.finalize | None = None  # removes its IPYTHONDIR

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def launch(self) -> None:
        """Start warming up, without waiting for it."""
        with self._lock:
            if self.running:
                return
            self._stop()
            ours, theirs = socket.socketpair()
            # Its stderr goes to a file: a pipe nobody reads would fill up and block it.
            self._errors = tempfile.TemporaryFile()
            ipython = make_temp_dir("ipython")  # one per server, removed when it stops
            self._ipython = weakref.finalize(self, lambda: log_problems(remove_tree(ipython)))
            with theirs:
                self._process = self._spawn(
                    [sys.executable, "-I", "-m", "autograder.execute.forkserver"],
                    stdin=theirs, stdout=subprocess.DEVNULL, stderr=self._errors,
                    env={**server_environment(), "IPYTHONDIR": str(ipython)},
                    start_new_session=True)
            self._control = ours

    @staticmethod
    def _spawn(command: list[str], **options: object) -> subprocess.Popen:
        """Start the server from a thread of its own that lives exactly as long as it does.
        The server dies with its parent (PR_SET_PDEATHSIG), and Linux means the parent
        *thread*: started from a grading thread that then ends (a service's request thread,
        a thread pool shrinking), it would be killed with the jobs in it."""
        spawned = threading.Event()
        box: dict[str, object] = {}

        def keep() -> None:
            try:
                box["process"] = subprocess.Popen(command, **options)
            except BaseException as error:  # handed to the caller below
                box["error"] = error
                return
            finally:
                spawned.set()
            box["process"].wait()  # returns when the server has ended

        threading.Thread(target=keep, name="autograder-warm-server", daemon=True).start()
        spawned.wait()
        if "error" in box:
            raise box["error"]
        return box["process"]

    def open_slot(self) -> socket.socket:
        """A new slot of the server; returns our end of its socket (one message per request
        or reply, file descriptors with them)."""
        self.launch()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs, self._lock:
            try:
                socket.send_fds(self._control, [b"slot"], [theirs.fileno()])
            except OSError:
                pass  # the server is gone: the slot's socket reads as closed
        return ours

    def errors(self) -> str:
        if self._errors is None:
            return ""
        self._errors.seek(0)
        return self._errors.read()[-2000:].decode(errors="replace")

    def close(self) -> None:
        """Stop: the server sees its control channel end and exits once its slots have;
        killed only if it does not within a second (exiting, not killed, it is waited for
        all the way down, so its CPU and memory show in the grader's resource usage)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self._ipython is not None:
            self._ipython()
            self._ipython = None


class RunningJob:
    """One job's process, as the grader holds it: the channel to it (`child.serve` answers
    there), its pidfd (to interrupt or kill it), and its stdout/stderr pipe."""

    def __init__(self, owner: WarmSlot, channel: socket.socket, pidfd: int, log: int) -> None:
        self.owner = owner  # the slot it runs in
        self.channel = channel
        self.pidfd = pidfd
        self.log = log
        self.ended: tuple[int | None, bool] | None = None  # (exit code, timed out), once known

    def signal(self, number: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, number)
        except ProcessLookupError:
            pass  # already gone

    @property
    def slot(self) -> socket.socket:
        """The socket of the slot it runs in (readable when the job's processes are gone)."""
        return self.owner.socket

    def finish(self, kill: bool = True, patience: float = 5.0) -> tuple[int | None, bool]:
        """Wait for the slot to say how the job ended (it answers once every process the job
        started is gone), killing the job first if `kill` or if it does not end by itself
        within a second."""
        if self.owner.job is self:
            self.owner.job = None
        if self.ended is None:
            if not kill and not select.select([self.slot], [], [], 1.0)[0]:
                kill = True
            if kill:
                self.signal(signal.SIGKILL)
            self.ended = self.owner.read_end(patience)
        for fd in (self.pidfd, self.log):
            os.close(fd)
        self.channel.close()
        return self.ended


class WarmSlot:
    """One slot of a warm server: runs one job at a time in a fresh sandboxed process. It is
    the grader's real `Executor` (`execute.executor`): `run(job)`, `layers_off`."""

    def __init__(self, server: WarmServer | None = None, unsafe: bool = False) -> None:
        self._own_server = server is None
        self.unsafe = unsafe  # run jobs even where a layer protecting the grader is off
        self.server = server or WarmServer()
        self.socket: socket.socket | None = None
        self._ready = False
        self.sandbox: dict[str, str] = {}  # layer -> "on (...)" or "off (why)", when started
        self.job: RunningJob | None = None  # the job in flight, if any
        self.cancelled = False  # the run was stopped: no job starts again

    def cancel(self) -> None:
        """Stop now (the instructor pressed Ctrl-C): the job in flight is killed and no job
        starts after it. Called from another thread than the one running the job."""
        self.cancelled = True
        job = self.job
        if job is not None:
            try:
                job.signal(signal.SIGKILL)
            except OSError:
                pass  # it finished meanwhile and its pidfd is closed

    @property
    def layers_off(self) -> list[str]:
        return [f"{layer}: {state}" for layer, state in self.sandbox.items()
                if not state.startswith("on")]

    def run(self, job: Job) -> Execution:
        """Run one notebook's job here (`runner.run_job`), whatever the student's code does."""
        return run_job(job, self)

    @property
    def running(self) -> bool:
        return (self.socket is not None and self._ready and self.server.running
                and not self._hung_up())

    def launch(self) -> None:
        """Start warming up (about 2 s) without waiting for it."""
        if self.socket is not None and self._ready and self._hung_up():
            self._drop_slot()  # its server or the slot itself died since the last job
        if self.socket is None:
            self.socket = self.server.open_slot()
            self._ready = False

    def start(self) -> None:
        """Launch if needed and wait until warm."""
        self.launch()
        if self._ready:
            return
        ready = self.socket.recv(65536)
        if not ready:
            message = self.server.errors()
            self._drop_slot()
            raise SlotStartError(f"the warm slot did not start:\n{message}")
        self.sandbox = json.loads(ready)["sandbox"]
        if not self.unsafe:
            try:
                check_protecting_layers(self.sandbox)
            except UnsafeSandboxError:
                self._drop_slot()
                raise
        self._ready = True

    def start_job(self, timeout: float) -> RunningJob:
        """A fresh sandboxed process, ready to be sent steps; killed by the slot after
        `timeout` s whatever happens. Raises SlotGone if the slot died meanwhile, or the run
        was cancelled."""
        if self.cancelled:
            raise SlotGone
        self.start()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_read, log_write = os.pipe()
        try:
            socket.send_fds(self.socket, [json.dumps({"timeout": timeout}).encode()],
                            [theirs.fileno(), log_write])
            message, fds, _, _ = socket.recv_fds(self.socket, 65536, 1)
        except OSError:  # a broken pipe, a reset connection
            message, fds = b"", []
        finally:
            theirs.close()
            os.close(log_write)
        if not message or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            ours.close()
            os.close(log_read)
            self._drop_slot()
            raise SlotGone
        os.set_blocking(log_read, False)
        self.job = RunningJob(self, ours, fds[0], log_read)
        if self.cancelled:  # cancelled while it started: it ends like a killed job
            self.job.signal(signal.SIGKILL)
        return self.job

    def read_end(self, patience: float) -> tuple[int | None, bool]:
        """The slot's word on how the job ended; a slot that says nothing is dropped."""
        readable, _, _ = select.select([self.socket], [], [], patience)
        line = b""
        if readable:
            try:
                line = self.socket.recv(65536)
            except OSError:
                line = b""
        if not line:  # the slot died during this job: counted against the job, reopened later
            self._drop_slot()
            return -9, False
        reply = json.loads(line)
        return reply["returncode"], reply["timed_out"]

    def _hung_up(self) -> bool:
        """Between jobs the slot says nothing: anything readable means it has closed."""
        readable, _, _ = select.select([self.socket], [], [], 0)
        return bool(readable)

    def _drop_slot(self) -> None:
        if self.socket is not None:
            try:
                self.socket.close()
            except OSError:
                pass
        self.socket = None
        self._ready = False

    def close(self) -> None:
        """End the slot (a job in flight is killed); a server of its own ends with it."""
        self._drop_slot()
        if self._own_server:
            self.server.close()


class WarmPool:
    """`size` slots of one warm server, started on first use, shared by the grading threads."""

    def __init__(self, size: int, unsafe: bool = False) -> None:
        self.server = WarmServer()
        self._idle: queue.SimpleQueue[WarmSlot] = queue.SimpleQueue()
        self._slots = [WarmSlot(self.server, unsafe=unsafe) for _ in range(size)]
        for slot in self._slots:
            self._idle.put(slot)

    @property
    def size(self) -> int:
        return len(self._slots)

    @contextmanager
    def slot(self) -> Iterator[WarmSlot]:
        """A free slot, for one job at a time (waits for one)."""
        slot = self._idle.get()
        try:
            yield slot
        finally:
            self._idle.put(slot)

    def launch(self) -> None:
        """Start warming up, without waiting: the caller can meanwhile do its own
        preparation, and the first job waits only for what is left."""
        self.server.launch()
        for slot in self._slots:
            slot.launch()

    def start(self) -> None:
        """Warm up (about 2 s, once for all slots) before the first job is timed."""
        self.launch()
        for slot in self._slots:
            slot.start()

    def cancel(self) -> None:
        """Kill the jobs in flight and start no more (Ctrl-C): their threads end at once."""
        for slot in self._slots:
            slot.cancel()

    def close(self) -> None:
        for slot in self._slots:
            slot.close()
        self.server.close()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
