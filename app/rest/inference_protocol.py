"""The Open Inference Protocol (KServe V2) REST codec, with the binary tensor data extension.

Only transport lives here: JSON (and binary) tensors in, a prediction's tensors out. The
tensor checks are app.tensors' (shared with gRPC), the values are checked by the same
`FlightValidator` that `/predict` uses, so every API accepts and refuses the same flights.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import BadRequest, quoted
from app.inference.model import Prediction
from app.rest.http import decimal, parse_json
from app.tensors import (
    OUTPUTS,
    InferenceRequest,
    InputColumns,
    check_outputs,
    from_raw,
    output_values,
    to_raw,
)

HEADER_LENGTH = "inference-header-content-length"


def decode_request(
    body: bytes, header_length: str | None, inputs: dict[str, str]
) -> InferenceRequest:
    """`inputs` maps each input the model takes to its datatype (BYTES or INT64)."""
    header_bytes, binary = _split(body, header_length)
    try:
        header = parse_json(header_bytes)
    except BadRequest as error:
        if header_length is None:
            raise
        # a header length that lies cuts the JSON short or runs it into the tensors' bytes:
        # orjson's 'unexpected end of data' alone sent the client looking for a JSON mistake
        raise BadRequest(
            f"{error.message}, in the JSON header: the body's first {len(header_bytes)} bytes, as "
            "Inference-Header-Content-Length says; is that the JSON's length?"
        ) from None
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    tensors = header.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    columns = InputColumns(inputs)
    offset = 0
    for tensor in tensors:
        offset = _input(tensor, columns, binary, offset)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    checked = columns.columns()
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return InferenceRequest(request_id, checked, _requested_outputs(header))


def encode_response(
    model_name: str,
    model_version: str,
    request: InferenceRequest,
    prediction: Prediction,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or JSON plus binary outputs when asked for."""
    outputs = []
    binary = []
    count = len(prediction.labels)
    for name, as_binary in request.outputs.items():
        tensor: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": [count]}
        if as_binary:
            data = to_raw(name, prediction)
            tensor["parameters"] = {"binary_data_size": len(data)}
            binary.append(data)
        else:
            tensor["data"] = output_values(name, prediction)
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
    length = decimal(header_length)
    if length is None or not 0 < length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {quoted(header_length)} is not a length within the "
            f"{len(body)}-byte body"
        )
    return body[:length], body[length:]


def _input(tensor: Any, columns: InputColumns, binary: bytes, offset: int) -> int:
    """Adds one JSON input tensor to `columns`; returns the offset of the next binary data."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be a JSON object")
    datatype: str = tensor.get("datatype", "")
    name, shape, count = columns.expect(tensor.get("name"), datatype, tensor.get("shape"))
    parameters = _parameters(tensor, f"input {name!r}: ")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:  # as gRPC refuses contents beside raw_input_contents
            raise BadRequest(f"input {name!r} has both 'data' and binary_data_size")
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadRequest(
                f"input {name!r}: binary_data_size {quoted(size)} overruns the binary data"
            )
        values = from_raw(name, datatype, binary[offset : offset + size])
        offset += size
    else:
        if "data" not in tensor:
            raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
        values = _flatten(name, tensor["data"], shape)
    columns.add(name, values, shape, count)
    return offset


def _flatten(name: str, data: Any, shape: list[int]) -> list[Any]:
    """A flat list, or the rows of an [N, 1] tensor in its nested form (N rows of one value, as
    its shape says): never walked deeper (shapes have at most two dimensions), so no nesting a
    client sends can recurse."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: tensor 'data' must be a list")
    values: list[Any] = data
    if values and isinstance(values[0], list):
        if len(shape) != 2:
            raise BadRequest(
                f"input {name!r}: tensor 'data' is nested as rows but its shape {shape} has one "
                "dimension: send it flat"
            )
        rows, width = shape
        if len(values) != rows or not all(
            isinstance(row, list) and len(row) == width for row in values
        ):
            raise BadRequest(
                f"input {name!r}: tensor 'data' nested as rows must be {rows} rows of {width} "
                f"value{'' if width == 1 else 's'}, as its shape {shape} says, or flat"
            )
        values = [value for row in values for value in row]
    if any(isinstance(item, list | dict) for item in values):
        raise BadRequest(
            f"input {name!r}: tensor 'data' must be a flat list of values or a list of rows of "
            "values"
        )
    return values


def _requested_outputs(header: dict[str, Any]) -> dict[str, bool]:
    parameters = _parameters(header, "")
    default_binary = _flag(parameters, "binary_data_output", False, "")
    requested = header.get("outputs")
    if requested is None or requested == []:  # gRPC cannot tell an empty list from none
        return dict.fromkeys(OUTPUTS, default_binary)
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list")
    names = check_outputs(
        [item.get("name") if isinstance(item, dict) else None for item in requested]
    )
    outputs: dict[str, bool] = {}
    for name, item in zip(names, requested, strict=True):
        output_parameters = _parameters(item, f"output {name!r}: ")
        outputs[name] = _flag(
            output_parameters, "binary_data", default_binary, f"output {name!r}: "
        )
    return outputs


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    """A request's, an input's or an output's `parameters`: an object, or none (absent or
    null). `[]`, `0`, `false` and `""` passed as none while `[1]` or `"x"` were refused."""
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}'parameters' must be an object, not {quoted(parameters)}")
    return parameters


def _flag(parameters: dict[str, Any], name: str, default: bool, where: str) -> bool:
    """A boolean parameter: a string "true" or a 1 was read as false, silently."""
    value = parameters.get(name, default)
    if type(value) is not bool:
        raise BadRequest(f"{where}parameter {name} must be true or false, not {quoted(value)}")
    return value
