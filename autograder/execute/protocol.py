"""The files through which the trusted parent and the student's process talk.

The parent writes the job into the scratch directory; the child writes back only data:
torch files that the parent reads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path

JOB_FILE = "job.json"  # cells to run, probes to call, caps
INPUTS_FILE = "inputs.pt"  # probe inputs (data the grader chose), keyed by probe name
PROBES_FILE = "probes.py"  # the assignment's probe functions: inputs in, data out, no verdicts
OUT_DIR = "out"
WORK_DIR = "work"  # the student's working directory
CELLS_REPORT = "cells.pt"  # per-cell errors and captured output
PROGRESS_FILE = "progress.txt"  # what the child is doing now: names the culprit after a timeout
PROGRESS_WIDTH = 300  # bytes: the progress file is rewritten in place, padded with spaces


def probe_result_file(probe_name: str) -> str:
    return f"probe-{probe_name}.pt"


def out_path(scratch: Path, name: str) -> Path:
    return scratch / OUT_DIR / name
