"""The student's process: run the steps the grader sends, one at a time, and answer each.

Everything here runs with the student's code and must be treated as compromised once the first
cell has run. It holds no tests, solutions or expected values: the grader sends each cell, then
each probe with its inputs (drawn for this submission, sent only once the cells have run), and
reads back plain data (`wire`) that it checks before believing anything. The channel is the
socket at CHANNEL_FD, opened by the warm server before any student code exists and held only
in the locals of `serve`: no module the notebook can import holds it. (A notebook can still find
it, as any file descriptor; what it could write there is judged like anything else it sends.)
`forkserver` forks a fresh process per submission and calls `serve` in it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from autograder.execute import wire

CHANNEL_FD = 3
MAX_ERROR_CHARS = 2000

# Bound before any student code runs (a notebook may patch os or the wire module later).
_write, _read = os.write, os.read
_encode, _decode = wire.encode, wire.decode


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


class NotCalledAgain(Exception):
    """A probe needs a function that already hung or crashed: it is not called again."""


class StudentNamespace(Mapping):
    """The notebook's globals, as probes see them: a missing name gets a message that teaches;
    each name a probe uses is told to the grader (so a hang can be pinned on that function)."""

    def __init__(self, namespace: dict[str, Any], used: Callable[[str], None],
                 avoid: set[str]) -> None:
        self._namespace = namespace
        self._used = used
        self._avoid = avoid

    def __getitem__(self, name: str) -> Any:
        if name in self._avoid:
            raise NotCalledAgain(name)
        self._used(name)
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
    """`Name: message (cell 'x', line n)`: enough to find the mistake, nothing of the grader's.
    A cell that does not parse: `SyntaxError at line n of your cell: message` (the report
    names the cell)."""
    if isinstance(error, SyntaxError) and error.filename \
            and _cell_of_filename(error.filename, cell_names) is not None:
        where = f" at line {error.lineno} of your cell" if error.lineno else " in your cell"
        return f"{type(error).__name__}{where}: {error.msg or 'invalid syntax'}"[
            :MAX_ERROR_CHARS]
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    text = _IPYTHON_FILE.sub("your cell", text)
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


_IPYTHON_FILE = re.compile(r"<ipython-input-\d+-[0-9a-f]+>")


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
    """Plain data only: tensors become plain, detached CPU tensors; other objects become text.
    Containers are read with the built-in types' own methods, so a student's subclass cannot
    run code of its own here (a Tensor subclass's __torch_function__ is switched off)."""
    import torch

    if depth > 20:
        return "<nested too deeply>"
    if isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunction():
            return torch.Tensor.as_subclass(value, torch.Tensor).detach().cpu().clone()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, dict):
        return {str(key) if type(key) is str else f"<{type(key).__name__}>":
                to_data(item, depth + 1) for key, item in dict.items(value)}
    if isinstance(value, list):
        return [to_data(item, depth + 1) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return [to_data(item, depth + 1) for item in tuple.__iter__(value)]
    return f"<{type(value).__name__}>"


def make_shell():  # -> InteractiveShell
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    return InteractiveShell.instance(config=config)


class Channel:
    """Frames to and from the grader on one file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, value: Any) -> None:
        data = _encode(value)
        if len(data) > wire.MAX_FRAME_BYTES:
            data = _encode({"kind": value.get("kind"), "ok": False, "output": "",
                            "error": f"its result is larger than {wire.MAX_FRAME_BYTES} bytes"})
        view = memoryview(data)
        while view:
            view = view[_write(self.fd, view):]

    def receive(self) -> Any:
        length = wire.frame_length(self._exactly(4))
        return _decode(self._exactly(length))

    def _exactly(self, size: int) -> bytes:
        parts, left = [], size
        while left:
            part = _read(self.fd, left)
            if not part:
                raise EOFError
            parts.append(part)
            left -= len(part)
        return b"".join(parts)


class Interrupts:
    """SIGINT raises KeyboardInterrupt in student code only: the grader interrupts a step that
    runs past its budget, and a signal that lands between steps must not break this loop."""

    def __init__(self) -> None:
        self.armed = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.armed:
            raise KeyboardInterrupt

    @contextmanager
    def student_code(self) -> Iterator[None]:
        self.armed = True
        try:
            yield
        finally:
            self.armed = False


def run_cell(shell, command: dict, cell_names: dict[int, str],
             interrupts: Interrupts) -> dict[str, Any]:
    """One cell, as Jupyter runs it; an error stops that cell only, as in "run all"."""
    cell_names[shell.execution_count] = command["name"]
    with captured(int(command["cap"])) as output, interrupts.student_code():
        result = shell.run_cell(command["source"], store_history=True)
    error = result.error_before_exec or result.error_in_exec
    return {"kind": "cell", "error": describe_error(error, cell_names) if error else None,
            "output": output.getvalue()}


def run_probe(module: types.ModuleType, command: dict, namespace: StudentNamespace,
              cell_names: dict[int, str], interrupts: Interrupts) -> dict[str, Any]:
    with captured(int(command["cap"])) as output:
        try:
            with interrupts.student_code():
                value = getattr(module, command["function"])(namespace, command["inputs"])
                record = {"kind": "probe", "ok": True, "value": to_data(value)}
        except NotCalledAgain as skipped:
            record = {"kind": "probe", "ok": False, "skipped": str(skipped)}
        except BaseException as error:  # the student's code may raise anything, SystemExit too
            record = {"kind": "probe", "ok": False, "error": describe_error(error, cell_names)}
    record["output"] = output.getvalue()
    return record


def load_probes(source: str) -> types.ModuleType:
    """The assignment's probes, compiled only now, after the cells ran: no cell could patch
    them in advance (torch itself it can: probes judge nothing, the grader checks the data)."""
    module = types.ModuleType("autograder_probes")
    exec(compile(source, "probes.py", "exec"), module.__dict__)
    return module


def _teller(channel: Channel, interrupts: Interrupts) -> Callable[[str], None]:
    def used(name: str) -> None:
        armed, interrupts.armed = interrupts.armed, False  # never half a frame
        try:
            channel.send({"kind": "using", "name": name})
        finally:
            interrupts.armed = armed
    return used


def serve(fd: int = CHANNEL_FD) -> int:
    """Answer the grader's steps until it says "end" (or hangs up). Returns the exit code."""
    channel = Channel(fd)
    interrupts = Interrupts()
    shell = make_shell()
    cell_names: dict[int, str] = {}
    probes: types.ModuleType | None = None
    channel.send({"kind": "ready"})
    while True:
        try:
            command = channel.receive()
        except EOFError:
            return 0
        if command["op"] == "cell":
            channel.send(run_cell(shell, command, cell_names, interrupts))
        elif command["op"] == "probe":
            if probes is None:
                probes = load_probes(command["probes_source"])
            namespace = StudentNamespace(shell.user_ns, _teller(channel, interrupts),
                                         set(command["avoid"]))
            channel.send(run_probe(probes, command, namespace, cell_names, interrupts))
        else:
            return 0
