"""Open Inference Protocol tensors, whatever carries them: the checks every input tensor passes,
the raw (little-endian) tensor encoding, and the outputs a model gives.

REST's JSON and binary extension (app.rest.inference_protocol) and gRPC's protobuf messages
(app.grpc.codec) both read their tensors through `InputColumns` and the raw codec here, so the
two transports accept and refuse exactly the same tensors, with the same messages.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from app.errors import BadRequest, quoted
from app.inference.model import Prediction

OUTPUTS = {"label": "INT64", "proba": "FP32"}
_INTEGER_TYPES = {"INT64": "<i8", "INT32": "<i4"}
_OUTPUT_DTYPES = {"INT64": "<i8", "FP32": "<f4"}
_LENGTH = struct.Struct("<I")
_VECTOR_FROM = 64
"""Elements from which a BYTES tensor is tried with numpy: below, numpy's fixed cost (about
5 us) exceeds the loop's (about 0.1 us an element)."""


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    columns: dict[str, list[Any]]
    """Input name → its elements, flattened in row-major order."""
    outputs: dict[str, bool]
    """Requested output → whether it is wanted as binary data (REST only; gRPC always is)."""

    def rows(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*self.columns.values(), strict=True)
        ]


class InputColumns:
    """Collects a request's input tensors, one at a time, in the order a transport reads them:
    `expect` checks a tensor's name, datatype and shape before its data is read, `add` its
    element count, `columns` that every input came once with as many elements as the others."""

    def __init__(self, inputs: dict[str, str]) -> None:
        self.inputs = inputs
        """Each input the model takes → its datatype (BYTES or INT64)."""
        self._columns: dict[str, list[Any]] = {}

    def expect(self, name: Any, datatype: Any, shape: Any) -> tuple[str, list[int], int]:
        """The checked name and shape, and how many elements the tensor must hold."""
        inputs = self.inputs
        if type(name) is not str or name not in inputs:  # a list or dict is unhashable: check first
            raise BadRequest(f"unknown input {quoted(name)}; this model takes {list(inputs)}")
        expected = inputs[name]
        allowed = ("INT64", "INT32") if expected == "INT64" else (expected,)
        if datatype not in allowed:
            raise BadRequest(
                f"input {name!r} has datatype {quoted(datatype)}; expected {' or '.join(allowed)}"
            )
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(type(dim) is int and dim >= 0 for dim in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise BadRequest(f"input {name!r} shape {quoted(shape)} must be [N] or [N, 1]")
        return name, shape, prod(shape)

    def add(self, name: str, values: list[Any], shape: list[int], count: int) -> None:
        if len(values) != count:
            raise BadRequest(
                f"input {name!r} has {len(values)} elements; its shape {shape} says {count}"
            )
        if name in self._columns:
            raise BadRequest(f"input {name!r} is given twice")
        self._columns[name] = values

    def columns(self) -> dict[str, list[Any]]:
        columns = self._columns
        missing = [name for name in self.inputs if name not in columns]
        if missing:
            raise BadRequest(f"missing input(s) {missing}; this model takes {list(self.inputs)}")
        counts = {len(values) for values in columns.values()}
        if len(counts) != 1:
            raise BadRequest("every input must have the same number of elements (one per flight)")
        if counts == {0}:
            raise BadRequest(
                "every input has 0 elements: send at least one flight (shape [N], N ≥ 1)"
            )
        return columns


def from_raw(name: str, datatype: str, data: bytes) -> list[Any]:
    """A tensor's elements from its raw bytes (REST's binary extension, gRPC's
    `raw_input_contents`): little-endian integers, or length-prefixed UTF-8 strings."""
    if datatype in _INTEGER_TYPES:
        width = np.dtype(_INTEGER_TYPES[datatype]).itemsize
        if len(data) % width:
            raise BadRequest(
                f"input {name!r}: {len(data)} bytes is not a whole number of {datatype}"
            )
        values: list[Any] = np.frombuffer(data, dtype=_INTEGER_TYPES[datatype]).tolist()
        return values
    return _bytes_elements(name, data)


def _bytes_elements(name: str, data: bytes) -> list[Any]:
    """BYTES tensors: each element is a 4-byte little-endian length, then that many bytes."""
    elements = _uniform_elements(data)
    if elements is None:
        elements = _short_elements(data)
    return _varied_elements(name, data) if elements is None else elements


def _uniform_elements(data: bytes) -> list[Any] | None:
    """The elements when all are as long as the first (a flight type, an airport code...): one
    numpy view of the buffer as rows of prefix + element, every prefix compared at once, the
    elements cut and decoded in C. None for anything else, which the loop then decides: a
    buffer that is not whole rows, another prefix, an element ending in NUL (numpy's
    fixed-width bytes drop trailing NULs), an element that is not UTF-8. The element count is
    len(data) // (4 + length): no allocation outgrows the buffer."""
    if len(data) < 4:
        return None
    length = _LENGTH.unpack_from(data)[0]
    stride = 4 + length
    if len(data) % stride or len(data) // stride < _VECTOR_FROM:
        return None
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, stride)
    if (rows[:, :4].view("<u4") != length).any():
        return None
    if length == 0:  # the cheapest hostile tensor: 4 bytes an element
        return [""] * len(rows)
    if not rows[:, -1].all():
        return None
    try:
        if length == 1:  # one character each (a byte over 127 alone is not UTF-8)
            return list(rows[:, 4].tobytes().decode("ascii"))
        return list(map(bytes.decode, rows[:, 4:].copy().view(f"S{length}").ravel().tolist()))
    except UnicodeDecodeError:
        return None


def _short_elements(data: bytes) -> list[Any] | None:
    """Elements of 1 to 255 bytes without a NUL (names of airlines, places...), cut with no
    Python step per element although each offset follows from the one before. Their prefixes
    are then (length, 0, 0, 0) and hold the buffer's only NULs, so a prefix starts wherever a
    byte other than NUL is followed by three NULs; the offsets so found are the loop's once
    the chain checks whole (the first at 0, each next 4 + its length further, the last ending
    the buffer). With each length byte set to NUL every prefix reads as four NULs: one decode
    (UTF-8 exactly when every element is: no character spans a NUL) and one split. None for
    anything else (an empty or longer element, a NUL in one, a broken chain, bytes that are
    not UTF-8): the loop decides, with its messages. Under 5 bytes times _VECTOR_FROM (4 + 1
    an element at least) the loop is cheaper."""
    if len(data) < 5 * _VECTOR_FROM:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8)
    nul = buffer == 0
    starts = np.flatnonzero(~nul[:-3] & nul[1:-2] & nul[2:-1] & nul[3:])
    if not len(starts) or np.count_nonzero(nul) != 3 * len(starts):
        return None
    ends = starts + 4 + buffer[starts]
    if starts[0] or ends[-1] != len(data) or (starts[1:] != ends[:-1]).any():
        return None
    text = buffer.copy()
    text[starts] = 0
    try:
        return text[4:].tobytes().decode("utf-8").split("\0\0\0\0")
    except UnicodeDecodeError:
        return None


def _varied_elements(name: str, data: bytes) -> list[Any]:
    """The general case, one element at a time: one struct call, one slice and one decode per
    element, the rare failures sorted out by exceptions."""
    elements: list[Any] = []
    append = elements.append
    unpack = _LENGTH.unpack_from
    size = len(data)
    offset = 0
    try:
        while offset < size:
            start = offset + 4
            offset = start + unpack(data, offset)[0]
            if offset > size:
                raise BadRequest(f"input {name!r}: BYTES element overruns the binary data")
            append(data[start:offset].decode("utf-8"))
    except struct.error:
        raise BadRequest(f"input {name!r}: truncated BYTES element length") from None
    except UnicodeDecodeError:
        raise BadRequest(f"input {name!r}: element {len(elements)} is not UTF-8") from None
    return elements


def check_outputs(names: Sequence[Any]) -> list[str]:
    """The outputs asked for, each known and asked for once, as an input is given once (a
    repeated one was answered once, silently)."""
    checked: list[str] = []
    for name in names:
        if type(name) is not str or name not in OUTPUTS:
            raise BadRequest(f"unknown output {quoted(name)}; this model gives {list(OUTPUTS)}")
        if name in checked:
            raise BadRequest(f"output {name!r} is asked for twice")
        checked.append(name)
    return checked


def output_values(name: str, prediction: Prediction) -> list[Any] | np.ndarray:
    return prediction.labels if name == "label" else prediction.probabilities


def to_raw(name: str, prediction: Prediction) -> bytes:
    """An output's elements as raw little-endian bytes."""
    dtype = _OUTPUT_DTYPES[OUTPUTS[name]]
    return np.asarray(output_values(name, prediction), dtype=dtype).tobytes()


def output_metadata() -> Sequence[dict[str, Any]]:
    return [
        {"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in OUTPUTS.items()
    ]
