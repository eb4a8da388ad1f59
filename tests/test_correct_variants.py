"""Correct answers written differently get full marks (issue: honest grading)."""

from __future__ import annotations

import nbformat
import pytest

from autograder.author import with_answers
from tests.conftest import grade_answers

FB = '''def forward_backward(model, x, y_true):
{body}
'''
CR = '''def chain_rule(x_value):
{body}
'''
TS = '''def train_step(model, optimizer, criterion, X, y):
{body}
'''


def _fn(template: str, body: str) -> str:
    return template.format(body="\n".join("    " + line for line in body.strip().splitlines()))


VARIANTS = {
    "model-zero-grad": {"train_step": _fn(TS, """
loss = criterion(model(X), y)
model.zero_grad()
loss.backward()
optimizer.step()
return loss""")},
    "zero-grad-keep-tensors": {"train_step": _fn(TS, """
pred = model(X)
loss = criterion(pred, y)
optimizer.zero_grad(set_to_none=False)
loss.backward()
optimizer.step()
return loss""")},
    "zero-grad-first": {"train_step": _fn(TS, """
optimizer.zero_grad()
loss = criterion(model(X), y)
loss.backward()
optimizer.step()
return loss""")},
    "loss-sum": {"forward_backward": _fn(FB, """
loss = ((model(x) - y_true) ** 2).sum()
loss.backward()
return loss""")},
    "loss-mean": {"forward_backward": _fn(FB, """
loss = (model(x) - y_true).pow(2).mean()
loss.backward()
return loss""")},
    "x-zero-dim": {"chain_rule": _fn(CR, """
x = torch.tensor(float(x_value), requires_grad=True)
y = x * x
z = y + 3
loss = z * z
loss.backward()
return x, y, z, loss""")},
    "x-float64-tuple-list": {"chain_rule": _fn(CR, """
x = torch.tensor([x_value], dtype=torch.float64, requires_grad=True)
y = torch.pow(x, 2)
z = torch.add(y, 3)
loss = torch.square(z)
torch.autograd.backward(loss)
return [x, y, z, loss]""")},
    "prints-and-warnings": {
        "forward_backward": _fn(FB, """
import warnings
warnings.warn("students may warn")
y_pred = model(x)
print("prediction", y_pred)
loss = (y_pred - y_true) ** 2
loss.backward()
return loss"""),
        "chain_rule": _fn(CR, """
x = torch.tensor([float(x_value)], requires_grad=True)
y = x ** 2
z = y + 3
loss = z ** 2
loss.backward()
print("non-leaf grad:", y.grad)  # torch prints a UserWarning here
return x, y, z, loss"""),
    },
}


@pytest.fixture(scope="module")
def results(course, release_notebook, solution, tmp_path_factory):
    submissions = {name: {**solution, **change} for name, change in VARIANTS.items()}
    return grade_answers(course, release_notebook, tmp_path_factory.mktemp("variants"),
                         submissions)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_correct_variant_gets_full_marks(results, variant: str) -> None:
    result = results[variant]
    failed = {t.name: t.message for t in result.tests if not t.passed}
    assert result.status == "graded" and not failed, failed
    assert result.score == result.max_score == 10


def test_warnings_were_really_printed_and_cost_nothing(results) -> None:
    output = results["prints-and-warnings"].output
    assert "students may warn" in output
    assert "non-leaf" in output and "UserWarning" in output


def test_a_helper_cell_added_by_the_student_runs(course, release_notebook, solution,
                                                 tmp_path) -> None:
    notebook = with_answers(release_notebook, {
        **solution,
        "forward_backward": _fn(FB, "loss = squared_error(model(x), y_true)\n"
                                    "loss.backward()\nreturn loss"),
    })
    position = next(i for i, c in enumerate(notebook.cells)
                    if c.metadata.get("nbgrader", {}).get("grade_id") == "forward_backward")
    notebook.cells.insert(position, nbformat.v4.new_code_cell(
        "def squared_error(a, b):\n    return (a - b) ** 2"))
    result = grade_answers(course, release_notebook, tmp_path,
                           {"helper-cell": nbformat.writes(notebook)})["helper-cell"]
    assert result.score == 10, [t.message for t in result.tests if not t.passed]
