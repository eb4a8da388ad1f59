"""What an upload must be before it is stored: a notebook of this assignment that the grader can
read. Each bad upload gets its status (400, 413, 422) and a message naming what is wrong;
hostile shapes (deep nesting, 200k cells) are refused fast."""

from __future__ import annotations

import copy
import json
import os
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.assignment import Assignment
from autograder.author import with_answers
from autograder.course import Course
from autograder.service.intake import MAX_CELLS, BadUpload, check_upload
from tests.conftest import REPO
from tests.test_second_assignment import _answer, _meta

LIMIT = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def backprop(course: Course) -> Assignment:
    return Assignment.load(course, "backprop")


def refused(content: bytes, assignment: Assignment, limit: int = LIMIT) -> BadUpload:
    started = time.monotonic()
    with pytest.raises(BadUpload) as error:
        check_upload(content, assignment, limit)
    assert time.monotonic() - started < 5
    return error.value


def as_bytes(notebook) -> bytes:  # noqa: ANN001
    return nbformat.writes(notebook).encode()


def test_the_release_a_solution_and_the_source_are_accepted(backprop: Assignment,
                                                            release_notebook, solution) -> None:
    check_upload(as_bytes(release_notebook), backprop, LIMIT)
    check_upload(as_bytes(with_answers(release_notebook, solution)), backprop, LIMIT)
    check_upload((REPO / "source" / "backprop" / "backprop.ipynb").read_bytes(), backprop, LIMIT)


def test_answer_cells_that_lost_their_metadata_are_recognised(backprop: Assignment,
                                                              solution) -> None:
    """A student who pasted the answers into a fresh notebook: matched by the functions the
    answer cells define, as the grader matches them."""
    fresh = new_notebook(cells=[new_markdown_cell("my work"),
                                new_code_cell(solution["train_step"])])
    check_upload(as_bytes(fresh), backprop, LIMIT)


def test_another_assignments_notebook(backprop: Assignment) -> None:
    squares = new_notebook(cells=[
        new_markdown_cell("# Squares", metadata=_meta("intro")),
        _answer("    return x ** 2\n"),
        new_code_cell("assert square(2) == 4", metadata=_meta("check_square", grade=True,
                                                              points=3)),
    ])
    error = refused(as_bytes(squares), backprop)
    assert error.status_code == 422
    assert error.message.startswith("this is not a notebook of backprop: none of its answer "
                                    "cells (chain_rule, forward_backward, train_step) were found")
    assert "train_step()" in error.message
    empty = refused(as_bytes(new_notebook()), backprop)
    assert (empty.status_code, "not a notebook of backprop" in empty.message) == (422, True)


def test_a_locked_cell_alone_is_not_an_answer(backprop: Assignment, release_notebook) -> None:
    """The release's imports cell copied into another notebook does not make it backprop's."""
    imports = next(cell for cell in release_notebook.cells
                   if cell.metadata.get("nbgrader", {}).get("grade_id") == "imports")
    plain = new_notebook(cells=[new_code_cell(imports.source)])
    assert refused(as_bytes(plain), backprop).status_code == 422


def test_nbformat_versions(backprop: Assignment, release_notebook) -> None:
    v3 = nbformat.v3.new_notebook(worksheets=[nbformat.v3.new_worksheet(
        cells=[nbformat.v3.new_code_cell(input="def train_step(): pass")])])
    error = refused(nbformat.writes(v3, version=3).encode(), backprop)
    assert error.status_code == 422
    assert "nbformat 3" in error.message
    future = json.loads(as_bytes(release_notebook))
    future["nbformat"] = 5
    error = refused(json.dumps(future).encode(), backprop)
    assert (error.status_code, "nbformat 5" in error.message) == (422, True)
    unversioned = json.loads(as_bytes(release_notebook))
    del unversioned["nbformat"]
    assert refused(json.dumps(unversioned).encode(), backprop).status_code == 400


@pytest.mark.parametrize(("content", "status", "says"), [
    (os.urandom(4096) + b"\xff", 400, "not UTF-8"),
    (b"\xff\xfe{}", 400, "not UTF-8"),
    (b"", 400, "empty"),
    (b"   \n", 400, "empty"),
    (b"print('hello')", 400, "not JSON (line 1, column 1"),
    (b'{"cells": [', 400, "not JSON"),
    (b"[1, 2, 3]", 400, "not an object"),
    (b'"a string"', 400, "not an object"),
    (b'{"nbformat": 4, "metadata": {}}', 400, "no list of cells"),
    (b'{"nbformat": 4, "cells": {"a": 1}}', 400, "no list of cells"),
    (b'{"nbformat": "4", "cells": []}', 400, "no nbformat version"),
    (b'{"nbformat": true, "cells": []}', 400, "no nbformat version"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1, "x", null]}', 422,
     "not a readable Jupyter notebook"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": 7}]}',
     422, ""),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [], "x": NaN}', 422,
     "not a notebook of backprop"),
])
def test_not_a_notebook(backprop: Assignment, content: bytes, status: int, says: str) -> None:
    error = refused(content, backprop)
    assert error.status_code == status, error.message
    assert says in error.message


def test_over_size_before_parsing(backprop: Assignment, release_notebook) -> None:
    error = refused(b"[" * 2000, backprop, limit=1000)  # not JSON either: the size comes first
    assert error.status_code == 413
    assert error.message == "this upload is 2 KB; at most 1000 bytes is accepted"
    good = as_bytes(release_notebook)
    assert refused(good, backprop, limit=len(good) - 1).status_code == 413
    check_upload(good, backprop, len(good))
    big = refused(b" " * (6 * 1024 * 1024), backprop)
    assert "6.0 MB; at most 5.0 MB" in big.message


def test_deep_nesting(backprop: Assignment, release_notebook) -> None:
    error = refused(b"[" * 100_000 + b"]" * 100_000, backprop, limit=10**7)
    assert (error.status_code, error.message) == (400, "this is not a notebook: its JSON is "
                                                       "nested too deeply")
    deep_metadata = b'{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": ' + \
        b'{"a": ' * 100_000 + b"1" + b"}" * 100_001
    assert refused(deep_metadata, backprop, limit=10**7).status_code == 400
    # Deep, but within what json reads: nbformat must refuse it (or read it), never crash.
    notebook = json.loads(as_bytes(release_notebook))
    nested: dict = {}
    inner = nested
    for _ in range(900):
        inner["a"] = {}
        inner = inner["a"]
    notebook["cells"][0]["metadata"]["deep"] = nested
    try:
        check_upload(json.dumps(notebook).encode(), backprop, LIMIT)
    except BadUpload as bad:
        assert bad.status_code in (400, 422)


def test_two_hundred_thousand_cells(backprop: Assignment) -> None:
    cells = [{"cell_type": "raw", "metadata": {}, "source": ""}] * 200_000
    content = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                          "cells": cells}).encode()
    error = refused(content, backprop, limit=len(content))
    assert error.status_code == 422
    assert error.message == f"this notebook has 200000 cells; at most {MAX_CELLS} are accepted"


def test_a_big_real_notebook_is_read_in_time(backprop: Assignment, release_notebook,
                                             solution) -> None:
    """Just under the size limit, with many cells and outputs: accepted, in bounded time."""
    notebook = with_answers(release_notebook, solution)
    filler = [new_code_cell(f"print({n})", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="x" * 800)]) for n in range(MAX_CELLS - 100)]
    notebook.cells = filler + notebook.cells
    content = as_bytes(notebook)
    assert len(content) < LIMIT
    started = time.monotonic()
    check_upload(content, backprop, LIMIT)
    assert time.monotonic() - started < 5


def test_messages_carry_no_student_text(backprop: Assignment) -> None:
    """The JSON error gives a position, never the student's bytes back."""
    hostile = b'{"cells": \x1b[31m"\xe2\x80\xae<script>'
    error = refused(hostile, backprop)
    assert "\x1b" not in error.message and "<script>" not in error.message
    assert "\u202e" not in error.message


def test_bad_upload_is_a_user_error() -> None:
    from autograder.errors import UserError

    assert issubclass(BadUpload, UserError)
    assert copy.copy(BadUpload(413, "x")).status_code == 413
