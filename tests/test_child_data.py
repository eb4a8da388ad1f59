"""Only plain, bounded data crosses from the student's process to the grader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.verify.data import UntrustedData, as_number, check_plain, load_child_data


def _saved(tmp_path: Path, value) -> Path:
    path = tmp_path / "data.pt"
    torch.save(value, path)
    return path


def test_plain_data_round_trips(tmp_path: Path) -> None:
    value = {"grads": {"w": torch.ones(2, 3)}, "n": 3, "ok": True, "s": "x", "l": [1.5, None]}
    loaded = load_child_data(_saved(tmp_path, value))
    assert torch.equal(loaded["grads"]["w"], torch.ones(2, 3)) and loaded["l"] == [1.5, None]


class Sneaky(torch.Tensor):
    """A subclass could answer comparisons with anything it likes."""


@pytest.mark.parametrize("value", [
    torch.ones(1).as_subclass(Sneaky),
    torch.nn.Parameter(torch.ones(1)),
    {1: "non-string key"},
    torch.zeros(1).expand(10_000_000),  # a tiny file claiming ten million elements
], ids=["subclass", "parameter", "int-key", "stride-0"])
def test_anything_but_plain_data_is_refused(tmp_path: Path, value) -> None:
    with pytest.raises(UntrustedData):
        load_child_data(_saved(tmp_path, value))


def test_shared_references_do_not_explode(tmp_path: Path) -> None:
    node: list = []
    for _ in range(30):  # 2**30 paths through 30 distinct lists
        node = [node, node]
    check_plain(load_child_data(_saved(tmp_path, node)))


def test_a_pickled_payload_is_never_run(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (exec, ("open('/tmp/autograder-pwned', 'w').write('x')",))

    with pytest.raises(UntrustedData):
        load_child_data(_saved(tmp_path, Payload()))
    assert not Path("/tmp/autograder-pwned").exists()


@pytest.mark.parametrize("value, message", [
    (torch.tensor([float("nan")]), "blew up"),
    (torch.ones(2), "one number"),
    (torch.tensor([True]), "dtype"),
    ("<Model>", "an object of type Model"),
])
def test_numbers_are_checked_with_messages_for_the_student(value, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        as_number(value, "x.grad")
