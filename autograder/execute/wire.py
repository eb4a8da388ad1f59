"""Plain data across the trust boundary, as length-prefixed frames on the job's channel.

A frame is `u32 length | u32 header length | JSON header | tensor bytes`. Tensors travel as
`{"\\u0000tensor": [dtype, shape, offset]}` in the header, their raw bytes after it. Nothing is
unpickled: the grader reads what the student's process sent with `decode`, which bounds every
byte before parsing it (frame size, values, nesting depth, tensor sizes, string lengths), so a
crafted frame costs the grader at most milliseconds and a few MiB.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

TENSOR_KEY = "\x00tensor"
MAX_FRAME_BYTES = 1024 * 1024  # an honest probe's data is kilobytes; output is capped
MAX_VALUES = 20_000  # values in one frame: numbers, strings, containers, tensors
MAX_DEPTH = 32
MAX_TENSOR_ELEMENTS = 1_000_000
MAX_TENSORS = 200  # in one frame; together no larger than the frame's bytes
MAX_STRING = 20_000  # characters; longer strings are cut (student text is capped again later)
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
          "uint8", "bool")
_HEADER = struct.Struct(">II")
_TENSOR_MARK = json.dumps(TENSOR_KEY).encode()[1:-1]  # as it appears in a header

# Bound at import, before any student code runs: a notebook that patches json or struct
# breaks only its own answers, never how the grader's frames are written.
_dumps, _loads, _pack = json.dumps, json.loads, _HEADER.pack


class WireError(Exception):
    """A frame that is not plain data within the limits."""


# ---------------------------------------------------------------- encoding (either side)

def encode(value: Any) -> bytes:
    """One frame holding `value`: None, bool, int, float, str, lists, dicts with str keys and
    plain CPU tensors (anything else must be turned into one of these first)."""
    blobs: list[bytes] = []
    offset = [0]

    def convert(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            return "<nested too deeply>"
        if item is None or type(item) in (bool, int, float, str):
            return item
        if type(item) is list or type(item) is tuple:
            return [convert(child, depth + 1) for child in item]
        if type(item) is dict:
            return {str(key): convert(child, depth + 1) for key, child in item.items()}
        return {TENSOR_KEY: _tensor_header(item, blobs, offset)}

    header = _dumps(convert(value, 0), allow_nan=True).encode("utf-8")
    body = b"".join(blobs)
    return _pack(4 + len(header) + len(body), len(header)) + header + body


def _tensor_header(tensor: Any, blobs: list[bytes], offset: list[int]) -> list:
    import torch

    flat = tensor.detach().as_subclass(torch.Tensor).cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    header = [str(flat.dtype).removeprefix("torch."), list(tensor.shape), offset[0]]
    blobs.append(data)
    offset[0] += len(data)
    return header


# ---------------------------------------------------------------- decoding (trusted side)

def frame_length(prefix: bytes) -> int:
    """The length of the frame whose first four bytes are `prefix`, checked against the cap."""
    (length,) = struct.unpack(">I", prefix)
    if length < 4 or length > MAX_FRAME_BYTES:
        raise WireError(f"a frame of {length} bytes (at most {MAX_FRAME_BYTES})")
    return length


def decode(frame: bytes) -> Any:
    """The value in `frame` (without its length prefix). Raises WireError for anything but
    plain data within the limits; costs time linear in the frame's bytes, bounded by the cap."""
    if len(frame) < 4 or len(frame) > MAX_FRAME_BYTES:
        raise WireError("a frame of the wrong size")
    (header_length,) = struct.unpack(">I", frame[:4])
    if header_length > len(frame) - 4:
        raise WireError("a header longer than its frame")
    header = frame[4:4 + header_length]
    # Counted in C before anything is parsed: every value but the first follows a comma, a
    # colon's key or an opening bracket, so this bounds the values json would build.
    if header.count(b",") + header.count(b"[") + header.count(b"{") >= MAX_VALUES:
        raise WireError(f"more than {MAX_VALUES} values")
    if header.count(_TENSOR_MARK) > MAX_TENSORS:
        raise WireError(f"more than {MAX_TENSORS} tensors")
    try:
        tree = _loads(header.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad JSON, UTF-8, huge ints, deep nesting
        raise WireError(f"not plain data ({type(error).__name__})") from None
    try:
        return _rebuild(tree, memoryview(frame)[4 + header_length:])
    except WireError:
        raise
    except Exception as error:  # anything torch refuses to build (a shape whose strides overflow)
        raise WireError(f"not plain data ({type(error).__name__})") from None


def _rebuild(tree: Any, body: memoryview) -> Any:
    """Walk the parsed header iteratively, counting values and depth, rebuilding tensors."""
    count = tensors = 0
    claimed: list[tuple[int, int]] = []  # the body's bytes each tensor takes: never shared
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(tree, root, 0, 0)]  # (item, parent, key, depth)
    while stack:
        item, parent, key, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise WireError(f"more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            raise WireError("data nested too deeply")
        if type(item) is str:
            value: Any = item[:MAX_STRING]
        elif item is None or type(item) in (bool, int, float):
            value = item
        elif type(item) is list:
            value = [None] * len(item)
            stack.extend((child, value, index, depth + 1) for index, child in enumerate(item))
        elif type(item) is dict and TENSOR_KEY in item:
            tensors += 1
            if tensors > MAX_TENSORS:
                raise WireError(f"more than {MAX_TENSORS} tensors")
            value = _tensor(item, body, claimed)
        elif type(item) is dict:
            value = {}
            stack.extend((child, value, name, depth + 1) for name, child in item.items())
        else:
            raise WireError(f"values of type {type(item).__name__} are not accepted")
        parent[key] = value
    return root[0]


def _tensor(item: Mapping, body: memoryview, claimed: list[tuple[int, int]]) -> Any:
    import torch

    spec = item[TENSOR_KEY]
    if len(item) != 1 or type(spec) is not list or len(spec) != 3:
        raise WireError("a malformed tensor")
    dtype_name, shape, offset = spec
    if dtype_name not in DTYPES:
        raise WireError(f"tensors of dtype {dtype_name!r} are not accepted")
    if (type(shape) is not list or len(shape) > 8
            or not all(type(size) is int and 0 <= size <= MAX_TENSOR_ELEMENTS for size in shape)):
        raise WireError("a tensor of a malformed shape")
    numel = math.prod(shape)
    if numel > MAX_TENSOR_ELEMENTS:
        raise WireError(f"a tensor of {numel} elements is too large")
    dtype = getattr(torch, dtype_name)
    size = numel * torch.empty((), dtype=dtype).element_size()
    if type(offset) is not int or offset < 0 or offset + size > len(body):
        raise WireError("a tensor outside its frame")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    # Tensors may not share bytes: together they are never larger than the frame itself.
    if any(offset < end and start < offset + size for start, end in claimed):
        raise WireError("tensors that share their bytes")
    claimed.append((offset, offset + size))
    raw = torch.frombuffer(bytearray(body[offset:offset + size]), dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)
