"""Runs last (tests/conftest.py puts it there): after the whole suite -- batches graded locally
and on Dask, killed batches, `doctor`, disk bombs -- the host's temporary folder holds nothing
of ours."""

from __future__ import annotations

from tests.conftest import TEMP_AT_START, temp_leftovers


def test_the_suite_left_nothing_in_the_temporary_folder() -> None:
    assert temp_leftovers(TEMP_AT_START) == []
