"""What the engine needs to run one notebook's job: an `Executor`, injectable as nbclient's
kernel manager is. The real one is a warm sandboxed slot (`execute.warm.WarmSlot`); tests of
what happens around execution (assembling, judging, messages, feedback) use
`execute.fake.FakeExecutor`, which starts no process.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from autograder.execute.runner import Execution, Job


@runtime_checkable
class Executor(Protocol):
    """Runs one job (its cells, then its probes) and says what came back. `run` never raises
    for anything the student's code did; `layers_off` names the sandbox layers that were off
    (shown in the result, so an unsafe run is never mistaken for a safe one)."""

    @property
    def layers_off(self) -> list[str]: ...

    def run(self, job: Job) -> Execution: ...
