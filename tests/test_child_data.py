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


def test_compressed_or_oversized_archives_are_refused_before_unpacking(tmp_path: Path) -> None:
    import zipfile

    plain = _saved(tmp_path, {"x": torch.ones(3)})
    squeezed = tmp_path / "squeezed.pt"
    with zipfile.ZipFile(plain) as source, \
            zipfile.ZipFile(squeezed, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry))
    with pytest.raises(UntrustedData, match="compressed"):
        load_child_data(squeezed)


def test_a_small_view_of_a_large_storage_is_refused(tmp_path: Path) -> None:
    view = torch.zeros(3_000_000)[:1]  # one element, 12 MB of storage saved with it
    with pytest.raises(UntrustedData, match="storage is too large"):
        load_child_data(_saved(tmp_path, {"x": view}))


def test_results_behind_a_symlinked_folder_are_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    torch.save({"ok": True}, elsewhere / "probe-a.pt")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "out").symlink_to(elsewhere)
    with pytest.raises(UntrustedData, match="not a folder"):
        load_child_data(tmp_path / "job" / "out" / "probe-a.pt")
