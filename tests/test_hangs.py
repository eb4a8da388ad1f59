"""One hang, one part: with the default settings, a step that hangs or crashes costs the tests
that needed it, fast, and a legitimately slow cell is left alone."""

from __future__ import annotations

import nbformat
import pytest

from autograder.author import with_answers
from autograder.course import DEFAULT_TIMEOUT
from tests.conftest import grade_answers

LOOPS_FOREVER = ("def train_step(model, optimizer, criterion, X, y):\n"
                 "    while True:\n        pass\n")
SWALLOWS_INTERRUPTS = ("def train_step(model, optimizer, criterion, X, y):\n"
                       "    while True:\n        try:\n            while True:\n"
                       "                pass\n"
                       "        except BaseException:\n            pass\n")
SEGFAULTS = ("import ctypes\n"
             "def train_step(model, optimizer, criterion, X, y):\n"
             "    ctypes.string_at(0)\n")
SLOW_BUT_FINE = ("import time\n"
                 "started = time.monotonic()\n"
                 "while time.monotonic() - started < 20:\n"
                 "    sum(range(1000))\n"
                 "print('slow cell done')\n")
EXITS_AT_THE_END = "import os\nos._exit(0)\n"
# A cell that cannot be interrupted (as a long C call would not be, within the grace)
IGNORES_INTERRUPTS_AT_THE_END = ("import signal, time\n"
                                 "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                 "time.sleep(1000)\n")


def _appended(release_notebook, answers, code: str) -> str:
    notebook = with_answers(release_notebook, answers)
    notebook.cells.append(nbformat.v4.new_code_cell(code))
    return nbformat.writes(notebook)


@pytest.fixture(scope="module")
def results(course, release_notebook, solution, tmp_path_factory):
    assert course.timeout == DEFAULT_TIMEOUT  # the default settings, as an instructor has them
    return grade_answers(course, release_notebook, tmp_path_factory.mktemp("hangs"), {
        "loops-forever": {**solution, "train_step": LOOPS_FOREVER},
        "swallows-interrupts": {**solution, "train_step": SWALLOWS_INTERRUPTS},
        "segfaults": {**solution, "train_step": SEGFAULTS},
        "slow-but-fine": _appended(release_notebook, solution, SLOW_BUT_FINE),
        "exits-at-the-end": _appended(release_notebook, solution, EXITS_AT_THE_END),
        "unstoppable-at-the-end": _appended(release_notebook, solution,
                                            IGNORES_INTERRUPTS_AT_THE_END),
    }, timeout=DEFAULT_TIMEOUT, workers=2)


def _part3_messages(result) -> list[str]:
    return [test.message for test in result.tests if test.cell == "check_train"]


def test_a_train_step_that_loops_forever_costs_part_3_only_in_seconds(results) -> None:
    result = results["loops-forever"]
    assert result.score == 6 and result.status == "timeout"
    assert result.seconds < 15, result.seconds
    assert all("train_step" in message for message in _part3_messages(result))


def test_a_loop_that_swallows_the_interrupt_is_killed_and_the_rest_graded(results) -> None:
    result = results["swallows-interrupts"]
    assert result.score == 6
    assert "did not stop within" in result.reason
    assert all("train_step" in message for message in _part3_messages(result))


def test_a_segfault_under_a_probe_costs_that_function_only(results) -> None:
    result = results["segfaults"]
    assert result.score == 6 and result.status == "crashed"
    assert "SIGSEGV" in result.reason and "train_step" in result.reason


def test_a_legitimate_twenty_second_cell_is_not_cut(results) -> None:
    result = results["slow-but-fine"]
    assert result.score == 10 and result.status == "graded", result.reason
    assert "slow cell done" in result.output and result.seconds >= 20


def test_a_crash_in_the_last_cell_keeps_every_point(results) -> None:
    result = results["exits-at-the-end"]
    assert result.score == 10 and result.status == "crashed"
    assert "exit code 0" in result.reason


def test_a_cell_that_cannot_be_stopped_costs_nothing_the_probes_need(results) -> None:
    """It is killed; in the next process every cell that ran before runs again (it holds the
    answers), the killer is skipped, and the probes find every function."""
    result = results["unstoppable-at-the-end"]
    assert result.score == 10 and result.status == "timeout", result.reason
    assert "did not stop within" in result.reason
