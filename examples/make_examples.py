"""Write the example submissions in examples/submitted/ from the instructor's notebook.

    python examples/make_examples.py

Each example is the release notebook with answers filled in: the full solution, the blank
release, and the typical mistakes of Part 2 and Part 3. examples/expected.json says what each
must score; tests/test_examples.py grades them and holds the grader to it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from autograder.author import solution_answers, with_answers

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "backprop"

TRAIN_STEP = '''def train_step(model, optimizer, criterion, X, y):
    """One training step: forward, loss, zero_grad, backward, step. Returns the loss."""
    pred = model(X)
    loss = criterion(pred, y)
{calls}
    return loss
'''


def _train_step(*calls: str) -> str:
    return TRAIN_STEP.format(calls="\n".join(f"    {call}" for call in calls))


MISTAKES = {
    "missing-zero-grad": {"train_step": _train_step("loss.backward()", "optimizer.step()")},
    "step-before-backward": {"train_step": _train_step("optimizer.zero_grad()",
                                                       "optimizer.step()", "loss.backward()")},
    "no-backward": {"train_step": _train_step("optimizer.zero_grad()", "optimizer.step()")},
    "hardcoded-grad": {"chain_rule": '''def chain_rule(x_value):
    """Build x -> y = x**2 -> z = y + 3 -> loss = z**2 and backpropagate. Returns (x, y, z, loss)."""
    x = torch.tensor([float(x_value)], requires_grad=True)
    y = x ** 2
    z = y + 3
    loss = z ** 2
    x.grad = torch.tensor([56.0])  # the lesson's answer, written by hand
    return x, y, z, loss
'''},
}


def main() -> None:
    source = nbformat.read(ROOT / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(ROOT / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    solution = solution_answers(source)
    examples = {"solution": solution, "blank": {}}
    examples.update({name: {**solution, **change} for name, change in MISTAKES.items()})
    for student, answers in examples.items():
        folder = ROOT / "examples" / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(with_answers(release, answers), folder / f"{ASSIGNMENT}.ipynb")
        (folder / "timestamp.txt").write_text("2026-11-20 12:00:00.000000 UTC\n")
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()
