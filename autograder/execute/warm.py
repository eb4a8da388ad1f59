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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType


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
        self.sandbox: dict[str, str] = {}  # layer -> "on (...)" or "off (why)", when started

    @property
    def layers_off(self) -> list[str]:
        return [f"{layer}: {state}" for layer, state in self.sandbox.items()
                if not state.startswith("on")]

    def start(self) -> None:
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()

    def _start(self) -> subprocess.Popen:
        # Its own stderr goes to a file: a pipe nobody reads would fill up and block it.
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [sys.executable, "-I", "-m", "autograder.execute.forkserver"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                env=server_environment(), text=True, start_new_session=True)
            ready = process.stdout.readline()
            if not ready:
                process.wait()
                errors.seek(0)
                message = errors.read()[-2000:].decode(errors="replace")
                raise WorkerStartError(f"the warm worker did not start:\n{message}")
        self.sandbox = json.loads(ready)["sandbox"]
        return process

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
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process.stdin.close()
            self._process.stdout.close()
            self._process = None


class WarmPool:
    """Up to `size` warm workers, started on first use, shared by the grading threads."""

    def __init__(self, size: int) -> None:
        self._idle: queue.SimpleQueue[WarmWorker] = queue.SimpleQueue()
        self._workers = [WarmWorker() for _ in range(size)]
        for worker in self._workers:
            self._idle.put(worker)

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

    def start(self) -> None:
        """Warm every worker at once (each takes about 2 s), before the first job is timed."""
        errors: list[Exception] = []

        def start(worker: WarmWorker) -> None:
            try:
                worker.start()
            except Exception as error:
                errors.append(error)

        threads = [threading.Thread(target=start, args=(w,)) for w in self._workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
