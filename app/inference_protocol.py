"""The Open Inference Protocol (KServe V2) REST codec, with the binary tensor data extension.

Only transport lives here: tensors in, columns of flight fields out; a prediction in, tensors
out. Validation of the values is the same `FlightValidator` that `/predict` uses, so both APIs
accept and refuse exactly the same flights.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import orjson

from app.errors import BadRequest, quoted
from app.http import parse_json
from app.model import Prediction

HEADER_LENGTH = "inference-header-content-length"
OUTPUTS = {"label": "INT64", "proba": "FP32"}
_INTEGER_TYPES = {"INT64": "<i8", "INT32": "<i4"}
_OUTPUT_DTYPES = {"INT64": "<i8", "FP32": "<f4"}


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    columns: dict[str, list[Any]]
    """Input name → its elements, flattened in row-major order."""
    outputs: dict[str, bool]
    """Requested output → whether it is wanted as binary data."""

    def rows(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*self.columns.values(), strict=True)
        ]


def decode_request(
    body: bytes, header_length: str | None, inputs: dict[str, str]
) -> InferenceRequest:
    """`inputs` maps each input the model takes to its datatype (BYTES or INT64)."""
    header_bytes, binary = _split(body, header_length)
    header = parse_json(header_bytes)
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    tensors = header.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    columns: dict[str, list[Any]] = {}
    offset = 0
    for tensor in tensors:
        name, values, offset = _input(tensor, inputs, binary, offset)
        if name in columns:
            raise BadRequest(f"input {name!r} is given twice")
        columns[name] = values
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [name for name in inputs if name not in columns]
    if missing:
        raise BadRequest(f"missing input(s) {missing}; this model takes {list(inputs)}")
    counts = {len(values) for values in columns.values()}
    if len(counts) != 1:
        raise BadRequest("every input must have the same number of elements (one per flight)")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return InferenceRequest(request_id, columns, _requested_outputs(header))


def encode_response(
    model_name: str,
    model_version: str,
    request: InferenceRequest,
    prediction: Prediction,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or JSON plus binary outputs when asked for."""
    arrays: dict[str, list[Any] | np.ndarray] = {
        "label": prediction.labels,
        "proba": prediction.probabilities,
    }
    outputs = []
    binary = []
    for name, as_binary in request.outputs.items():
        datatype = OUTPUTS[name]
        array = arrays[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(array)]}
        if as_binary:
            data = np.asarray(array, dtype=_OUTPUT_DTYPES[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            binary.append(data)
        else:
            tensor["data"] = array
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return header, {"content-type": "application/json"}
    return header + b"".join(binary), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    # isascii: str.isdigit() also holds for "²", which int() refuses
    if not (header_length.isascii() and header_length.isdigit()) or not (
        0 < int(header_length) <= len(body)
    ):
        raise BadRequest(
            f"Inference-Header-Content-Length {quoted(header_length)} is not a length within the "
            f"{len(body)}-byte body"
        )
    length = int(header_length)
    return body[:length], body[length:]


def _input(
    tensor: Any, inputs: dict[str, str], binary: bytes, offset: int
) -> tuple[str, list[Any], int]:
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be a JSON object")
    name = tensor.get("name")
    if type(name) is not str or name not in inputs:  # a list or object is unhashable: check first
        raise BadRequest(f"unknown input {quoted(name)}; this model takes {list(inputs)}")
    datatype: str = tensor.get("datatype", "")
    expected = inputs[name]
    allowed = ("INT64", "INT32") if expected == "INT64" else (expected,)
    if datatype not in allowed:
        raise BadRequest(
            f"input {name!r} has datatype {quoted(datatype)}; expected {' or '.join(allowed)}"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(dim) is int and dim >= 0 for dim in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequest(f"input {name!r} shape {quoted(shape)} must be [N] or [N, 1]")
    count = prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"input {name!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadRequest(
                f"input {name!r}: binary_data_size {quoted(size)} overruns the binary data"
            )
        values = _from_binary(name, datatype, binary[offset : offset + size])
        offset += size
    else:
        if "data" not in tensor:
            raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
        values = _flatten(tensor["data"])
    if len(values) != count:
        raise BadRequest(
            f"input {name!r} has {len(values)} elements; its shape {shape} says {count}"
        )
    return name, values, offset


def _from_binary(name: str, datatype: str, data: bytes) -> list[Any]:
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
    elements = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadRequest(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise BadRequest(f"input {name!r}: BYTES element overruns the binary data")
        try:
            elements.append(data[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: element {len(elements)} is not UTF-8") from None
        offset += length
    return elements


def _flatten(data: Any) -> list[Any]:
    """A flat list, or the rows of an [N, 1] tensor: never walked deeper (shapes have at most
    two dimensions), so no nesting a client sends can recurse."""
    if not isinstance(data, list):
        raise BadRequest("tensor 'data' must be a list")
    values: list[Any] = data
    if values and all(isinstance(item, list) for item in values):
        values = [value for row in values for value in row]
    if any(isinstance(item, list | dict) for item in values):
        raise BadRequest("tensor 'data' must be a flat list of values or a list of rows of values")
    return values


def _requested_outputs(header: dict[str, Any]) -> dict[str, bool]:
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    default_binary = parameters.get("binary_data_output") is True
    requested = header.get("outputs")
    if requested is None:
        return dict.fromkeys(OUTPUTS, default_binary)
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list")
    outputs: dict[str, bool] = {}
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if type(name) is not str or name not in OUTPUTS:
            raise BadRequest(f"unknown output {quoted(name)}; this model gives {list(OUTPUTS)}")
        output_parameters = item.get("parameters") or {}
        binary = (
            output_parameters.get("binary_data", default_binary)
            if isinstance(output_parameters, dict)
            else default_binary
        )
        outputs[name] = binary is True
    return outputs


def output_metadata() -> Sequence[dict[str, Any]]:
    return [
        {"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in OUTPUTS.items()
    ]
