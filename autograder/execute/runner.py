"""Trusted side of execution: prepare a job, have a warm worker run it, read back data.

Nothing the grader knows beyond the cells and the probe inputs goes into the job's folder, and
nothing comes back but files of plain data, checked before anyone believes them.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.execute import protocol
from autograder.execute.warm import WarmWorker
from autograder.results import CRASHED, GRADED, TIMEOUT, clean_text
from autograder.tempfiles import log_problems, make_temp_dir, remove_tree
from autograder.verify.data import UntrustedData, load_child_data, read_child_file

OUTPUT_CAP = 10_000  # characters of output kept per cell or probe
CHILD_LOG_CAP = 20_000


@dataclass(frozen=True)
class Cell:
    name: str  # the nbgrader grade_id, or a label for a cell the student added
    source: str


@dataclass(frozen=True)
class ProbeCall:
    name: str  # unique within the assignment, e.g. "chain_rule_unseen"
    function: str  # a function of the assignment's probes.py


@dataclass(frozen=True)
class Job:
    cells: list[Cell]
    probes: list[ProbeCall]
    inputs: bytes  # a torch file of {probe name: inputs}, made once per assignment
    probes_file: Path
    timeout: float


@dataclass
class ProbeRecord:
    """What one probe brought back: a value, or the error the student's code raised."""

    ok: bool
    value: Any = None
    error: str = ""
    output: str = ""


@dataclass
class Execution:
    status: str  # GRADED (the process finished), TIMEOUT or CRASHED
    reason: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    log: str = ""  # the process's own stdout/stderr, capped
    seconds: float = 0.0


def prepare_scratch(job: Job) -> Path:
    scratch = make_temp_dir("job")
    for name in (protocol.OUT_DIR, protocol.WORK_DIR, "tmp"):
        (scratch / name).mkdir()
    job_data = {
        "cells": [{"name": cell.name, "source": cell.source} for cell in job.cells],
        "probes": [{"name": call.name, "function": call.function} for call in job.probes],
        "output_cap": OUTPUT_CAP,
    }
    (scratch / protocol.JOB_FILE).write_text(json.dumps(job_data), encoding="utf-8")
    (scratch / protocol.INPUTS_FILE).write_bytes(job.inputs)
    shutil.copyfile(job.probes_file, scratch / protocol.PROBES_FILE)
    return scratch


def run_job(job: Job, worker: WarmWorker) -> Execution:
    """Run `job` in a fresh process forked by `worker`; returns what came back, whatever the
    student's code did."""
    started = time.monotonic()
    scratch = prepare_scratch(job)
    try:
        returncode, timed_out = worker.run(scratch, job.timeout)
        execution = _collect(scratch, job)
        execution.log = _read_capped(scratch / "child.log", CHILD_LOG_CAP, levels=1)
        progress = _read_capped(protocol.out_path(scratch, protocol.PROGRESS_FILE),
                                protocol.PROGRESS_WIDTH,
                                levels=2)
    finally:
        log_problems(remove_tree(scratch))
    if timed_out:
        execution.status = TIMEOUT
        execution.reason = (f"stopped after {job.timeout:g} s while {progress or 'starting'}: "
                            "look for an endless loop or a very long computation")
    elif progress != "finished":
        execution.status = CRASHED
        execution.reason = (f"the notebook's process ended abruptly ({_exit_text(returncode)}) "
                            f"while {progress or 'starting'}: did the code call exit() "
                            "or os._exit(), or run out of memory?")
    execution.seconds = time.monotonic() - started
    return execution


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


def _collect(scratch: Path, job: Job) -> Execution:
    execution = Execution(status=GRADED)
    cells_path = protocol.out_path(scratch, protocol.CELLS_REPORT)
    if cells_path.exists():
        try:
            execution.cells = _cell_reports(load_child_data(cells_path))
        except UntrustedData as error:
            execution.cells = [{"name": "?", "error": f"unreadable cell report: {error}",
                                "output": ""}]
    for call in job.probes:
        path = protocol.out_path(scratch, protocol.probe_result_file(call.name))
        if not path.exists():
            continue
        try:
            execution.probes[call.name] = _probe_record(load_child_data(path))
        except UntrustedData as error:
            execution.probes[call.name] = ProbeRecord(
                ok=False, error=f"the data it returned was refused: {error}")
    return execution


def _cell_reports(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise UntrustedData("cell report is not a list")
    reports = []
    for item in data:
        if not isinstance(item, dict):
            raise UntrustedData("cell report entry is not a dict")
        error = item.get("error")
        reports.append({"name": _text(item.get("name"), 200),
                        "error": None if error is None else _text(error, 2000),
                        "output": _text(item.get("output"), OUTPUT_CAP * 2)})
    return reports


def _probe_record(data: Any) -> ProbeRecord:
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise UntrustedData("a probe record must be a dict with a boolean 'ok'")
    return ProbeRecord(ok=data["ok"], value=data.get("value"),
                       error=_text(data.get("error"), 2000),
                       output=_text(data.get("output"), OUTPUT_CAP * 2))


def _text(value: Any, cap: int) -> str:
    """Child-written text, capped and made encodable (no lone surrogates); non-text -> ""."""
    return clean_text(value[:cap]) if isinstance(value, str) else ""


def _read_capped(path: Path, cap: int, levels: int) -> str:
    try:
        return read_child_file(path, cap, levels)[:cap].decode("utf-8", errors="replace").strip()
    except UntrustedData:
        return ""
