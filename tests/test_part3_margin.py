"""Part 3 is honest: with the notebook's epochs and learning rate, a correct train_step lands
well inside the tolerance of 2.0 for every seed, and a missing zero_grad lands well outside."""

from __future__ import annotations

import importlib.util

import nbformat
import pytest
import torch

from autograder.assemble import grade_id
from autograder.author import solution_answers
from tests.conftest import REPO, train_step_calling

SEEDS = range(120)


def _notebook_namespace() -> dict:
    """The instructor notebook's imports, solution train_step and given train(), run here."""
    source = nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb", as_version=4)
    cells = {grade_id(cell): cell.source for cell in source.cells}
    namespace: dict = {}
    exec(cells["imports"], namespace)
    exec(solution_answers(source)["train_step"], namespace)
    exec(cells["train"], namespace)
    exec(cells["part3_run"].split("# Data")[0], namespace)  # EPOCHS, LR, TOLERANCE
    namespace["print"] = lambda *args, **kwargs: None
    return namespace


def _without_zero_grad(model, optimizer, criterion, X, y):
    loss = criterion(model(X), y)
    loss.backward()
    optimizer.step()
    return loss


@pytest.fixture(scope="module")
def notebook() -> dict:
    return _notebook_namespace()


def _final_weights(notebook: dict, train_step) -> list[tuple[float, float]]:
    notebook["train_step"] = train_step  # train() looks it up in its globals, like in Jupyter
    X = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    weights = []
    for seed in SEEDS:
        model = notebook["train"](X, 2 * X, notebook["EPOCHS"], notebook["LR"], seed)
        weights.append((model.weight.item(), model.bias.item()))
    return weights


def _hidden_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"backprop_hidden_{name}", REPO / "hidden_tests" / "backprop" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_and_hidden_tests_use_the_same_settings(notebook: dict) -> None:
    hidden = _hidden_module("tests")
    assert (notebook["LR"], notebook["TOLERANCE"]) == (hidden.LR, hidden.TOLERANCE) == (0.1, 0.01)
    assert notebook["EPOCHS"] == 300


def test_correct_train_step_lands_ten_times_inside_the_tolerance(notebook: dict) -> None:
    solution_step = _notebook_namespace()["train_step"]
    weights = _final_weights(notebook, solution_step)
    worst_weight = max(abs(w - 2.0) for w, _ in weights)
    worst_bias = max(abs(b) for _, b in weights)
    print(f"correct: worst |w - 2| = {worst_weight:.2e}, worst |b| = {worst_bias:.2e}")
    assert worst_weight < notebook["TOLERANCE"] / 10
    assert worst_bias < notebook["TOLERANCE"] / 10


def test_missing_zero_grad_lands_ten_times_outside_the_tolerance(notebook: dict) -> None:
    weights = _final_weights(notebook, _without_zero_grad)
    closest = min(abs(w - 2.0) for w, _ in weights)
    print(f"missing zero_grad: closest |w - 2| = {closest:.3f}")
    assert closest > notebook["TOLERANCE"] * 10


ORDER_MISTAKES = {
    "no zero_grad": ("loss.backward()", "optimizer.step()"),
    "step before backward": ("optimizer.zero_grad()", "optimizer.step()", "loss.backward()"),
    "no step": ("optimizer.zero_grad()", "loss.backward()"),
    "two steps": ("optimizer.zero_grad()", "loss.backward()", "optimizer.step()",
                  "optimizer.step()"),
}


DRAWS = range(40)  # submissions: each draws its own start, line and inputs


@pytest.mark.parametrize(("probe", "mistakes"), [
    ("train_lesson", list(ORDER_MISTAKES)),
    # Two steps per epoch is SGD at twice the rate: on this well-conditioned line it fits too,
    # and the path check, the one-step and the lesson tests catch it instead.
    ("train_unseen_line", ["no zero_grad", "step before backward", "no step"]),
])
def test_the_short_hidden_training_runs_separate_right_from_wrong(probe, mistakes) -> None:
    """The hidden tests train for 40 and 20 epochs from starts, lines and rates drawn for each
    submission: over many draws the solution lands within 1e-5 of the line, and each mistake
    at least 50 times the tolerance away from it (the path check aside)."""
    hidden, probes = _hidden_module("tests"), _hidden_module("probes")
    closest = {mistake: float("inf") for mistake in mistakes}
    for draw in DRAWS:
        inputs = hidden.draw_probes(torch.Generator().manual_seed(draw))[probe].inputs
        target = hidden._line_of(inputs)

        def distance(train_step, inputs=inputs, target=target) -> float:
            final = probes.train({"train_step": train_step}, inputs)["path"][-1]
            return max(abs(final[0].item() - target[0]), abs(final[1].item() - target[1]))

        assert distance(_notebook_namespace()["train_step"]) < 1e-5
        for mistake in mistakes:
            namespace = _notebook_namespace()
            exec(train_step_calling(*ORDER_MISTAKES[mistake]), namespace)
            closest[mistake] = min(closest[mistake], distance(namespace["train_step"]))
    print(probe, {mistake: f"{away:.3g}" for mistake, away in closest.items()})
    assert all(away > 50 * hidden.TOLERANCE for away in closest.values()), closest
