"""Helpers for hidden tests that check the data the student's process sent back.

That data arrives as plain values only (`execute.wire`: dicts, lists, numbers, strings and
plain tensors, bounded), so no object with behaviour the student chose reaches the tests.
"""

from __future__ import annotations

import math
from typing import Any


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
