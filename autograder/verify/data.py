"""Reading what the student's process wrote, and helpers for tests that check such data.

Only plain data is accepted: torch.load(weights_only=True) refuses pickled code and Tensor
subclasses; `check_plain` then refuses anything but dicts, lists, numbers, strings and plain
tensors, so no object with behaviour the student chose reaches the hidden tests.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

MAX_DATA_BYTES = 32 * 1024 * 1024
_SCALARS = (bool, int, float, str, type(None))


class UntrustedData(Exception):
    """What the child wrote is not plain data of an accepted kind."""


def read_child_file(path: Path, cap: int, levels: int = 1) -> bytes:
    """At most `cap` bytes of a file the child wrote. The child owns its folder, so the name,
    or any of the `levels` folders above it, may now be a symlink (to a secret, to /dev/zero)
    or a FIFO: only a regular file reached through real folders is read. (Called once the
    job's processes are all gone, so nothing changes between this check and the read.)"""
    for folder in list(path.parents)[:levels - 1]:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise UntrustedData(f"{folder.name} is not a folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise UntrustedData(f"{path.name} cannot be opened ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UntrustedData(f"{path.name} is not a regular file")
        return handle.read(cap + 1)


def load_child_data(path: Path) -> Any:
    import torch

    content = read_child_file(path, MAX_DATA_BYTES, levels=2)
    if len(content) > MAX_DATA_BYTES:
        raise UntrustedData(f"{path.name} is larger than {MAX_DATA_BYTES} bytes")
    _check_archive(content, path.name)
    try:
        data = torch.load(io.BytesIO(content), weights_only=True, map_location="cpu")
    except Exception:
        raise UntrustedData(f"{path.name} is not plain data") from None
    check_plain(data)
    return data


MAX_NODES = 100_000  # values in one file, counting each shared one once
MAX_TENSOR_ELEMENTS = 1_000_000


def _check_archive(content: bytes, name: str) -> None:
    """torch.save writes an uncompressed zip: refuse compressed entries and entries that
    unpack to more than the cap, so a small file cannot unpack into gigabytes here."""
    try:
        entries = zipfile.ZipFile(io.BytesIO(content)).infolist()
    except zipfile.BadZipFile:
        raise UntrustedData(f"{name} is not a torch file") from None
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
        raise UntrustedData(f"{name} holds compressed entries")
    if sum(entry.file_size for entry in entries) > MAX_DATA_BYTES:
        raise UntrustedData(f"{name} unpacks to more than {MAX_DATA_BYTES} bytes")


def check_plain(value: Any) -> None:
    """Refuse anything but plain data of bounded size. Iterative and visiting each object once:
    pickle keeps shared references, so a tiny file can describe an exponentially wide tree."""
    import torch

    seen: set[int] = set()
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if len(seen) > MAX_NODES:
            raise UntrustedData(f"more than {MAX_NODES} values")
        if depth > 32:
            raise UntrustedData("data nested too deeply")
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is torch.Tensor:  # exactly: subclasses could carry __torch_function__
            _check_tensor(item)
        elif kind in (list, tuple):
            stack.extend((child, depth + 1) for child in item)
        elif kind is dict:
            for key, child in item.items():
                if type(key) is not str:
                    raise UntrustedData("dict keys must be strings")
                stack.append((child, depth + 1))
        else:
            raise UntrustedData(f"values of type {kind.__name__} are not accepted")


def _check_tensor(tensor: Any) -> None:
    import torch

    if tensor.layout != torch.strided or tensor.device.type != "cpu":
        raise UntrustedData("only dense CPU tensors are accepted")
    if tensor.numel() > MAX_TENSOR_ELEMENTS:
        raise UntrustedData(f"a tensor of {tensor.numel()} elements is too large")
    if tensor.untyped_storage().nbytes() > MAX_TENSOR_ELEMENTS * 8:
        raise UntrustedData("a tensor's storage is too large")


def as_tensor(value: Any, what: str) -> Any:
    """`value` as a float64 tensor, or an AssertionError that tells the student what it was."""
    import torch

    if value is None:
        raise AssertionError(f"{what} is None")
    if type(value) is not torch.Tensor:
        raise AssertionError(f"{what} should be a tensor, not {_kind(value)}")
    if value.is_complex() or not (value.is_floating_point() or value.dtype == torch.int64):
        raise AssertionError(f"{what} has dtype {value.dtype}, expected a float tensor")
    return value.to(torch.float64)


def as_number(value: Any, what: str) -> float:
    """A one-element tensor (0-d or 1-d alike) or a Python number, as a float."""
    if type(value) in (int, float):
        number = float(value)
    else:
        tensor = as_tensor(value, what)
        if tensor.numel() != 1:
            raise AssertionError(f"{what} should hold one number, but has shape "
                                 f"{tuple(tensor.shape)}")
        number = float(tensor.reshape(-1)[0])
    if not math.isfinite(number):
        raise AssertionError(f"{what} is {number}: training or arithmetic blew up")
    return number


def close(actual: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Shape-tolerant for one-element values, exact in shape otherwise; compared in float64."""
    import torch

    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    if actual.numel() == 1 and expected.numel() == 1:
        actual, expected = actual.reshape(1), expected.reshape(1)
    if actual.shape != expected.shape:
        return False
    return bool(torch.allclose(actual, expected, rtol=rtol, atol=atol))


def _kind(value: Any) -> str:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return f"an object of type {value[1:-1]}"  # the child's placeholder for an object
    return f"a {type(value).__name__}"
