"""Trusted side of the warm workers: start a `forkserver` process and hand its slots jobs.

One warm server per machine (or per Dask worker) imports torch once; each parallel slot of it
runs one job at a time. A slot that dies is opened again for the next job, and a server that
dies is started again, so one broken submission never takes the pool down.
"""

from __future__ import annotations

import json
import os
import queue
import select
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TextIO

from autograder.tempfiles import log_problems, make_temp_dir, remove_owned_by, remove_tree


class WorkerStartError(RuntimeError):
    """A warm worker could not start (a broken install, most likely)."""


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
                self._process = subprocess.Popen(
                    [sys.executable, "-I", "-m", "autograder.execute.forkserver"],
                    stdin=theirs, stdout=subprocess.DEVNULL, stderr=self._errors,
                    env={**server_environment(), "IPYTHONDIR": str(ipython)},
                    start_new_session=True)
            self._control = ours

    def open_slot(self) -> socket.socket:
        """A new slot of the server; returns our end of its socket."""
        self.launch()
        ours, theirs = socket.socketpair()
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
            # Killed (by us or anyone), its slots died with it, perhaps while checking the
            # sandbox in a folder of the server's.
            log_problems(remove_owned_by(self._process.pid))
            self._process = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self._ipython is not None:
            self._ipython()
            self._ipython = None


class WarmWorker:
    """One slot of a warm server: runs one job at a time in a fresh sandboxed process."""

    def __init__(self, server: WarmServer | None = None) -> None:
        self._own_server = server is None
        self.server = server or WarmServer()
        self._slot: socket.socket | None = None
        self._reader: TextIO | None = None
        self._writer: TextIO | None = None
        self._ready = False
        self.sandbox: dict[str, str] = {}  # layer -> "on (...)" or "off (why)", when started

    @property
    def layers_off(self) -> list[str]:
        return [f"{layer}: {state}" for layer, state in self.sandbox.items()
                if not state.startswith("on")]

    @property
    def running(self) -> bool:
        return (self._slot is not None and self._ready and self.server.running
                and not self._hung_up())

    def launch(self) -> None:
        """Start warming up (about 2 s) without waiting for it."""
        if self._slot is not None and self._ready and self._hung_up():
            self._drop_slot()  # its server or the slot itself died since the last job
        if self._slot is None:
            self._slot = self.server.open_slot()
            self._reader = self._slot.makefile("r", encoding="utf-8")
            self._writer = self._slot.makefile("w", encoding="utf-8")
            self._ready = False

    def start(self) -> None:
        """Launch if needed and wait until warm."""
        self.launch()
        if self._ready:
            return
        ready = self._reader.readline()
        if not ready:
            message = self.server.errors()
            self._drop_slot()
            raise WorkerStartError(f"the warm worker did not start:\n{message}")
        self.sandbox = json.loads(ready)["sandbox"]
        self._ready = True

    def run(self, scratch: Path, timeout: float) -> tuple[int | None, bool]:
        """Run the job in `scratch`; returns (exit code or None, timed out)."""
        self.start()
        request = json.dumps({"scratch": str(scratch), "timeout": timeout})
        try:
            self._writer.write(request + "\n")
            self._writer.flush()
            line = self._reader.readline()
        except OSError:  # a broken pipe, a reset connection
            line = ""
        if not line:  # the slot died during this job: count it against the job, reopen later
            self._drop_slot()
            return -9, False
        reply = json.loads(line)
        return reply["returncode"], reply["timed_out"]

    def _hung_up(self) -> bool:
        """Between jobs the slot says nothing: anything readable means it has closed."""
        readable, _, _ = select.select([self._slot], [], [], 0)
        return bool(readable)

    def _drop_slot(self) -> None:
        for stream in (self._reader, self._writer, self._slot):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._slot = self._reader = self._writer = None
        self._ready = False

    def close(self) -> None:
        """End the slot (a job in flight is killed); a server of its own ends with it."""
        self._drop_slot()
        if self._own_server:
            self.server.close()


class WarmPool:
    """`size` slots of one warm server, started on first use, shared by the grading threads."""

    def __init__(self, size: int) -> None:
        self.server = WarmServer()
        self._idle: queue.SimpleQueue[WarmWorker] = queue.SimpleQueue()
        self._workers = [WarmWorker(self.server) for _ in range(size)]
        for worker in self._workers:
            self._idle.put(worker)

    @property
    def size(self) -> int:
        return len(self._workers)

    @contextmanager
    def worker(self) -> Iterator[WarmWorker]:
        worker = self._idle.get()
        try:
            yield worker
        finally:
            self._idle.put(worker)

    def launch(self) -> None:
        """Start warming up, without waiting: the caller can meanwhile do its own
        preparation, and the first job waits only for what is left."""
        self.server.launch()
        for worker in self._workers:
            worker.launch()

    def start(self) -> None:
        """Warm up (about 2 s, once for all slots) before the first job is timed."""
        self.launch()
        for worker in self._workers:
            worker.start()

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self.server.close()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
