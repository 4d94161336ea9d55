from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from app.errors import BadRequest
from app.inference.model import Prediction
from app.rest.inference_protocol import decode_request, encode_response
from app.tensors import InferenceRequest

INPUTS = {"OPERA": "BYTES", "TIPOVUELO": "BYTES", "MES": "INT64"}


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def _binary_request(
    opera: list[str], kinds: list[str], months: list[int], month_type: str = "INT64"
) -> tuple[bytes, str]:
    parts = [
        _bytes_tensor(opera),
        _bytes_tensor(kinds),
        np.array(months, dtype="<i8" if month_type == "INT64" else "<i4").tobytes(),
    ]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "OPERA",
                    "datatype": "BYTES",
                    "shape": [len(opera)],
                    "parameters": {"binary_data_size": len(parts[0])},
                },
                {
                    "name": "TIPOVUELO",
                    "datatype": "BYTES",
                    "shape": [len(kinds)],
                    "parameters": {"binary_data_size": len(parts[1])},
                },
                {
                    "name": "MES",
                    "datatype": month_type,
                    "shape": [len(months), 1],
                    "parameters": {"binary_data_size": len(parts[2])},
                },
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + b"".join(parts), str(len(header))


@pytest.mark.parametrize("month_type", ["INT64", "INT32"])
def test_binary_inputs_decode_to_rows(month_type: str) -> None:
    body, length = _binary_request(["Grupo LATAM", "Sky Airline"], ["N", "I"], [3, 12], month_type)
    request = decode_request(body, length, INPUTS)
    assert request.rows() == [
        {"OPERA": "Grupo LATAM", "TIPOVUELO": "N", "MES": 3},
        {"OPERA": "Sky Airline", "TIPOVUELO": "I", "MES": 12},
    ]
    assert request.outputs == {"label": True, "proba": True}


def test_json_inputs_with_nested_data_decode_to_rows() -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "OPERA", "datatype": "BYTES", "shape": [2, 1], "data": [["A"], ["B"]]},
                {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [2], "data": ["N", "I"]},
                {"name": "MES", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            ],
            "outputs": [{"name": "proba"}],
            "id": "r1",
        }
    )
    request = decode_request(body, None, INPUTS)
    assert request.id == "r1"
    assert [row["OPERA"] for row in request.rows()] == ["A", "B"]
    assert request.outputs == {"proba": False}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h["inputs"].pop(), "missing input"),
        (lambda h: h["inputs"].append(h["inputs"][0]), "given twice"),
        (lambda h: h["inputs"][0].update(name="Fecha-O"), "unknown input 'Fecha-O'"),
        (lambda h: h["inputs"][2].update(datatype="FP32"), "expected INT64 or INT32"),
        (lambda h: h["inputs"][0].update(shape=[3]), "shape [3] says 3"),
        (lambda h: h["inputs"][0].update(shape=[1, 2]), "must be [N] or [N, 1]"),
        (lambda h: h["inputs"][0].update(data="A"), "must be a list"),
        (lambda h: h["inputs"][0].pop("data"), "neither 'data' nor binary_data_size"),
        (lambda h: h["inputs"][1].update(data=["N", "I"], shape=[2]), "same number of elements"),
        (lambda h: h.update(outputs=[{"name": "logits"}]), "unknown output 'logits'"),
        (lambda h: h.update(id=7), "'id' must be a string"),
        (lambda h: h.update(inputs=[]), "non-empty list"),
        (
            lambda h: [tensor.update(shape=[0], data=[]) for tensor in h["inputs"]],
            "every input has 0 elements: send at least one flight",
        ),
        (  # ragged rows, and rows under a one-dimensional shape: accepted before, flattened
            lambda h: h["inputs"][0].update(shape=[3], data=[["A"], ["B", "C"]]),
            "nested as rows but its shape [3] has one dimension: send it flat",
        ),
        (
            lambda h: h["inputs"][2].update(shape=[1], data=[[1]]),
            "nested as rows but its shape [1] has one dimension",
        ),
        (
            lambda h: h["inputs"][0].update(shape=[2, 1], data=[["A"], ["B", "C"]]),
            "nested as rows must be 2 rows of 1 value",
        ),
        (  # a row that is no list, though of length 1: was iterated as one
            lambda h: h["inputs"][0].update(shape=[2, 1], data=[["A"], "B"]),
            "nested as rows must be 2 rows of 1 value",
        ),
        (
            lambda h: h["inputs"][0].update(shape=[2, 1], data=[["A"], {"B": 1}]),
            "nested as rows must be 2 rows of 1 value",
        ),
        (
            lambda h: h["inputs"][0].update(parameters={"binary_data_size": 5}),
            "input 'OPERA' has both 'data' and binary_data_size",
        ),
        (lambda h: h["inputs"].append("OPERA"), "each input must be a JSON object"),
        (
            lambda h: h["inputs"][0].update(parameters=[1]),
            "'OPERA': 'parameters' must be an object",
        ),
        (lambda h: h.update(parameters=[1]), "^'parameters' must be an object"),
        (lambda h: h.update(outputs={"name": "label"}), "'outputs' must be a list"),
        (  # each was answered once, silently; an input given twice is refused
            lambda h: h.update(outputs=[{"name": "proba"}, {"name": "label"}, {"name": "proba"}]),
            "output 'proba' is asked for twice",
        ),
        (  # the flags below were read as false unless exactly true: "true" gave JSON, silently
            lambda h: h.update(parameters={"binary_data_output": "true"}),
            "^parameter binary_data_output must be true or false, not 'true'",
        ),
        (
            lambda h: h.update(parameters={"binary_data_output": None}),
            "^parameter binary_data_output must be true or false, not None",
        ),
        (
            lambda h: h.update(outputs=[{"name": "label", "parameters": {"binary_data": 1}}]),
            "^output 'label': parameter binary_data must be true or false, not 1",
        ),
        (
            lambda h: h.update(outputs=[{"name": "label", "parameters": [1]}]),
            "^output 'label': 'parameters' must be an object",
        ),
    ],
)
def test_malformed_json_requests_are_refused(mutate: object, message: str) -> None:
    header = {
        "inputs": [
            {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["A"]},
            {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
            {"name": "MES", "datatype": "INT64", "shape": [1], "data": [1]},
        ]
    }
    mutate(header)  # type: ignore[operator]
    with pytest.raises(BadRequest, match=message.replace("[", r"\[")):
        decode_request(orjson.dumps(header), None, INPUTS)


@pytest.mark.parametrize("value", [[], 0, False, ""])
@pytest.mark.parametrize("where", ["request", "input", "output"])
def test_parameters_that_are_no_object_are_refused_even_when_falsy(value: Any, where: str) -> None:
    """`parameters: []` (or 0, false, "") passed as no parameters, while `[1]` was refused as
    no object: the same mistake, answered two ways. Absent or null is still none."""
    header: dict[str, Any] = {
        "inputs": [
            {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["A"]},
            {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
            {"name": "MES", "datatype": "INT64", "shape": [1], "data": [1]},
        ],
        "outputs": [{"name": "label"}],
    }
    holder = {"request": header, "input": header["inputs"][0], "output": header["outputs"][0]}
    prefix = {"request": "", "input": "input 'OPERA': ", "output": "output 'label': "}[where]
    holder[where]["parameters"] = None
    decode_request(orjson.dumps(header), None, INPUTS)
    holder[where]["parameters"] = value
    with pytest.raises(BadRequest) as refused:
        decode_request(orjson.dumps(header), None, INPUTS)
    assert refused.value.message == f"{prefix}'parameters' must be an object, not {value!r}"


def test_a_request_that_is_no_json_object_is_refused() -> None:
    with pytest.raises(BadRequest, match="the inference request must be a JSON object"):
        decode_request(b'[{"name": "OPERA"}]', None, INPUTS)


def test_a_header_length_of_the_whole_body_is_a_json_only_request() -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["A"]},
                {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
                {"name": "MES", "datatype": "INT64", "shape": [1], "data": [1]},
            ]
        }
    )
    assert decode_request(header, str(len(header)), INPUTS) == decode_request(header, None, INPUTS)


@pytest.mark.parametrize("off_by", [-1, 1, 5])
def test_a_header_length_that_lies_is_named_in_the_json_error(off_by: int) -> None:
    """A lying Inference-Header-Content-Length cuts the JSON header short or runs it into the
    tensors' bytes: the 400 said only 'malformed JSON: unexpected end of data' (or 'unexpected
    content after document'), which sent the client looking for a JSON mistake."""
    raws = [_bytes_tensor(["A"]), _bytes_tensor(["N"]), struct.pack("<q", 1)]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
                for (name, datatype), raw in zip(INPUTS.items(), raws, strict=True)
            ]
        }
    )
    body = header + b"".join(raws)
    assert decode_request(body, str(len(header)), INPUTS).columns["OPERA"] == ["A"]
    length = len(header) + off_by
    with pytest.raises(BadRequest) as refused:
        decode_request(body, str(length), INPUTS)
    assert refused.value.message.startswith("malformed JSON: ")
    assert refused.value.message.endswith(
        f", in the JSON header: the body's first {length} bytes, as "
        "Inference-Header-Content-Length says; is that the JSON's length?"
    )


def test_an_empty_outputs_list_asks_for_every_output_as_grpc_reads_it() -> None:
    """A protobuf message cannot tell `outputs: []` from no `outputs`, and gRPC answers both with
    every output; REST answered `[]` with none (and still scored the flights)."""
    header = {
        "inputs": [
            {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["A"]},
            {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
            {"name": "MES", "datatype": "INT64", "shape": [1], "data": [1]},
        ],
        "outputs": [],
    }
    assert decode_request(orjson.dumps(header), None, INPUTS).outputs == {
        "label": False,
        "proba": False,
    }


def test_binary_overruns_and_leftovers_are_refused() -> None:
    body, length = _binary_request(["A"], ["N"], [1])
    with pytest.raises(BadRequest, match="belong to no input"):
        decode_request(body + b"\x00", length, INPUTS)
    with pytest.raises(BadRequest, match="overruns"):
        decode_request(body[:-3], length, INPUTS)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        decode_request(body, str(len(body) + 1), INPUTS)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        decode_request(body, "-4", INPUTS)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length '0' is not a length"):
        decode_request(body, "0", INPUTS)
    with pytest.raises(BadRequest, match="malformed JSON"):  # a length of 1 is one: b"{"
        decode_request(body, "1", INPUTS)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        decode_request(body, "9" * 4_301, INPUTS)  # int() refuses it: was a 500
    padded = decode_request(body, "0" * 4_301 + length, INPUTS)
    assert padded == decode_request(body, length, INPUTS)


def test_bytes_elements_must_be_utf8() -> None:
    body, length = _binary_request(["A"], ["N"], [1])
    header_length = int(length)
    broken = body[: header_length + 4] + b"\xff" + body[header_length + 5 :]
    with pytest.raises(BadRequest, match="not UTF-8"):
        decode_request(broken, length, INPUTS)


def test_response_mixes_json_and_binary_outputs() -> None:
    prediction = Prediction(
        np.array([0, 1], dtype=np.int64), np.array([0.1, 0.9], dtype=np.float32), 1
    )
    request = InferenceRequest("abc", {}, {"label": True, "proba": False})
    body, headers = encode_response("delay-minimal", "v1", request, prediction)
    length = int(headers["inference-header-content-length"])
    header = orjson.loads(body[:length])
    assert header["id"] == "abc"
    label, proba = header["outputs"]
    assert label["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[length:], dtype="<i8").tolist() == [0, 1]
    assert proba["data"] == pytest.approx([0.1, 0.9])


def test_list_predictions_encode_like_arrays() -> None:
    as_lists = Prediction([0, 1], [0.25, 0.75], 1)
    as_arrays = Prediction(np.array([0, 1]), np.array([0.25, 0.75], dtype=np.float32), 1)
    request = InferenceRequest(None, {}, {"label": True, "proba": True})
    assert encode_response("m", "v", request, as_lists) == encode_response(
        "m", "v", request, as_arrays
    )


def test_all_json_response_has_no_binary_header() -> None:
    prediction = Prediction(np.array([1], dtype=np.int64), np.array([0.5], dtype=np.float32), 1)
    body, headers = encode_response(
        "m", "v", InferenceRequest(None, {}, {"label": False}), prediction
    )
    assert headers == {"content-type": "application/json"}
    assert orjson.loads(body)["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}
    ]


@pytest.mark.parametrize("size", [-1, "3", 3.0, True, [3]])
def test_a_binary_data_size_that_is_no_count_of_bytes_is_a_400(size: object) -> None:
    """Not a slice of the binary data with a negative or non-integer bound (a 500 for a float
    or a string, data read backwards for -1): the size must be a non-negative integer."""
    body, length = _binary_request(["A"], ["N"], [1])
    header = orjson.loads(body[: int(length)])
    header["inputs"][2]["parameters"]["binary_data_size"] = size
    refused = orjson.dumps(header)
    binary = body[int(length) :]
    with pytest.raises(BadRequest, match=r"^input 'MES': binary_data_size .* overruns"):
        decode_request(refused + binary, str(len(refused)), INPUTS)


def test_each_output_may_ask_for_binary_data_apart_from_the_default() -> None:
    """An output's own `binary_data` wins over the request's `binary_data_output`; an output
    without parameters takes the default (parameters that are no object are refused: above)."""
    inputs = [
        {"name": "OPERA", "datatype": "BYTES", "shape": [1], "data": ["A"]},
        {"name": "TIPOVUELO", "datatype": "BYTES", "shape": [1], "data": ["N"]},
        {"name": "MES", "datatype": "INT64", "shape": [1], "data": [1]},
    ]
    for default in (False, True):
        for parameters, expected in (
            ({"binary_data": not default}, not default),
            (None, default),
            ({}, default),
        ):
            label: dict[str, object] = {"name": "label"}
            if parameters is not None:
                label["parameters"] = parameters
            header = {
                "inputs": inputs,
                "parameters": {"binary_data_output": default},
                "outputs": [label, {"name": "proba"}],
            }
            request = decode_request(orjson.dumps(header), None, INPUTS)
            assert request.outputs == {"label": expected, "proba": default}


def test_a_response_names_the_model_and_its_version_and_an_id_only_when_given() -> None:
    prediction = Prediction(np.array([1], dtype=np.int64), np.array([0.5], dtype=np.float32), 1)
    for request_id in (None, "r1"):
        request = InferenceRequest(request_id, {}, {"label": False})
        body, _ = encode_response("delay-minimal", "v7", request, prediction)
        answer = orjson.loads(body)
        expected = {"model_name": "delay-minimal", "model_version": "v7"}
        if request_id is not None:
            expected["id"] = request_id
        assert {k: v for k, v in answer.items() if k != "outputs"} == expected
