"""The forgers: each wraps an answer that is wrong in all three parts and tries to pass off
data it did not compute -- rewriting records on their way out, reading the inputs early,
asserting flags, hijacking the channel found through /proc/self/fd, snapping the weights to a
closed-form fit, patching SGD.step before the probes run, or writing the lesson's known
answers. None may score more than the wrong answer it wraps: points come only from values
checked against references on inputs drawn for this notebook."""

from __future__ import annotations

import nbformat
import pytest

from autograder.author import with_answers
from tests.conftest import grade_answers, train_step_calling

ALL_WRONG = {  # no backward in Parts 1 and 2, no zero_grad in Part 3
    "forward_backward": "def forward_backward(model, x, y_true):\n"
                        "    return (model(x) - y_true) ** 2\n",
    "chain_rule": "def chain_rule(x_value):\n"
                  "    x = torch.tensor([float(x_value)], requires_grad=True)\n"
                  "    y = x ** 2\n    z = y + 3\n    loss = z ** 2\n"
                  "    return x, y, z, loss\n",
    "train_step": train_step_calling("loss.backward()", "optimizer.step()"),
}
ALL_WRONG_SCORE = 2  # returns_the_loss and graph_values: the values it does compute

# Rewrites every record on its way to the grader, in the modules a notebook can import.
_REWRITE = '''
import sys, torch
_wire = sys.modules["autograder.execute.wire"]
_child = sys.modules["autograder.execute.child"]
_real = _wire.encode

def _forge(value):
    record = value.get("value") if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("kind") == "probe":
        value["ok"] = True
        value.pop("error", None)
    if isinstance(record, dict):
        {forge}
    return _real(value)

_wire.encode = _forge
_child._encode = _forge
'''
FORGE_VALUES = '''if "x" in record:  # chain_rule: the lesson's answer, whatever x is
            record.update(x_grad=torch.tensor([56.0]), y=torch.tensor([4.0]),
                          z=torch.tensor([7.0]), loss=torch.tensor([49.0]))
        if "grads" in record:
            record["grads"] = {name: torch.ones(3, 2) for name in record["grads"]}
        if "path" in record:  # straight to the lesson's line
            record["path"] = torch.tensor([[2.0, 0.0]] * len(record["path"]))
        if "params" in record:
            record["params"] = {"weight": torch.tensor([[2.0]]), "bias": torch.tensor([0.0])}'''
FORGE_FLAGS = '''record.update(backpropagations=3, x_requires_grad=True, x_is_leaf=True,
                      loss_has_graph=True)'''

# Takes over the conversation: finds the grader's socket through /proc/self/fd and answers
# every step that follows itself, with data it makes up from the inputs it reads there.
_HIJACK = '''# at the end
import os, socket, stat, struct, torch
from autograder.execute import wire
def is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:  # the descriptor listdir itself used
        return False
fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
sockets = [fd for fd in fds if fd > 2 and is_socket(fd)]
print("FORGER found sockets", sockets)
channel = sockets[0]

def read_frame():
    head = os.read(channel, 4)
    length = struct.unpack(">I", head)[0]
    data = b""
    while len(data) < length:
        data += os.read(channel, length - len(data))
    return wire.decode(data)

def answer(value):
    os.write(channel, wire.encode(value))

answer({"kind": "cell", "error": None,  # for this very cell: read as the cell's answer
        "output": f"FORGER found sockets {sockets}"})
while True:
    command = read_frame()
    if command["op"] == "cell":
        answer({"kind": "cell", "error": None, "output": ""})
    elif command["op"] == "probe":
        inputs, function = command["inputs"], command["function"]
        if function == "chain_rule":
            x = torch.tensor([inputs["x_value"]])
            value = {"x": x, "y": x * 0 + 4, "z": x * 0 + 7, "loss": x * 0 + 49,
                     "x_grad": x * 0 + 56, "backpropagations": 1, "x_requires_grad": True,
                     "x_is_leaf": True, "loss_has_graph": True}
        elif function == "train":
            value = {"path": torch.tensor([[2.0, 0.0]] * inputs["epochs"])}
        elif function == "train_step":
            value = {"loss": torch.tensor(0.0), "params": inputs["state"], "grads": {}}
        else:
            value = {"loss": torch.tensor(1.0),
                     "grads": {name: torch.zeros_like(t) for name, t in inputs["state"].items()}}
        answer({"kind": "probe", "ok": True, "value": value, "output": ""})
    else:
        os._exit(0)
'''

# Looks for the inputs before any probe runs: files, environment, its own memory.
_READ_EARLY = '''
import gc, os, sys
found = []
for path in ["inputs.pt", "../inputs.pt", "../probes.py", os.path.expanduser("~/../inputs.pt"),
             "/tmp/inputs.pt"]:
    if os.path.exists(path):
        found.append(path)
for obj in gc.get_objects():
    if isinstance(obj, dict) and ("x_value" in obj or "stale_grads" in obj):
        found.append("memory")
        break
print("FORGER inputs found:", found)
'''

_SNAP_TO_FIT = '''
_wrong_step = train_step

def train_step(model, optimizer, criterion, X, y):
    loss = _wrong_step(model, optimizer, criterion, X, y)
    design = torch.cat([X, torch.ones_like(X)], dim=1)
    fit = torch.linalg.lstsq(design, y).solution  # the closed-form least-squares line
    with torch.no_grad():
        model.weight.copy_(fit[0].reshape(1, 1))
        model.bias.copy_(fit[1].reshape(1))
    return loss
'''

_PATCH_SGD_STEP = '''
import torch.optim
def _step(self, closure=None):
    with torch.no_grad():
        for group in self.param_groups:
            for p in group["params"]:
                p.fill_(2.0 if p.dim() == 2 else 0.0)  # the lesson's line, at once
torch.optim.SGD.step = _step
'''

_HARDCODED_56 = ALL_WRONG["chain_rule"].replace(
    "    return x, y, z, loss\n", "    x.grad = torch.tensor([56.0])\n    return x, y, z, loss\n")
# ... and one that also makes "backward was called" true, on a graph of nothing.
_HARDCODED_56_FLAGS = _HARDCODED_56.replace(
    "    x.grad =", "    torch.tensor(1.0, requires_grad=True).backward()\n    x.grad =")

FORGERS = {
    "rewrite-records": ("cell", _REWRITE.replace("{forge}", FORGE_VALUES)),
    "assert-flags": ("cell", _REWRITE.replace("{forge}", FORGE_FLAGS)),
    "hijack-channel-via-proc-self-fd": ("end", _HIJACK),
    "read-inputs-early": ("cell", _READ_EARLY),
    "snap-to-closed-form-fit": ("end", _SNAP_TO_FIT),
    "patch-sgd-step": ("end", _PATCH_SGD_STEP),
    "hardcoded-56": ("answer", _HARDCODED_56),
    "hardcoded-56-with-flags": ("answer", _HARDCODED_56_FLAGS),
}


def _forging_notebook(release_notebook, where: str, code: str):
    if where == "answer":
        return nbformat.writes(with_answers(release_notebook, {**ALL_WRONG, "chain_rule": code}))
    notebook = with_answers(release_notebook, ALL_WRONG)
    cell = nbformat.v4.new_code_cell(code)
    if where == "end":
        notebook.cells.append(cell)
    else:
        notebook.cells.insert(1, cell)  # before any answer
    return nbformat.writes(notebook)


@pytest.fixture(scope="module")
def batch(course, release_notebook, solution, tmp_path_factory):
    submissions = {name: _forging_notebook(release_notebook, where, code)
                   for name, (where, code) in FORGERS.items()}
    submissions["all-wrong"] = ALL_WRONG
    submissions["solution"] = solution
    return grade_answers(course, release_notebook, tmp_path_factory.mktemp("forgers"),
                         submissions, timeout=30, workers=2)


def test_the_honest_answers_keep_their_points(batch) -> None:
    assert batch["solution"].score == 10
    assert batch["all-wrong"].score == ALL_WRONG_SCORE, [
        (t.name, t.message) for t in batch["all-wrong"].tests]


@pytest.mark.parametrize("forger", sorted(FORGERS))
def test_a_forger_scores_no_more_than_the_wrong_answer_it_wraps(batch, forger: str) -> None:
    result = batch[forger]
    assert result.score <= ALL_WRONG_SCORE, [t.name for t in result.tests if t.passed]


def test_the_hijacker_really_found_the_channel(batch) -> None:
    """Not a vacuous pass: the socket was there to find, and the grader read its answers."""
    result = batch["hijack-channel-via-proc-self-fd"]
    assert "FORGER found sockets [3]" in result.output, result.output[:500]


def test_no_input_is_reachable_before_the_probes(batch) -> None:
    assert "FORGER inputs found: []" in batch["read-inputs-early"].output


def test_flags_say_why_but_give_no_point(batch) -> None:
    """The flag-forging hard-coder is told the same as the plain one: no point either way."""
    plain, flagged = batch["hardcoded-56"], batch["hardcoded-56-with-flags"]
    assert plain.score == flagged.score <= ALL_WRONG_SCORE
    told = {t.name: t.message for t in plain.tests}
    assert "56 whatever x is" in told["gradient_at_unseen_inputs"]


def test_the_instructor_keeps_what_each_notebook_was_graded_on(batch) -> None:
    """For appeals: the drawn inputs and the expected values, in results.json only."""
    record = batch["all-wrong"].graded_on
    assert set(record) == {"seed", "inputs", "expected"}
    x = record["inputs"]["cr_near"]["x_value"]
    assert record["expected"]["cr_near"]["x_grad"] == pytest.approx(4 * x * (x**2 + 3))
    assert batch["solution"].graded_on["seed"] != record["seed"]
