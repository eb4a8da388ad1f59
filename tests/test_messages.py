"""Messages that teach (issue 8, item 8), on real grading: a syntax error told once at its
line; a chain_rule that ignores x_value told so; feedback headed by the parts' titles, with the
due date and lateness; a notebook-wide reason told once; a notebook without nbgrader metadata
graded as the notebook it is."""

from __future__ import annotations

import copy
import re

import mistune
import nbformat
import pytest

from autograder.feedback import render_html, render_markdown
from tests.conftest import grade_answers

TIMEOUT = 8.0
SYNTAX_ERROR = ("def train_step(model, optimizer, criterion, X, y):\n"
                "    loss = criterion(model(X), y\n"
                "    optimizer.zero_grad()\n"
                "    return loss\n")
AT_TWO = ("def chain_rule(x_value):\n"
          "    x = torch.tensor(2.0, requires_grad=True)\n"
          "    y = x ** 2\n"
          "    z = y + 3\n"
          "    loss = z ** 2\n"
          "    loss.backward()\n"
          "    return x, y, z, loss\n")
PARTS = ("Part 1: Watching gradients", "Part 2: Gradient flow through the chain rule",
         "Part 3: Training with backprop")


def _without_metadata(notebook):
    """The notebook as a student who copied every cell into a fresh notebook sends it."""
    fresh = nbformat.v4.new_notebook()
    for cell in notebook.cells:
        maker = (nbformat.v4.new_code_cell if cell.cell_type == "code"
                 else nbformat.v4.new_markdown_cell)
        fresh.cells.append(maker(cell.source))
    return fresh


@pytest.fixture(scope="module")
def graded(course, release_notebook, solution, tmp_path_factory):
    from autograder.author import with_answers

    solved = with_answers(release_notebook, solution)
    hanging = copy.deepcopy(solved)
    hanging.cells.insert(1, nbformat.v4.new_code_cell("while True:\n    pass\n"))
    only_answers = nbformat.v4.new_notebook()
    only_answers.cells = [nbformat.v4.new_code_cell(solution[gid])
                          for gid in ("forward_backward", "chain_rule", "train_step")]
    submissions = {
        "msg-syntax": {**solution, "train_step": SYNTAX_ERROR},
        "msg-at-two": {**solution, "chain_rule": AT_TWO},
        "msg-solution": solution,
        "msg-invalid": "{ this is not a notebook",
        "msg-hang": nbformat.writes(hanging),
        "msg-no-metadata": nbformat.writes(_without_metadata(solved)),
        "msg-only-answers": nbformat.writes(only_answers),
    }
    results = grade_answers(course, release_notebook, tmp_path_factory.mktemp("messages"),
                            submissions, timeout=TIMEOUT, workers=2)
    return results


def _feedback(course, student: str) -> str:
    return (course.feedback_dir(student, "backprop") / "backprop.md").read_text()


def test_a_syntax_error_is_told_once_at_its_line_and_the_tests_point_there(graded,
                                                                          course) -> None:
    result = graded["msg-syntax"]
    assert result.score == 6  # Parts 1 and 2 are right
    syntax = [e for e in result.cell_errors if "SyntaxError" in e["error"]]
    assert len(syntax) == 1 and syntax[0]["cell"] == "train_step"
    assert re.fullmatch(r"SyntaxError at line 2 of your cell: .+", syntax[0]["error"])
    part3 = [t for t in result.tests if t.cell == "check_train"]
    assert len(part3) == 3
    for test in part3:
        assert test.message.rstrip(".") == ("train_step is not defined because its cell "
                                            "has a syntax error (see above)"), test.message
    # The locked cell that calls train() failed only because of it: it points there too.
    assert not [e for e in result.cell_errors if "NameError" in e["error"]]
    feedback = _feedback(course, "msg-syntax")
    assert feedback.count("SyntaxError") == 1
    assert "NameError" not in feedback and "ipython-input" not in feedback
    # told above the tests that point to it
    assert feedback.index("SyntaxError") < feedback.index("(see above)")
    assert "ipython-input" not in result.to_json()


def test_a_chain_rule_that_ignores_x_value_is_told_so(graded, course) -> None:
    result = graded["msg-at-two"]
    assert result.score == 7  # Part 2 fails whole: only its x = 2 probe is right
    failed = {t.name: t.message for t in result.tests if not t.passed}
    assert set(failed) == {"gradient_at_two", "graph_values", "gradient_at_unseen_inputs"}
    for name, message in failed.items():
        assert "ignores its x_value argument" in message, (name, message)
        assert "by hand" not in message and "without calling" not in message
    assert "ignores its x_value argument" in _feedback(course, "msg-at-two")


def test_the_hand_written_gradient_is_still_told_as_such(course, release_notebook, solution,
                                                        tmp_path) -> None:
    by_hand = AT_TWO.replace("    loss.backward()\n", "    x.grad = torch.tensor(56.0)\n")
    result = grade_answers(course, release_notebook, tmp_path,
                           {"msg-by-hand": {**solution, "chain_rule": by_hand}})["msg-by-hand"]
    message = next(t.message for t in result.tests if t.name == "gradient_at_unseen_inputs")
    assert "written by hand" in message and "x_value" not in message.split(".")[0]


def test_feedback_is_headed_by_the_parts_titles(graded, course) -> None:
    feedback = _feedback(course, "msg-solution")
    headings = re.findall(r"^## (.+)$", feedback, re.MULTILINE)
    assert headings == list(PARTS)
    html = (course.feedback_dir("msg-solution", "backprop") / "backprop.html").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == list(PARTS)
    assert "check_train" not in feedback and "check_train" not in html
    assert [t.part for t in graded["msg-solution"].tests] == [PARTS[0]] * 3 + [PARTS[1]] * 3 \
        + [PARTS[2]] * 3


def test_feedback_says_the_due_date_and_the_late_penalty(graded) -> None:
    result = copy.deepcopy(graded["msg-at-two"])  # 7 / 10
    assert "Due" not in render_markdown(result)  # nothing said where nothing is known
    result.due, result.seconds_late, result.late_penalty = ("2025-03-01T23:59:00+00:00",
                                                            2 * 3600 + 5 * 60, 2.0)
    markdown = render_markdown(result)
    for line in ("Due: 2025-03-01 23:59 UTC", "Submitted 2 h 5 min late",
                 "Autograded: 7 / 10", "Late penalty: 2 points off"):
        assert line in markdown and line in render_html(result)
    strong = re.findall(r"<strong>(.*?)</strong>", mistune.html(markdown), re.S)
    assert [s for s in strong if "Score" in s] == ["Score: 5 / 10 (50 %)"]  # the final one
    result.due, result.seconds_late, result.late_penalty = ("2025-03-01T23:59:00+00:00",
                                                            0.0, 0.0)
    assert "Submitted on time" in render_markdown(result)


@pytest.mark.parametrize("student, status", [("msg-invalid", "invalid"),
                                             ("msg-hang", "timeout")])
def test_a_notebook_wide_reason_is_stated_once(graded, course, student, status) -> None:
    result = graded[student]
    assert result.status == status and result.score == 0, result.reason
    feedback = _feedback(course, student)
    reason = result.reason.split("; ")[0]
    assert feedback.count(reason) == 1, feedback
    assert feedback.count("not run: see above") + feedback.count("stopped here: see above") \
        == 9


def test_a_notebook_without_nbgrader_metadata_is_graded_as_it_is(graded, course) -> None:
    for student in ("msg-no-metadata", "msg-only-answers"):
        result = graded[student]
        assert result.score == 10 and result.status == "graded", (student, result.reason)
        assert "missing" not in result.reason and not result.cell_errors
        assert "missing" not in _feedback(course, student)
