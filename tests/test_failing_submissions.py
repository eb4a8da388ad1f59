"""A submission that raises, hangs, crashes its process or is not a notebook loses the points
of what failed only, with a clear reason, and the rest of its batch is graded normally."""

from __future__ import annotations

import time

import nbformat
import pytest

from autograder.author import with_answers
from tests.conftest import grade_answers

TIMEOUT = 15.0


def _raising(name: str, args: str) -> str:
    return f"def {name}({args}):\n    return 1 / 0\n"


def _with_tampered_train(release_notebook, solution) -> str:
    """A missing zero_grad, hidden by editing the locked train() to return a perfect model."""
    notebook = with_answers(release_notebook, {**solution, "train_step": (
        "def train_step(model, optimizer, criterion, X, y):\n"
        "    loss = criterion(model(X), y)\n    loss.backward()\n    optimizer.step()\n"
        "    return loss\n")})
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "train":
            cell.source = cell.source.replace("    return model", (
                "    with torch.no_grad():\n"
                "        model.weight.fill_(2.0)\n        model.bias.fill_(0.0)\n"
                "    return model"))
    return nbformat.writes(notebook)


@pytest.fixture(scope="module")
def batch(course, release_notebook, solution, tmp_path_factory):
    started = time.monotonic()
    results = grade_answers(course, release_notebook, tmp_path_factory.mktemp("failing"), {
        "fine": solution,
        "raises": {"forward_backward": _raising("forward_backward", "model, x, y_true"),
                   "chain_rule": _raising("chain_rule", "x_value"),
                   "train_step": _raising("train_step", "model, optimizer, criterion, X, y")},
        "hangs": {**solution, "train_step": solution["train_step"].replace(
            "    pred = model(X)", "    while True:\n        pass\n    pred = model(X)")},
        "exits": {**solution, "chain_rule": "import os\nos._exit(3)\n"},
        "killed": {**solution, "forward_backward": "import os, signal\n"
                                                   "os.kill(os.getpid(), signal.SIGKILL)\n"},
        "not-a-notebook": "this is not JSON {",
        "tampered-train": _with_tampered_train(release_notebook, solution),
        "odd-signal": {**solution, "chain_rule": "import os, signal\n"
                                                 "os.kill(os.getpid(), signal.SIGRTMIN + 6)\n"},
        "unencodable": {**solution, "train_step": "raise ValueError('\\ud800 lone surrogate')\n"},
    }, timeout=TIMEOUT, workers=2, timestamps={"fine": b"not a date \xff"})
    return results, time.monotonic() - started


def test_the_good_submission_in_the_batch_is_graded_in_full(batch) -> None:
    results, _ = batch
    assert results["fine"].status == "graded" and results["fine"].score == 10


def test_raising_code_scores_zero_and_names_the_error(batch) -> None:
    result = batch[0]["raises"]
    assert result.status == "graded" and result.score == 0
    assert all("ZeroDivisionError" in test.message for test in result.tests)
    assert all("cell 'forward_backward'" in t.message for t in result.tests
               if t.cell == "check_forward_backward")


def test_a_hang_in_part_3_costs_part_3_only(batch) -> None:
    """train_step loops forever: the cell that calls it is interrupted, the probes of Parts 1
    and 2 run, train_step's first probe is interrupted and its later ones not waited on."""
    result = batch[0]["hangs"]
    assert result.status == "timeout" and result.score == 6
    assert "cell 'part3_run' was stopped" in result.reason
    assert "train_step did not return within 2 s" in result.reason
    part3 = [t for t in result.tests if t.cell == "check_train"]
    assert all("train_step" in t.message and "part3_run" not in t.message for t in part3)
    assert result.seconds < TIMEOUT


def test_os_exit_costs_the_part_whose_cell_called_it(batch) -> None:
    result = batch[0]["exits"]
    assert result.status == "crashed" and result.score == 7  # Part 2 (3 points) lost
    assert "exit code 3" in result.reason and "chain_rule" in result.reason
    assert all(t.passed == (t.cell != "check_chain_rule") for t in result.tests)


def test_a_killed_process_is_a_crash_naming_the_signal(batch) -> None:
    result = batch[0]["killed"]
    assert result.status == "crashed" and result.score == 7  # Part 1 lost
    assert "SIGKILL" in result.reason and "forward_backward" in result.reason


def test_an_unreadable_notebook_scores_zero_with_the_reason(batch) -> None:
    result = batch[0]["not-a-notebook"]
    assert result.status == "invalid" and result.score == 0
    assert "not a readable Jupyter notebook" in result.reason
    assert len(result.tests) == 9 and all(not t.passed for t in result.tests)


def test_locked_cells_are_restored_from_the_release(batch) -> None:
    result = batch[0]["tampered-train"]
    assert result.status == "graded"
    assert result.score == 6  # as missing-zero-grad: the edit to train() never ran
    assert not next(t for t in result.tests if t.name == "trained_weight_near_two").passed


def test_an_unnamed_signal_is_a_crash_too(batch) -> None:
    result = batch[0]["odd-signal"]
    assert result.status == "crashed" and "killed by signal" in result.reason
    assert result.score == 7


def test_text_that_cannot_be_encoded_is_replaced_not_fatal(batch, course) -> None:
    result = batch[0]["unencodable"]
    assert result.status == "graded" and result.score == 6
    assert any("lone surrogate" in e["error"] for e in result.cell_errors)
    feedback = course.feedback_dir("unencodable", "backprop") / "backprop.md"
    assert "lone surrogate" in feedback.read_text()


def test_an_unreadable_timestamp_is_replaced_by_the_collection_time(batch, course) -> None:
    assert batch[0]["fine"].timestamp is None or "not a date" not in batch[0]["fine"].timestamp


def test_the_batch_did_not_wait_on_the_hang_more_than_once(batch) -> None:
    # nine submissions on two workers: one timeout plus the others' few seconds each
    assert batch[1] < 2 * TIMEOUT + 20
