"""Wrong answers that look right from the outside still lose exactly their points, with a
message that names what is wrong."""

from __future__ import annotations

import nbformat
import pytest

from autograder.author import with_answers
from tests.conftest import grade_answers, train_step_calling

NO_ZERO_GRAD = train_step_calling("loss.backward()", "optimizer.step()")
ZERO_GRAD_AT_END = train_step_calling("loss.backward()", "optimizer.step()",
                                      "optimizer.zero_grad()")
NO_STEP = train_step_calling("optimizer.zero_grad()", "loss.backward()")
TWO_STEPS = train_step_calling("optimizer.zero_grad()", "loss.backward()", "optimizer.step()",
                               "optimizer.step()")

GRADIENT_BY_HAND = '''def chain_rule(x_value):
    x = torch.tensor([float(x_value)], requires_grad=True)
    y = x ** 2
    z = y + 3
    loss = z ** 2
    x.grad = (2 * z * 2 * x).detach()  # the chain rule, but by hand
    return x, y, z, loss
'''

# A cell added after the locked train() that replaces it with one that works around the bug.
REDEFINED_TRAIN = '''
_given_train = train

def train(X, y, epochs, lr, seed):
    def fixed_step(model, optimizer, criterion, X, y):
        optimizer.zero_grad()
        return _broken_step(model, optimizer, criterion, X, y)
    global train_step, _broken_step
    _broken_step, train_step = train_step, fixed_step
    try:
        return _given_train(X, y, epochs, lr, seed)
    finally:
        train_step = _broken_step
'''


def _with_redefined_train(release_notebook, solution) -> str:
    notebook = with_answers(release_notebook, {**solution, "train_step": NO_ZERO_GRAD})
    position = next(i for i, cell in enumerate(notebook.cells)
                    if cell.metadata.get("nbgrader", {}).get("grade_id") == "train")
    notebook.cells.insert(position + 1, nbformat.v4.new_code_cell(REDEFINED_TRAIN))
    return nbformat.writes(notebook)


@pytest.fixture(scope="module")
def results(course, release_notebook, solution, tmp_path_factory):
    return grade_answers(course, release_notebook, tmp_path_factory.mktemp("disguised"), {
        "zero-grad-at-end": {**solution, "train_step": ZERO_GRAD_AT_END},
        "gradient-by-hand": {**solution, "chain_rule": GRADIENT_BY_HAND},
        "redefined-train": _with_redefined_train(release_notebook, solution),
        "no-step": {**solution, "train_step": NO_STEP},
        "two-steps": {**solution, "train_step": TWO_STEPS},
    })


def _failed(result) -> dict[str, str]:
    return {test.name: test.message for test in result.tests if not test.passed}


def test_zero_grad_after_the_step_uses_stale_gradients(results) -> None:
    failed = _failed(results["zero-grad-at-end"])
    assert list(failed) == ["one_step_from_stale_gradients"]
    assert "clears only after the step" in failed["one_step_from_stale_gradients"]
    assert results["zero-grad-at-end"].score == 8


def test_a_gradient_computed_by_hand_right_everywhere_gets_the_points(results) -> None:
    """Whether backward() was called is the student's process talking about itself: it may
    shape a message, never a score. The chain rule written out by hand gives the right values
    on every input the grader drew, so the values decide (see the README's threat model)."""
    assert _failed(results["gradient-by-hand"]) == {}
    assert results["gradient-by-hand"].score == 10


def test_training_is_judged_on_train_step_not_a_redefined_train(results) -> None:
    failed = _failed(results["redefined-train"])
    assert set(failed) == {"one_step_from_stale_gradients", "trained_weight_near_two",
                           "fits_an_unseen_line"}
    assert results["redefined-train"].score == 6


@pytest.mark.parametrize("student, message, score", [
    ("no-step", "The weights did not move although loss.backward() computed gradients", 6),
    # two steps per call is SGD at twice the rate: it may still fit the well-conditioned
    # unseen line, but training is judged on its path, and no epoch is one SGD step
    ("two-steps", "twice as far as one SGD step", 6),
])
def test_every_wrong_step_is_named(results, student: str, message: str, score: int) -> None:
    failed = _failed(results[student])
    assert {"one_step_from_stale_gradients", "trained_weight_near_two"} <= set(failed)
    assert message in failed["one_step_from_stale_gradients"]
    assert results[student].score == score
