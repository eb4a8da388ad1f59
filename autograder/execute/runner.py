"""Trusted side of execution: drive one notebook's process step by step, and read back data.

The grader sends each cell, then each probe (its inputs leave this process only then), to a
fresh sandboxed process (`child.serve`) and reads each answer as plain, bounded data (`wire`).
Every step has its own time budget. A step that overruns is interrupted (SIGINT, as Jupyter's
interrupt button); one that ignores the interrupt, or crashes its process, costs that step
only: the process is started again, the cells are run again without the steps that failed,
and the probes go on where they stopped. A student function that hung or crashed under one
probe is not called again by the probes after it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from autograder.execute import wire
from autograder.results import CRASHED, GRADED, TIMEOUT, clean_text

OUTPUT_CAP = 10_000  # characters of output kept per cell or probe
LOG_CAP = 20_000  # bytes of the process's own stdout/stderr kept (sandbox errors land there)
MAX_JOB_BYTES = 8 * 1024 * 1024  # everything one process may send, all frames together
MAX_NOTEBOOK_BYTES = 24 * 1024 * 1024  # ... and all the processes of one notebook
MAX_USED_NAMES = 1_000  # "using" notes per probe
MAX_ATTEMPTS = 5  # processes started for one notebook: each one after the first skips a step
START_BUDGET = 10.0  # seconds for a fresh process to say it is ready


@dataclass(frozen=True)
class Cell:
    name: str  # the nbgrader grade_id, or a label for a cell the student added
    source: str
    locked: bool = False  # a release cell the student cannot change: it has its own budget


@dataclass(frozen=True)
class ProbeCall:
    name: str  # unique within the assignment, e.g. "chain_rule_unseen"
    function: str  # a function of the assignment's probes.py
    inputs: Any  # plain data, drawn for this submission


@dataclass(frozen=True)
class Budgets:
    """Seconds. The notebook's limit covers everything; each step also has its own."""

    notebook: float = 60.0
    locked_cell: float = 10.0  # a release cell (it calls the student's code for show)
    probe: float = 2.0  # one call of the student's functions on the grader's inputs
    grace: float = 1.0  # after an interrupt, before the process is killed

    def probe_reserve(self, probes: int) -> float:
        """Time kept for the probes when a cell the student wrote runs long."""
        return min(probes * self.probe, self.notebook / 3)


@dataclass(frozen=True)
class Job:
    cells: list[Cell]
    probes: list[ProbeCall]
    probes_source: str  # the assignment's probes.py, sent with the first probe
    budgets: Budgets


@dataclass
class ProbeRecord:
    """What one probe brought back: a value, or why there is none (a sentence for students)."""

    ok: bool
    value: Any = None
    error: str = ""
    output: str = ""


@dataclass
class Execution:
    status: str  # GRADED, or TIMEOUT / CRASHED when a step was cut short
    reason: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    log: str = ""  # the processes' own stdout/stderr, capped
    seconds: float = 0.0
    attempts: int = 0


class SlotGone(Exception):
    """The slot or its server died: the job in it ended with them."""


class JobProcess(Protocol):
    """One job's process as a slot hands it over (`execute.warm.RunningJob`)."""

    channel: socket.socket  # the child's end answers here (`child.serve`)
    log: int  # its stdout/stderr pipe

    @property
    def slot(self) -> socket.socket: ...  # readable once the job's processes are gone

    def signal(self, number: int) -> None: ...

    def finish(self, kill: bool = True, patience: float = 5.0) -> tuple[int | None, bool]: ...


class Slot(Protocol):
    """What `run_job` needs of a slot (`execute.warm.WarmSlot`): fresh processes, one at a
    time. Declared here so that the slot can run jobs without an import cycle."""

    cancelled: bool

    def start_job(self, timeout: float) -> JobProcess: ...


class _Ended(Exception):
    """The process ended (or broke the protocol) during a step."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class _Conversation:
    """Frames to and from one running job, with deadlines; every byte read is bounded."""

    def __init__(self, job: JobProcess, budget: list[int]) -> None:
        self.job = job
        self.buffer = bytearray()
        self.start = 0  # where the next frame begins in `buffer` (compacted now and then)
        self.budget = budget  # bytes the notebook's processes may still send, all together
        self.received = 0
        self.log = bytearray()
        self.log_open = True  # until its end is read, or the cap: then it is not watched
        self.used: list[str] = []  # names the current probe looked up, in order
        job.channel.setblocking(False)

    def send(self, value: Any) -> None:
        data = memoryview(wire.encode(value))
        while data:
            _, writable, _ = select.select([], [self.job.channel], [], 5.0)
            if not writable:
                raise _Ended("stopped reading what the grader sent")
            try:
                data = data[self.job.channel.send(data):]
            except BlockingIOError:
                continue
            except OSError:
                raise _Ended() from None

    def receive(self, deadline: float) -> Any:
        """The next answer (not a "using" note), or None when the deadline passes."""
        while True:
            frame = self._next_frame()
            if frame is not None:
                if isinstance(frame, dict) and frame.get("kind") == "using":
                    self._note_use(frame.get("name"))
                    continue
                if not isinstance(frame, dict):
                    raise _Ended("sent something that is not an answer")
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            watched = [self.job.channel, self.job.slot]
            if self.log_open:  # past the cap, a process that floods stdout just blocks
                watched.append(self.job.log)
            readable, _, _ = select.select(watched, [], [], left)
            if self.job.log in readable:
                self._drain_log()
            if self.job.channel in readable:
                self._read_channel()
            elif self.job.slot in readable:  # the process tree is gone, nothing more will come
                self._read_channel()
                if self._next_frame_ready():
                    continue
                raise _Ended()

    def _note_use(self, name: Any) -> None:
        if len(self.used) >= MAX_USED_NAMES:
            raise _Ended("sent too many notes")
        if isinstance(name, str):
            self.used.append(name[:200])

    def _read_channel(self) -> None:
        try:
            chunk = self.job.channel.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            if not self._next_frame_ready():
                raise _Ended()
            return
        self.budget[0] -= len(chunk)
        self.received += len(chunk)
        if self.received > MAX_JOB_BYTES:
            raise _Ended(f"sent more than {MAX_JOB_BYTES >> 20} MiB")
        if self.budget[0] < 0:
            raise _Ended(f"sent more than {MAX_NOTEBOOK_BYTES >> 20} MiB in all")
        if self.start > len(self.buffer) // 2:  # drop what was read, in amortised linear time
            del self.buffer[:self.start]
            self.start = 0
        self.buffer += chunk

    def _next_frame_ready(self) -> bool:
        start = self.start
        if len(self.buffer) - start < 4:
            return False
        try:
            length = wire.frame_length(bytes(self.buffer[start:start + 4]))
        except wire.WireError as error:
            raise _Ended(f"sent {error}") from None
        return len(self.buffer) - start >= 4 + length

    def _next_frame(self) -> Any:
        if not self._next_frame_ready():
            return None
        start = self.start
        length = wire.frame_length(bytes(self.buffer[start:start + 4]))
        frame = bytes(self.buffer[start + 4:start + 4 + length])
        self.start = start + 4 + length
        try:
            return wire.decode(frame)
        except wire.WireError as error:
            raise _Ended(f"sent data the grader refuses ({error})") from None

    def _drain_log(self) -> None:
        try:
            chunk = os.read(self.job.log, LOG_CAP - len(self.log))
        except BlockingIOError:
            return
        self.log += chunk
        self.log_open = bool(chunk) and len(self.log) < LOG_CAP


@dataclass
class _Progress:
    """What is known across the processes started for one notebook."""

    cells: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> first report
    skip: set[int] = field(default_factory=set)  # cells never run again
    seconds: dict[int, float] = field(default_factory=dict)  # how long each finished cell took
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    avoid: dict[str, str] = field(default_factory=dict)  # student function -> why not again
    problems: list[str] = field(default_factory=list)  # for the result's reason, in order
    status: str = GRADED
    step: tuple[str, Any] | None = None  # the step in flight: ("cell", index) or ("probe", call)
    finished: bool = False

    def worse(self, status: str) -> None:
        if self.status == GRADED or status == TIMEOUT:
            self.status = status


def run_job(job: Job, slot: Slot) -> Execution:
    """Run `job` in fresh processes of `slot`; returns what came back, whatever the
    student's code did."""
    started = time.monotonic()
    deadline = started + job.budgets.notebook
    progress = _Progress()
    budget = [MAX_NOTEBOOK_BYTES]  # shared by every process started for this notebook
    log = bytearray()
    attempts = 0
    while not progress.finished and attempts < MAX_ATTEMPTS and not slot.cancelled:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        attempts += 1
        try:
            running = slot.start_job(left + job.budgets.grace + 1)
        except SlotGone:
            progress.problems.append("the grader's worker process ended")
            progress.worse(CRASHED)
            continue
        conversation = _Conversation(running, budget)
        why, ended = "", None
        try:
            _drive(conversation, job, progress, deadline)
            conversation.send({"op": "end"})
            ended = running.finish(kill=False)
        except _Ended as error:
            why = error.why
        finally:
            if ended is None:
                ended = running.finish()
            log += conversation.log[:LOG_CAP - len(log)]
        if not progress.finished:
            if progress.step is None:  # not even started: another try would fail the same way
                progress.problems.append(f"the notebook's process could not start "
                                         f"({why or _exit_text(ended[0])})")
                progress.worse(CRASHED)
                break
            _record_end(progress, job, ended, why, conversation.used)
    _give_up(progress, job, deadline, attempts)
    return Execution(status=progress.status, reason="; ".join(progress.problems),
                     cells=[progress.cells[i] for i in sorted(progress.cells)],
                     probes=progress.probes, log=clean_text(log.decode("utf-8", "replace")),
                     seconds=time.monotonic() - started, attempts=attempts)


def _drive(conversation: _Conversation, job: Job, progress: _Progress, deadline: float) -> None:
    """One process: its cells (all but those skipped), then the probes still to do."""
    progress.step = None
    if conversation.receive(time.monotonic() + START_BUDGET) is None:
        raise _Ended("did not start")
    budgets = job.budgets
    reserve = budgets.probe_reserve(len(job.probes))
    for index, cell in enumerate(job.cells):
        if index in progress.skip:
            continue
        progress.step = ("cell", index)
        now = time.monotonic()
        if index in progress.seconds:  # it ran before: run again to rebuild what probes need
            budget = min(deadline - now, 2 * progress.seconds[index] + budgets.grace)
        else:
            left = deadline - now - reserve
            budget = min(budgets.locked_cell, left) if cell.locked else left
        if budget <= 0:
            break  # the cells had their time: the probes get what is left
        reply, cut = _step(conversation, {"op": "cell", "name": cell.name, "source": cell.source,
                                          "cap": OUTPUT_CAP}, budget, budgets.grace)
        if not cut:
            progress.seconds.setdefault(index, time.monotonic() - now)
        if cut:
            progress.skip.add(index)  # it would hang again in the next process
            progress.worse(TIMEOUT)
            progress.problems.append(f"cell '{cell.name}' was stopped after {budget:.3g} s: "
                                     "look for an endless loop or a very long computation")
        progress.cells.setdefault(index, _cell_report(cell, reply, cut, budget))
    for call in job.probes:
        if call.name in progress.probes:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return
        progress.step = ("probe", call)
        conversation.used = []
        budget = min(budgets.probe, left)
        reply, cut = _step(conversation, {"op": "probe", "function": call.function,
                                          "inputs": call.inputs, "cap": OUTPUT_CAP,
                                          "avoid": sorted(progress.avoid),
                                          "probes_source": job.probes_source},
                           budget, budgets.grace)
        progress.probes[call.name] = _probe_record(reply, cut, budget, progress,
                                                   conversation.used)
    progress.step = None
    progress.finished = True


def _step(conversation: _Conversation, command: dict, budget: float,
          grace: float) -> tuple[dict, bool]:
    """Send one step and wait `budget` s for its answer; past that, interrupt it and wait
    `grace` s more. Returns (the answer, whether it was cut). Raises _Ended if the process
    ended or had to be killed."""
    conversation.send(command)
    reply = conversation.receive(time.monotonic() + budget)
    if reply is not None:
        return reply, False
    conversation.job.signal(signal.SIGINT)
    reply = conversation.receive(time.monotonic() + grace)
    if reply is None:
        raise _Ended(f"did not stop within {grace:g} s of being interrupted")
    return reply, True


def _text(value: Any, cap: int) -> str:
    """Child-written text, capped and made encodable; non-text -> ""."""
    return clean_text(value, cap) if isinstance(value, str) else ""


def _cell_report(cell: Cell, reply: dict, cut: bool, budget: float) -> dict[str, Any]:
    error = reply.get("error")
    error = None if error is None else _text(error, 2000)
    if cut:
        error = f"stopped after {budget:.3g} s" + (f" ({error})" if error else "")
    return {"name": cell.name, "error": error, "output": _text(reply.get("output"), OUTPUT_CAP)}


def _probe_record(reply: dict, cut: bool, budget: float, progress: _Progress,
                  used: list[str]) -> ProbeRecord:
    output = _text(reply.get("output"), OUTPUT_CAP)
    culprit = used[-1] if used else "your code"
    if cut:
        why = f"{culprit} did not return within {budget:.3g} s when the grader called it"
        progress.avoid.setdefault(culprit, why)
        progress.worse(TIMEOUT)
        progress.problems.append(f"{why}: look for an endless loop")
        return ProbeRecord(ok=False, error=f"{why}: look for an endless loop", output=output)
    if reply.get("ok") is True and reply.get("kind") == "probe":
        return ProbeRecord(ok=True, value=reply.get("value"), output=output)
    skipped = reply.get("skipped")
    if isinstance(skipped, str) and skipped in progress.avoid:
        return ProbeRecord(ok=False, error=f"not called again: {progress.avoid[skipped]}",
                           output=output)
    error = _text(reply.get("error"), 2000) or "no result"
    return ProbeRecord(ok=False, error=f"Your code raised {error}", output=output)


def _record_end(progress: _Progress, job: Job, ended: tuple[int | None, bool], why: str,
                used: list[str]) -> None:
    """The process ended before the last step: the step in flight is the one that cost it."""
    returncode, timed_out = ended
    if why:
        how, hint = f"the notebook's process {why}", ""
    elif timed_out:
        how, hint = "the notebook's time limit ran out", ""
    else:
        how = f"the notebook's process ended abruptly ({_exit_text(returncode)})"
        hint = ": did the code call exit() or os._exit(), or run out of memory?"
    progress.worse(TIMEOUT if timed_out or "interrupted" in how else CRASHED)
    kind, what = progress.step
    if kind == "cell":
        cell = job.cells[what]
        progress.skip.add(what)
        progress.cells.setdefault(what, {"name": cell.name, "error": how, "output": ""})
        progress.problems.append(f"{how} while running cell '{cell.name}'{hint}")
    else:
        culprit = used[-1] if used else "your code"
        progress.avoid.setdefault(culprit, f"{how} when the grader called {culprit}")
        progress.probes[what.name] = ProbeRecord(ok=False, error=progress.avoid[culprit])
        progress.problems.append(f"{how} when the grader called {culprit}")


def _give_up(progress: _Progress, job: Job, deadline: float, attempts: int) -> None:
    """Whatever did not run gets a reason: the time limit, or too many restarts."""
    if progress.finished:
        return
    if time.monotonic() >= deadline:
        why = f"the notebook's time limit ({job.budgets.notebook:g} s) ran out"
        progress.worse(TIMEOUT)
    else:
        why = f"the notebook's process ended {attempts} times"
        progress.worse(CRASHED)
    for call in job.probes:
        progress.probes.setdefault(call.name, ProbeRecord(ok=False, error=f"not run: {why}"))
    progress.problems.append(f"stopped: {why}")


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode > 128:  # how the sandbox's init reports a job killed by a signal
        return f"exit code {returncode}: killed by {_signal_name(returncode - 128)}"
    return f"exit code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no name
        return f"signal {number}"
