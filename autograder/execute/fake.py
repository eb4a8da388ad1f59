"""An `Executor` that starts no process: each job gets the Execution its script says.

For tests of everything around execution (assembling, judging, messages, feedback, the
service's queue): they run in milliseconds and assert on real judged results. It runs no
student code, and nothing chooses it but a caller that passes it (`Grader(executors=...)`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from autograder.execute import wire
from autograder.execute.child import to_data
from autograder.execute.runner import Execution, Job, ProbeCall, ProbeRecord
from autograder.results import GRADED

# A probe's scripted value: the value itself, or a function of the call (its inputs) that
# returns it; a function that raises makes the probe fail as the student's code raising would.
Answer = Mapping[str, Any] | Callable[[ProbeCall], Any]


class FakeExecutor:
    """Executor whose `run(job)` returns, without a process:

    - with `script`: `script(job)`, whatever Execution it builds;
    - otherwise an Execution of `status` and `reason` where every cell of the job ran, with
      the error `cell_errors[name]` if any, and each probe has the value `values` gives it
      (a mapping by probe name, or a function of the call), or the error `errors[name]`;
      a probe given neither brought nothing back (as after a timeout).

    `jobs` keeps every job it was asked to run (what was assembled, which inputs were drawn).
    """

    def __init__(self, values: Answer | None = None, *, errors: Mapping[str, str] | None = None,
                 status: str = GRADED, reason: str = "",
                 cell_errors: Mapping[str, str] | None = None, output: str = "",
                 seconds: float = 0.01, layers_off: list[str] | None = None,
                 script: Callable[[Job], Execution] | None = None) -> None:
        self.values = values if values is not None else {}
        self.errors = dict(errors or {})
        self.status, self.reason, self.output, self.seconds = status, reason, output, seconds
        self.cell_errors = dict(cell_errors or {})
        self._layers_off = list(layers_off or [])
        self.script = script
        self.jobs: list[Job] = []
        self._lock = threading.Lock()  # one fake may serve several grading threads

    @property
    def layers_off(self) -> list[str]:
        return list(self._layers_off)

    def run(self, job: Job) -> Execution:
        with self._lock:
            self.jobs.append(job)
        if self.script is not None:
            return self.script(job)
        cells = [{"name": cell.name, "error": self.cell_errors.get(cell.name),
                  "output": self.output if index == 0 else ""}
                 for index, cell in enumerate(job.cells)]
        probes = {}
        for call in job.probes:
            record = self._probe(call)
            if record is not None:
                probes[call.name] = record
        return Execution(status=self.status, reason=self.reason, cells=cells, probes=probes,
                         seconds=self.seconds, attempts=1)

    def _probe(self, call: ProbeCall) -> ProbeRecord | None:
        if call.name in self.errors:
            return ProbeRecord(ok=False, error=self.errors[call.name])
        try:
            if callable(self.values):
                value = self.values(call)
            elif call.name in self.values:
                value = self.values[call.name]
            else:
                return None
            # Across the boundary as the real child's values come: plain data, one frame
            # (without its length prefix), decoded with the grader's bounds.
            frame = wire.encode(to_data(value))[4:]
            return ProbeRecord(ok=True, value=wire.decode(frame))
        except Exception as error:  # as the student's code raising under the probe
            return ProbeRecord(ok=False, error=f"Your code raised {type(error).__name__}: {error}")
