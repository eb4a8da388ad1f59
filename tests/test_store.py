"""The result store: results outside autograded/ (which nbgrader deletes), read back as they
were saved, old results moved in once, and no key or file that could reach elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autograder.results import SubmissionResult
from autograder.results import TestResult as Check
from autograder.store import FileResultStore, StoreError, load_results, result_store


def _result(student: str, points: float = 1.0, reason: str = "") -> SubmissionResult:
    return SubmissionResult(student, "backprop", "backprop", "graded", reason=reason,
                            tests=[Check("t", "check_train", points, 2.0, points == 2.0,
                                              "a message", "A title")])


def test_saved_results_are_read_back_and_survive_nbgrader_removing_autograded(
        tmp_path: Path) -> None:
    store = result_store(tmp_path)
    store.save(_result("alice", 2.0))
    store.save(_result("bob", 0.0))
    store.save(_result("bob", 1.0))  # the last one saved is the one kept
    # What `nbgrader autograde --force` does to the student's folder.
    (tmp_path / "autograded").mkdir()
    assert store.load("backprop", "alice").score == 2.0
    assert {r.student_id: r.score for r in load_results(tmp_path, "backprop")} == \
        {"alice": 2.0, "bob": 1.0}
    assert store.load("backprop", "carol") is None
    assert not list(tmp_path.rglob("*.partial"))
    store.remove("backprop", "bob")
    assert [r.student_id for r in store.load_all("backprop")] == ["alice"]


def test_a_result_an_older_version_left_under_autograded_is_moved_in_once(
        tmp_path: Path) -> None:
    old = tmp_path / "autograded" / "dave" / "backprop" / "results.json"
    old.parent.mkdir(parents=True)
    old.write_text(_result("dave", 2.0, reason="raw \x1b[2Jtext").to_json())
    stale = tmp_path / "autograded" / "erin" / "backprop" / "results.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(_result("erin", 0.0).to_json())
    result_store(tmp_path).save(_result("erin", 2.0))  # newer than the old file

    results = {r.student_id: r for r in load_results(tmp_path, "backprop")}
    assert results["dave"].score == 2.0 and results["dave"].reason == "raw text"  # cleaned
    assert results["erin"].score == 2.0
    assert not old.exists() and not stale.exists()
    assert {r.student_id for r in load_results(tmp_path, "backprop")} == {"dave", "erin"}


def test_an_unreadable_result_is_named_not_dropped(tmp_path: Path) -> None:
    store = FileResultStore(tmp_path)
    store.save(_result("alice"))
    store.path("backprop", "bob").write_text("{ not json")
    store.path("backprop", "carol").symlink_to(store.path("backprop", "alice"))
    with pytest.raises(StoreError) as error:
        load_results(tmp_path, "backprop")
    assert "bob.json is not a stored result (JSONDecodeError)" in str(error.value)
    assert "carol.json" in str(error.value) and "symbolic link" in str(error.value)
    readable, problems = store.load_readable("backprop")
    assert [r.student_id for r in readable] == ["alice"] and len(problems) == 2


@pytest.mark.parametrize("student",
                         ["../alice", "..", ".hidden", "a/b", "", "-rf", "a b", "x\u202e"])
def test_a_key_that_could_name_another_file_is_refused(tmp_path: Path, student: str) -> None:
    store = result_store(tmp_path)
    with pytest.raises(StoreError, match="cannot key a stored result"):
        store.save(_result(student))
    with pytest.raises(StoreError, match="cannot key a stored result"):
        store.load("backprop", student)
    with pytest.raises(StoreError, match="cannot key a stored result"):
        store.load_all("../backprop")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_saving_replaces_a_planted_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    store = FileResultStore(tmp_path)
    store.folder("backprop").mkdir(parents=True)
    os.symlink(target, store.path("backprop", "alice"))
    store.save(_result("alice"))
    assert target.read_text() == "untouched"
    assert store.load("backprop", "alice").score == 1.0


def test_a_key_in_any_script_is_stored(tmp_path: Path) -> None:
    """Collection accepts ids with letters of any script (an LMS login such as josé): the store
    keys them too."""
    store = result_store(tmp_path)
    store.save(_result("josé"))
    assert store.load("backprop", "josé").student_id == "josé"
