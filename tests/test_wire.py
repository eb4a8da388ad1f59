"""Only plain, bounded data crosses from the student's process to the grader, and reading any
frame a student can craft costs the grader less than its budget (1 s of CPU, 100 MiB)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc

import pytest
import torch

from autograder.execute import wire
from autograder.verify.data import as_number

CPU_BUDGET = 1.0  # seconds per submission, trusted side
MEMORY_BUDGET = 100 * 1024 * 1024


def _frame(header: bytes, body: bytes = b"") -> bytes:
    """A frame as decode sees it (without the length prefix)."""
    return struct.pack(">I", len(header)) + header + body


def test_plain_data_round_trips() -> None:
    value = {"grads": {"w": torch.ones(2, 3), "b": torch.tensor(2.5, dtype=torch.float64)},
             "n": 3, "ok": True, "s": "x", "l": [1.5, None, float("inf")],
             "empty": torch.empty(0, 2), "half": torch.ones(2, dtype=torch.bfloat16)}
    loaded = wire.decode(wire.encode(value)[4:])
    assert torch.equal(loaded["grads"]["w"], torch.ones(2, 3))
    assert loaded["grads"]["b"].dtype == torch.float64 and float(loaded["grads"]["b"]) == 2.5
    assert loaded["l"] == [1.5, None, float("inf")] and loaded["empty"].shape == (0, 2)
    assert loaded["half"].dtype == torch.bfloat16


def test_a_tensor_subclass_arrives_as_a_plain_tensor() -> None:
    class Sneaky(torch.Tensor):
        pass

    loaded = wire.decode(wire.encode({"x": torch.ones(2).as_subclass(Sneaky)})[4:])
    assert type(loaded["x"]) is torch.Tensor


def _crafted() -> dict[str, bytes]:
    """Frames a student who read this file would send, each at the edge of a limit."""
    room = wire.MAX_FRAME_BYTES - 64
    many = b"[" + b"1," * (room // 2 - 1) + b"1]"  # two million values in one list
    deep = b"[" * (room // 2) + b"]" * (room // 2)
    digits = b"[" + b"9" * (room - 2) + b"]"  # one integer of four million digits
    tensors = json.dumps([{wire.TENSOR_KEY: ["float32", [0], 0]}] * 5000).encode()
    shape_lie = json.dumps({wire.TENSOR_KEY: ["float64", [1000, 1000], 0]}).encode()
    offset_lie = json.dumps({wire.TENSOR_KEY: ["float32", [4], 10**12]}).encode()
    dtype = json.dumps({wire.TENSOR_KEY: ["object", [1], 0]}).encode()
    wide = json.dumps({f"k{i}": [i] * 10 for i in range(10_000)}).encode()
    long_string = json.dumps(["x" * (room - 10)]).encode()
    aliased = json.dumps([{wire.TENSOR_KEY: ["float32", [1000], 0]}] * 100).encode()
    strides = json.dumps({wire.TENSOR_KEY: ["float32", [0] + [1_000_000] * 7, 0]}).encode()
    return {"aliased-tensors": _frame(aliased, b"\0" * 4000), "stride-overflow": _frame(strides),
            "two-million-values": _frame(many), "deep": _frame(deep),
            "four-million-digits": _frame(digits), "5000-tensors": _frame(tensors),
            "shape-lie": _frame(shape_lie, b"\0" * 64), "offset-lie": _frame(offset_lie),
            "object-dtype": _frame(dtype), "wide": _frame(wide),
            "long-string": _frame(long_string), "not-utf8": _frame(b"\xff\xfe[1]"),
            "header-lie": struct.pack(">I", 10**9) + b"{}"}


@pytest.mark.parametrize("name", sorted(_crafted()))
def test_a_crafted_frame_costs_less_than_the_budget(name: str) -> None:
    frame = _crafted()[name]
    tracemalloc.start()
    started = time.process_time()
    try:
        value = wire.decode(frame)
    except wire.WireError:
        value = None
    cpu = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{name}: {cpu * 1000:.0f} ms, {peak >> 20} MiB")
    assert cpu < CPU_BUDGET / 2 and peak < MEMORY_BUDGET / 2
    if name not in ("wide", "long-string"):  # within the limits: read, strings cut
        assert value is None, name
    if name == "long-string":
        assert len(value[0]) == wire.MAX_STRING


def test_an_oversize_frame_is_refused_from_its_length_alone() -> None:
    with pytest.raises(wire.WireError):
        wire.frame_length(struct.pack(">I", wire.MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize("value, message", [
    (torch.tensor([float("nan")]), "blew up"),
    (torch.ones(2), "one number"),
    (torch.tensor([True]), "dtype"),
    ("<Model>", "an object of type Model"),
])
def test_numbers_are_checked_with_messages_for_the_student(value, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        as_number(value, "x.grad")


# A notebook that takes over its channel and sends the largest frames it may, then a frame
# over the limit: the grader reads at most 16 MiB, parses each frame once, and grades on.
FLOOD = '''# at the end
import os, stat, struct
def is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
channel = [int(fd) for fd in os.listdir("/proc/self/fd") if int(fd) > 2 and is_socket(int(fd))][0]
room = {room}
{payload}
os.write(channel, struct.pack(">I", len(frame)) + frame)
'''
PAYLOADS = {
    "notes-of-four-mib": "import json\nname = 'x' * (room - 100)\n"
                         "header = json.dumps({'kind': 'using', 'name': name}).encode()\n"
                         "frame = struct.pack('>I', len(header)) + header\n"
                         "for _ in range(5):\n"
                         "    os.write(channel, struct.pack('>I', len(frame)) + frame)\n",
    "two-million-values": "header = b'[' + b'1,' * (room // 2 - 1) + b'1]'\n"
                          "frame = struct.pack('>I', len(header)) + header\n",
    "deep-nesting": "header = b'[' * (room // 2) + b']' * (room // 2)\n"
                    "frame = struct.pack('>I', len(header)) + header\n",
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_the_grader_spends_less_than_its_budget_on_a_flooding_notebook(
        course, release_notebook, solution, tmp_path, payload: str) -> None:
    """End to end, in a process of its own: the grader's CPU time and peak memory growth
    while it grades one notebook that floods its channel, against the same for the honest
    solution."""
    import nbformat

    from autograder.author import with_answers

    notebook = with_answers(release_notebook, solution)
    code = FLOOD.format(room=wire.MAX_FRAME_BYTES - 64, payload=PAYLOADS[payload])
    notebook.cells.append(nbformat.v4.new_code_cell(code))
    flooding, honest = tmp_path / "flood.ipynb", tmp_path / "honest.ipynb"
    nbformat.write(notebook, flooding)
    nbformat.write(with_answers(release_notebook, solution), honest)
    measure = textwrap.dedent(f'''
        import json, resource, time
        from pathlib import Path
        from autograder.assignment import Assignment
        from autograder.course import Course
        from autograder.execute.warm import WarmSlot
        from autograder.engine import grade_submission
        from autograder.submissions import Submission
        assignment = Assignment.load(Course.load({str(course.root)!r}), "backprop")
        slot = WarmSlot()
        slot.start()
        figures = {{}}
        for name, path in (("honest", {str(honest)!r}), ("flood", {str(flooding)!r})):
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            cpu = time.process_time()
            result = grade_submission(assignment, Submission(name, Path(path)), 30, slot)
            figures[name] = {{"cpu": time.process_time() - cpu, "score": result.score,
                             "rss": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss)
                                    * 1024, "reason": result.reason}}
        slot.close()
        print(json.dumps(figures))
    ''')
    done = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(payload, figures)
    flood = figures["flood"]
    assert flood["cpu"] - figures["honest"]["cpu"] < CPU_BUDGET
    assert flood["rss"] < MEMORY_BUDGET
    assert figures["honest"]["score"] == 10
    assert flood["score"] == 10  # the flood came after every answer: nothing of it counted
