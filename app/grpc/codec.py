"""gRPC messages ↔ the data plane's terms: the protobuf twin of app.rest.inference_protocol.

Inputs come either all in `raw_input_contents` (one little-endian buffer per input, the
encoding of REST's binary extension) or each in its tensor's typed `contents`; both pass
app.tensors' checks, in the same order as REST's. Outputs always go back in
`raw_output_contents`, as Triton answers.
"""

from __future__ import annotations

from typing import Any

from app.errors import BadRequest
from app.grpc import grpc_predict_v2_pb2 as pb
from app.inference.model import OnnxModel, Prediction
from app.tensors import OUTPUTS, InferenceRequest, InputColumns, check_outputs, from_raw, to_raw

_CONTENTS = {"BYTES": "bytes_contents", "INT64": "int64_contents", "INT32": "int_contents"}
"""Where a tensor of each datatype the models take keeps its typed elements."""


def decode_request(request: pb.ModelInferRequest, inputs: dict[str, str]) -> InferenceRequest:
    """`inputs` maps each input the model takes to its datatype (BYTES or INT64)."""
    tensors = request.inputs
    if not tensors:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(tensors)} inputs: give one per input, or none"
        )
    columns = InputColumns(inputs)
    for index, tensor in enumerate(tensors):
        name, shape, count = columns.expect(tensor.name, tensor.datatype, list(tensor.shape))
        if not raw:
            values = _typed(name, tensor.datatype, tensor.contents)
        elif tensor.HasField("contents"):
            raise BadRequest(f"input {name!r} has both contents and raw_input_contents")
        else:
            values = from_raw(name, tensor.datatype, raw[index])
        columns.add(name, values, shape, count)
    outputs = dict.fromkeys(check_outputs([output.name for output in request.outputs]), True)
    return InferenceRequest(
        request.id or None, columns.columns(), outputs or dict.fromkeys(OUTPUTS, True)
    )


def _typed(name: str, datatype: str, contents: pb.InferTensorContents) -> list[Any]:
    field = _CONTENTS[datatype]
    values: list[Any] = list(getattr(contents, field))
    if not values and contents.ListFields():
        raise BadRequest(f"input {name!r}: a {datatype} tensor's elements go in contents.{field}")
    if datatype != "BYTES":
        return values
    try:
        return list(map(bytes.decode, values))
    except UnicodeDecodeError:
        bad = next(index for index, value in enumerate(values) if not _is_utf8(value))
        raise BadRequest(f"input {name!r}: element {bad} is not UTF-8") from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode_response(
    model: OnnxModel, request: InferenceRequest, prediction: Prediction
) -> pb.ModelInferResponse:
    count = len(prediction.labels)
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id or ""
    )
    for name in request.outputs:
        response.outputs.add(name=name, datatype=OUTPUTS[name], shape=[count])
        response.raw_output_contents.append(to_raw(name, prediction))
    return response


def model_metadata(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The data plane's model metadata (REST's JSON) as its message: the card stays REST's."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensor(**item) for item in metadata["inputs"]],
        outputs=[tensor(**item) for item in metadata["outputs"]],
    )
