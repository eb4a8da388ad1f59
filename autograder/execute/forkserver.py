"""The warm worker: imports torch and the notebook machinery once, then forks a fresh child per
submission, so a submission costs milliseconds instead of the seconds of `import torch`.

It holds nothing secret (the same modules as the child) and never computes anything itself: an
OpenMP thread pool started before fork would deadlock the children. It enforces each job's
wall-clock timeout and kills everything the job started.

    python -I -m autograder.execute.forkserver
    stdin:  {"scratch": "/tmp/autograder-...", "timeout": 60}   one JSON line per job
    stdout: {"returncode": 0, "timed_out": false}              one JSON line per job
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import tempfile
import traceback
from pathlib import Path

PR_SET_PDEATHSIG = 1


def preload() -> None:
    """Everything a job imports, imported once here (about 2 s, shared by every fork)."""
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported by the first optimizer: another second)
    import torch.nn  # noqa: F401
    import torch.optim  # noqa: F401
    from IPython.core.interactiveshell import InteractiveShell  # noqa: F401

    from autograder.execute import child  # noqa: F401


def job_environment(scratch: Path) -> dict[str, str]:
    return {"HOME": str(scratch / "work"), "TMPDIR": str(scratch / "tmp"),
            "IPYTHONDIR": str(scratch / "tmp" / "ipython")}


def run_one(scratch: Path, timeout: float) -> dict:
    log = os.open(scratch / "child.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    pid = os.fork()
    if pid == 0:  # the student's process
        code = 70
        try:
            os.setsid()  # its own process group, killed as a whole below
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.environ.update(job_environment(scratch))
            tempfile.tempdir = None  # recomputed from TMPDIR
            from autograder.execute import child

            code = child.run(scratch)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never return into the server's loop, skip atexit handlers
    os.close(log)
    return wait_or_kill(pid, timeout)


def wait_or_kill(pid: int, timeout: float) -> dict:
    pidfd = os.pidfd_open(pid)
    try:
        finished, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    _kill_group(pid)  # on time or not, nothing the job started outlives it
    _, status = os.waitpid(pid, 0)
    return {"returncode": None if not finished else os.waitstatus_to_exitcode(status),
            "timed_out": not finished}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main() -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader decides when we stop
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        reply = run_one(Path(request["scratch"]), float(request["timeout"]))
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
