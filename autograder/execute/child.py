"""The student's process: run the notebook's cells, then call the probes.

Everything here runs with the student's code and must be treated as compromised once the first
cell has run. It therefore holds no tests, solutions or expected values, and it reports only
data (tensors, numbers, strings) that the trusted parent checks before believing anything.
`forkserver` forks a fresh process per submission and calls `run` in it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import CodeType
from typing import Any

from autograder.execute import protocol

MAX_ERROR_CHARS = 2000


class CappedWriter(io.TextIOBase):
    """A stdout replacement that keeps the first `cap` characters and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = self.cap - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        value = "".join(self.parts)
        if self.dropped:
            value += f"\n[... {self.dropped} more characters not shown]"
        return value


@contextmanager
def captured(cap: int) -> Iterator[CappedWriter]:
    writer = CappedWriter(cap)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = writer
    try:
        yield writer
    finally:
        sys.stdout, sys.stderr = saved


class StudentNamespace(Mapping):
    """The notebook's globals, as probes see them: a missing name gets a message that teaches."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self._namespace = namespace

    def __getitem__(self, name: str) -> Any:
        try:
            return self._namespace[name]
        except KeyError:
            raise NameError(
                f"name '{name}' is not defined: keep the cell that defines it, "
                "and check its spelling"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._namespace)

    def __len__(self) -> int:
        return len(self._namespace)


def describe_error(error: BaseException, cell_names: dict[int, str]) -> str:
    """`Name: message (cell 'x', line n)`: enough to find the mistake, nothing of the grader's."""
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    where = ""
    for frame in traceback.extract_tb(error.__traceback__):
        name = _cell_of_filename(frame.filename, cell_names)
        if name is not None:
            where = f" (cell '{name}', line {frame.lineno})"
    if isinstance(error, SyntaxError) and error.filename:
        name = _cell_of_filename(error.filename, cell_names)
        if name is not None:
            where = f" (cell '{name}', line {error.lineno})"
    return (text + where)[:MAX_ERROR_CHARS]


def _cell_of_filename(filename: str, cell_names: dict[int, str]) -> str | None:
    # IPython compiles cell n as "<ipython-input-n-hash>".
    if not filename.startswith("<ipython-input-"):
        return None
    try:
        count = int(filename.split("-")[2])
    except (IndexError, ValueError):
        return None
    return cell_names.get(count, f"#{count}")


def to_data(value: Any, depth: int = 0) -> Any:
    """Plain data only: tensors become plain, detached CPU tensors; other objects become text."""
    import torch

    if depth > 20:
        return "<nested too deeply>"
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).cpu().clone()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, Mapping):
        return {str(key): to_data(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_data(item, depth + 1) for item in value]
    return f"<{type(value).__name__}>"


def write_data(path: Path, data: Any) -> None:
    import torch

    partial = path.with_name(path.name + ".partial")
    torch.save(data, partial)
    os.replace(partial, path)


class Progress:
    """What the process is doing now, rewritten in place (one write, no new file), so that
    the grader can name the cell or check that was running when time ran out."""

    def __init__(self, scratch: Path) -> None:
        self._fd = os.open(protocol.out_path(scratch, protocol.PROGRESS_FILE),
                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def set(self, text: str) -> None:
        data = text.encode("utf-8", errors="replace")[:protocol.PROGRESS_WIDTH]
        os.pwrite(self._fd, data.ljust(protocol.PROGRESS_WIDTH), 0)


def make_shell():  # -> InteractiveShell
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    return InteractiveShell.instance(config=config)


def run_cells(progress: Progress, shell, cells: list[dict[str, str]],
              cap: int) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Run each cell like Jupyter would; an error stops that cell only, as in "run all"."""
    reports = []
    cell_names: dict[int, str] = {}
    for index, cell in enumerate(cells):
        progress.set(f"running cell '{cell['name']}'")
        cell_names[shell.execution_count] = cell["name"]
        with captured(cap) as output:
            result = shell.run_cell(cell["source"], store_history=True)
        error = result.error_before_exec or result.error_in_exec
        reports.append({
            "index": index,
            "name": cell["name"],
            "error": describe_error(error, cell_names) if error is not None else None,
            "output": output.getvalue(),
        })
    return reports, cell_names


def load_probes(code: CodeType):
    spec = importlib.util.spec_from_loader("autograder_probes", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(code, module.__dict__)
    return module


def run_probes(scratch: Path, progress: Progress, probes_code: CodeType,
               calls: list[dict[str, str]], inputs: dict[str, Any],
               namespace: StudentNamespace, cap: int, cell_names: dict[int, str]) -> None:
    module = load_probes(probes_code)
    for call in calls:
        name = call["name"]
        progress.set(f"calling your code for check '{name}'")
        with captured(cap) as output:
            try:
                value = getattr(module, call["function"])(namespace, inputs[name])
                record = {"ok": True, "value": to_data(value)}
            except BaseException as error:  # the student's code may raise anything, SystemExit too
                record = {"ok": False, "error": describe_error(error, cell_names)}
        record["output"] = output.getvalue()
        try:
            write_data(protocol.out_path(scratch, protocol.probe_result_file(name)), record)
        except Exception as error:  # e.g. an unpicklable value slipped through
            write_data(protocol.out_path(scratch, protocol.probe_result_file(name)),
                       {"ok": False, "error": f"its result could not be saved: {error}"[:500],
                        "output": ""})


_cache: dict[bytes, Any] = {}


def _once(data: bytes, make: Callable[[bytes], Any]) -> Any:
    key = hashlib.sha256(data).digest()
    if key not in _cache:
        if len(_cache) >= 16:
            _cache.clear()
        _cache[key] = make(data)
    return _cache[key]


def load_inputs(scratch: Path) -> tuple[Any, CodeType]:
    """The probes' inputs and compiled code. Called in the warm server before it forks: they
    are the same for every job of an assignment, so each fork inherits them ready (inputs: a
    copy of its own, on write) instead of unpacking and compiling them again."""
    import torch

    inputs = _once((scratch / protocol.INPUTS_FILE).read_bytes(),
                   lambda data: torch.load(io.BytesIO(data), weights_only=True))
    code = _once((scratch / protocol.PROBES_FILE).read_bytes(),
                 lambda data: compile(data, protocol.PROBES_FILE, "exec"))
    return inputs, code


def run(scratch: Path, inputs: Any, probes_code: CodeType) -> int:
    """Run one job in this (freshly forked) process. Returns the exit code."""
    job = json.loads((scratch / protocol.JOB_FILE).read_text(encoding="utf-8"))
    # Read everything the job needs before the first student cell can touch the files.
    cap = int(job["output_cap"])

    progress = Progress(scratch)
    os.chdir(scratch / protocol.WORK_DIR)
    shell = make_shell()
    reports, cell_names = run_cells(progress, shell, job["cells"], cap)
    write_data(protocol.out_path(scratch, protocol.CELLS_REPORT), reports)
    run_probes(scratch, progress, probes_code, job["probes"], inputs,
               StudentNamespace(shell.user_ns), cap, cell_names)
    progress.set("finished")
    return 0
