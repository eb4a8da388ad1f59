"""Nothing of the grader's reaches the student's process: a submission that searches its
globals, every loaded module, the call stack at grading time, sys.argv and the environment
finds no hidden test, no solution, no expected value and no path to the course."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, grade_answers

SPY = r'''
def _spy(where, hidden, numbers, controls):
    import os, sys, types
    secrets = [s[::-1] for s in hidden]  # decoded here only: no global holds them

    def strings_of(value, depth=0):
        if isinstance(value, str):
            yield value
        elif isinstance(value, types.FunctionType) and depth < 2:
            yield from strings_of(value.__code__, depth + 1)
        elif isinstance(value, types.CodeType):
            yield value.co_name
            for const in value.co_consts:
                yield from strings_of(const, depth + 1)
        elif isinstance(value, (list, tuple)) and depth < 2:
            for item in value[:500]:
                yield from strings_of(item, depth + 1)
        elif isinstance(value, dict) and depth < 2:
            for key, item in list(value.items())[:500]:
                yield from strings_of(key, depth + 1)
                yield from strings_of(item, depth + 1)

    places = {"argv": sys.argv, "environ": dict(os.environ), "globals": dict(globals())}
    for name, module in list(sys.modules.items()):
        attributes = dict(getattr(module, "__dict__", {}))
        places["module " + name] = [name, str(getattr(module, "__file__", ""))] + [
            value for value in attributes.values()
            if isinstance(value, (str, types.FunctionType))]
    frame = sys._getframe(1)
    while frame is not None:
        places["frame " + frame.f_code.co_name] = [frame.f_code, dict(frame.f_locals)]
        frame = frame.f_back
    found, controls_seen = set(), set()
    for place, value in places.items():
        for text in strings_of(value):
            found.update((place, s) for s in secrets if s in text)
            controls_seen.update(c for c in controls if c in text)
        if place in ("globals",) or place.startswith("frame"):
            for item in (value.values() if isinstance(value, dict) else value[1].values()):
                if isinstance(item, (int, float)) and item in numbers:
                    found.add((place, item))
    print(f"SPY {where}: {'clean' if not found else 'FOUND ' + repr(sorted(found, key=str))}"
          f" controls={sorted(controls_seen)}")


_HIDDEN = {secrets!r}
_spy("top", _HIDDEN, {numbers!r}, ["autograder.execute.child"])
'''

FORWARD_BACKWARD = '''def forward_backward(model, x, y_true):
    _spy("probe", _HIDDEN, {numbers!r}, ["autograder.execute.child", "forward_backward"])
    loss = ((model(x) - y_true) ** 2).sum()
    loss.backward()
    return loss
'''


@pytest.fixture(scope="module")
def spy_result(course, release_notebook, solution, tmp_path_factory):
    secrets = [
        # any path into the course (source/, hidden_tests/, gradebook.db); the repository's
        # own path is not secret here, as the virtualenv lives in it
        str(course.root), str(REPO / "source"), str(REPO / "hidden_tests"),
        "hidden_tests", "reference_mlp", "step_outcomes", "ORDER_MISTAKES",
        "chain_rule_gradient", "whatever x is", "autograder.verify", "autograder_hidden",
        "### BEGIN SOLUTION", "loss = (y_pred - y_true) ** 2",
    ]
    numbers = [144.0, -31.5]  # dloss/dx at the unseen x = 3.0 and x = -1.5
    reversed_secrets = [s[::-1] for s in secrets]  # so the spy's own source matches nothing
    answers = {**solution,
               "forward_backward": SPY.replace("{secrets!r}", repr(reversed_secrets))
               .replace("{numbers!r}", repr(numbers))
               + FORWARD_BACKWARD.replace("{numbers!r}", repr(numbers))}
    results = grade_answers(course, release_notebook, tmp_path_factory.mktemp("spy"),
                            {"spy": answers})
    return results["spy"]


def test_spy_finds_nothing_at_the_top_level(spy_result) -> None:
    assert "SPY top: clean controls=['autograder.execute.child']" in spy_result.output, \
        spy_result.output


def test_spy_finds_nothing_while_being_graded(spy_result) -> None:
    # the controls show the search did see the modules and the probe's frames
    assert ("SPY probe: clean controls=['autograder.execute.child', 'forward_backward']"
            in spy_result.output), spy_result.output


def test_the_spy_is_still_graded_on_its_answers(spy_result) -> None:
    assert spy_result.score == 10
