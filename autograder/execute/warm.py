"""Trusted side of the warm workers: start `forkserver` processes and hand them jobs.

One warm worker per parallel slot; each runs one job at a time. A worker that dies is started
again for the next job, so one broken submission never takes the pool down.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO


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
        "IPYTHONDIR": os.path.join(tempfile.gettempdir(), "autograder-ipython"),
    }


class WarmWorker:
    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._errors: IO[bytes] | None = None  # its stderr, read if it fails to start
        self._ready = False
        self.sandbox: dict[str, str] = {}  # layer -> "on (...)" or "off (why)", when started

    @property
    def layers_off(self) -> list[str]:
        return [f"{layer}: {state}" for layer, state in self.sandbox.items()
                if not state.startswith("on")]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def launch(self) -> None:
        """Start warming up (about 2 s) without waiting for it."""
        if self.running:
            return
        self.close()
        # Its own stderr goes to a file: a pipe nobody reads would fill up and block it.
        self._errors = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-m", "autograder.execute.forkserver"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors,
            env=server_environment(), text=True, start_new_session=True)
        self._ready = False

    def start(self) -> None:
        """Launch if needed and wait until warm."""
        self.launch()
        if self._ready:
            return
        ready = self._process.stdout.readline()
        if not ready:
            self._process.wait()
            self._errors.seek(0)
            message = self._errors.read()[-2000:].decode(errors="replace")
            self.close()
            raise WorkerStartError(f"the warm worker did not start:\n{message}")
        self.sandbox = json.loads(ready)["sandbox"]
        self._ready = True

    def run(self, scratch: Path, timeout: float) -> tuple[int | None, bool]:
        """Run the job in `scratch`; returns (exit code or None, timed out)."""
        self.start()
        request = json.dumps({"scratch": str(scratch), "timeout": timeout})
        try:
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:  # the worker itself died: count it against this job, restart next time
            self.close()
            return -9, False
        reply = json.loads(line)
        return reply["returncode"], reply["timed_out"]

    def close(self) -> None:
        """Stop: the worker sees its input end, kills any job in flight and exits; killed
        only if it does not within a second (exiting, not killed, it is waited for all the
        way down, so its CPU and memory show in the grader's resource usage)."""
        if self._process is not None:
            try:
                self._process.stdin.close()
            except OSError:  # a broken pipe: it is gone already
                pass
            try:
                self._process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
            self._process = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        self._ready = False


class WarmPool:
    """Up to `size` warm workers, started on first use, shared by the grading threads."""

    def __init__(self, size: int) -> None:
        self._idle: queue.SimpleQueue[WarmWorker] = queue.SimpleQueue()
        self._workers = [WarmWorker() for _ in range(size)]
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

    def close(self) -> None:
        for worker in self._workers:
            worker.close()

    def launch(self) -> None:
        """Start warming every worker, without waiting: the caller can meanwhile do its own
        preparation, and the first job waits only for what is left."""
        for worker in self._workers:
            worker.launch()

    def start(self) -> None:
        """Warm every worker at once (each takes about 2 s), before the first job is timed."""
        self.launch()
        for worker in self._workers:  # they warm up in parallel: waiting in turn costs nothing
            worker.start()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
