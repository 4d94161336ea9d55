from __future__ import annotations

import random
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import BadRequest
from app.inference.model import Prediction
from app.tensors import (
    _VECTOR_FROM,
    InputColumns,
    _short_elements,
    _uniform_elements,
    _varied_elements,
    check_outputs,
    from_raw,
    output_metadata,
    to_raw,
)

INPUTS = {"OPERA": "BYTES", "MES": "INT64"}


def test_columns_collect_checked_tensors() -> None:
    columns = InputColumns(INPUTS)
    assert columns.expect("MES", "INT32", [2, 1]) == ("MES", [2, 1], 2)
    columns.add("MES", [1, 2], [2, 1], 2)
    columns.add("OPERA", ["A", "B"], [2], 2)
    assert columns.columns() == {"MES": [1, 2], "OPERA": ["A", "B"]}


@pytest.mark.parametrize(
    ("name", "datatype", "shape", "message"),
    [
        ("Fecha-O", "BYTES", [1], "unknown input 'Fecha-O'"),
        (["OPERA"], "BYTES", [1], "unknown input"),
        ("MES", "FP32", [1], "expected INT64 or INT32"),
        ("OPERA", "INT64", [1], "expected BYTES"),
        ("OPERA", "BYTES", [], "must be"),
        ("OPERA", "BYTES", [-1], "must be"),
        ("OPERA", "BYTES", [1, 2], "must be"),
        ("OPERA", "BYTES", [1, 1, 1], "must be"),
        ("OPERA", "BYTES", [True], "must be"),
        ("OPERA", "BYTES", None, "must be"),  # no shape at all: len(None) was a 500
        ("OPERA", "BYTES", "1", "must be"),
    ],
)
def test_tensor_headers_are_checked(
    name: object, datatype: str, shape: object, message: str
) -> None:
    with pytest.raises(BadRequest, match=message.replace("[", r"\[")):
        InputColumns(INPUTS).expect(name, datatype, shape)


def test_a_huge_shape_costs_nothing_and_is_refused_by_its_count() -> None:
    columns = InputColumns(INPUTS)
    _, shape, count = columns.expect("OPERA", "BYTES", [10**15, 1])
    with pytest.raises(BadRequest, match="has 1 elements"):
        columns.add("OPERA", ["A"], shape, count)


def test_duplicate_missing_and_ragged_inputs_are_refused() -> None:
    columns = InputColumns(INPUTS)
    columns.add("OPERA", ["A"], [1], 1)
    with pytest.raises(BadRequest, match="given twice"):
        columns.add("OPERA", ["A"], [1], 1)
    with pytest.raises(BadRequest, match=r"missing input\(s\) \['MES'\]"):
        columns.columns()
    columns.add("MES", [1, 2], [2], 2)
    with pytest.raises(BadRequest, match="same number of elements"):
        columns.columns()


def test_raw_tensors_decode_integers_and_length_prefixed_strings() -> None:
    assert from_raw("MES", "INT64", np.array([3, 12], "<i8").tobytes()) == [3, 12]
    assert from_raw("MES", "INT32", np.array([7], "<i4").tobytes()) == [7]
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"Sky", b"", "Ñ".encode()))
    assert from_raw("OPERA", "BYTES", raw) == ["Sky", "", "Ñ"]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT64", b"\x01" * 12, "not a whole number of INT64"),
        ("BYTES", b"\x01\x00", "truncated"),
        ("BYTES", b"\x09\x00\x00\x00abc", "overruns"),
        ("BYTES", b"\x01\x00\x00\x00\xff", "not UTF-8"),
    ],
)
def test_malformed_raw_tensors_are_refused(datatype: str, data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        from_raw("X", datatype, data)


def test_outputs_encode_raw_little_endian() -> None:
    prediction = Prediction([0, 1], [0.25, 0.75], 1)
    assert to_raw("label", prediction) == np.array([0, 1], "<i8").tobytes()
    assert to_raw("proba", prediction) == np.array([0.25, 0.75], "<f4").tobytes()
    assert check_outputs(["proba", "label"]) == ["proba", "label"]
    with pytest.raises(BadRequest, match="unknown output 'logits'"):
        check_outputs(["logits"])
    with pytest.raises(BadRequest, match=r"unknown output \['label'\]"):  # unhashable: no 500
        check_outputs([["label"]])
    with pytest.raises(BadRequest, match="output 'label' is asked for twice"):
        check_outputs(["label", "proba", "label"])
    assert output_metadata() == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "proba", "datatype": "FP32", "shape": [-1]},
    ]


def _raw(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _each_odd_decodes_as_the_loop(
    elements: list[bytes], odds: tuple[bytes, ...], indexes: tuple[int, ...]
) -> None:
    """Each odd element in place of each indexed one: the elements, or the loop's message."""
    for odd in odds:
        for index in indexes:
            changed = [*elements[:index], odd, *elements[index + 1 :]]
            try:
                expected = [e.decode() for e in changed]
            except UnicodeDecodeError:
                with pytest.raises(BadRequest, match=f"element {index} is not UTF-8"):
                    from_raw("X", "BYTES", _raw(changed))
                continue
            assert from_raw("X", "BYTES", _raw(changed)) == expected


@pytest.mark.parametrize("length", [1, 3, 19])
def test_equal_length_bytes_elements_decode_as_the_loop_does(length: int) -> None:
    """From 64 elements, equal lengths take numpy's path; anything it cannot vouch for (an
    element ending in NUL, UTF-8 beyond ASCII, another length) gives the loop's answer."""
    rng = random.Random(length)
    for count in (63, 64, 1000):
        elements = [bytes(rng.choices(b"ABCXYZ019 -", k=length)) for _ in range(count)]
        assert from_raw("X", "BYTES", _raw(elements)) == [e.decode() for e in elements]
        odds = (b"\x00" * length, "Ñ".encode()[:length], b"A" * (length + 1), b"")
        _each_odd_decodes_as_the_loop(elements, odds, (0, count // 2, count - 1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_raw([b"I"] * 100)[:-1], "overruns"),
        (_raw([b"I"] * 100) + b"\x01", "truncated"),
        (_raw([b"I"] * 99) + b"\x05\x00\x00\x00N", "overruns"),
        (_raw([b"I"] * 99 + [b"\xff"]), "element 99 is not UTF-8"),
    ],
)
def test_malformed_equal_length_bytes_are_refused_as_by_the_loop(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        from_raw("X", "BYTES", data)


def test_empty_bytes_elements_decode_as_the_loop_does() -> None:
    assert from_raw("X", "BYTES", _raw([b""] * 1000)) == [""] * 1000
    assert from_raw("X", "BYTES", _raw([b""] * 999 + [b"I"])) == [""] * 999 + ["I"]


def _names(count: int, seed: int) -> list[bytes]:
    """Category-like elements of varied lengths, up to the 255 bytes numpy's path takes."""
    rng = random.Random(seed)
    lengths = [1, 2, 11, 21, 127, 128, 255]
    return [
        bytes(rng.choices(b"ABCXYZ019 .-", k=rng.choice(lengths))) + "Ñ".encode() * (i % 3 == 0)
        for i in range(count)
    ]


@pytest.mark.parametrize("count", [2, 100, 1000])
def test_varied_length_bytes_elements_decode_as_the_loop_does(count: int) -> None:
    """From 64 elements' worth of bytes (320), elements of 1 to 255 bytes take numpy's path;
    anything it cannot vouch for (an empty or longer element, a NUL anywhere in one, bytes that
    are not UTF-8) gives the loop's answer, whichever element it is."""
    elements = _names(count, count)
    assert from_raw("X", "BYTES", _raw(elements)) == [e.decode() for e in elements]
    odds: tuple[bytes, ...] = (
        b"",
        b"\x00",
        b"AB\x00",
        b"\x00AB",
        b"A\x00\x00\x00B",
        b"A" * 256,
        b"\xff",
    )
    odds += ("Ñ".encode()[:1], b"\xe2\x82", b"\x80A", "Ñ".encode())
    _each_odd_decodes_as_the_loop(elements, odds, (0, 1, count // 2, count - 1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_raw(_names(100, 1))[:-1], "overruns"),
        (_raw(_names(100, 1)) + b"\x01", "truncated"),
        (_raw(_names(100, 1)) + b"\x01\x00\x00", "truncated"),
        (_raw(_names(99, 1)) + b"\x05\x00\x00\x00N", "overruns"),
        (_raw([*_names(99, 1), b"A\xff"]), "element 99 is not UTF-8"),
    ],
)
def test_malformed_varied_length_bytes_are_refused_as_by_the_loop(
    data: bytes, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        from_raw("X", "BYTES", data)


def _bytes(name: str, data: bytes) -> object:
    return from_raw(name, "BYTES", data)


def _answer(decode: Callable[[str, bytes], object], data: bytes) -> object:
    """The elements decode gives, or its message."""
    try:
        return decode("X", data)
    except BadRequest as error:
        return str(error)


@pytest.mark.parametrize("index", [0, 1, 50, 99])
@pytest.mark.parametrize("delta", [-4, -1, 1, 4])
def test_a_wrong_length_anywhere_gets_the_loops_answer(index: int, delta: int) -> None:
    """One length prefix off: every prefix still looks like one, but the chain is broken."""
    elements = [b"Grupo LATAM", b"Sky Airline", b"Copa Air", b"Iberia"] * 25
    offset = sum(4 + len(element) for element in elements[:index])
    data = bytearray(_raw(elements))
    data[offset] += delta
    assert _answer(_varied_elements, bytes(data)) != [element.decode() for element in elements]
    assert _answer(_bytes, bytes(data)) == _answer(_varied_elements, bytes(data))


@pytest.mark.parametrize(
    "data",
    [b"a" * 400, b"\0abc" * 100, b"\0" * 400, b"\0\0\0\0" + b"a" * 400],
    ids=["no NUL", "NUL first", "all NUL", "empty then no NUL"],
)
def test_buffers_unlike_any_valid_one_get_the_loops_answer(data: bytes) -> None:
    """Far from a valid buffer (no prefix at all; a NUL, then three bytes, over and over: each
    looks like a prefix read backwards), too long for the hypothesis test's patches to make."""
    assert _answer(_bytes, data) == _answer(_varied_elements, data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)  # same every run
@given(
    st.integers(0, 2000),
    st.binary(max_size=8),
    st.integers(0, 999),
    st.sampled_from(["replace", "insert", "cut"]),
)
def test_any_bytes_tensor_gets_the_loops_answer(
    seed: int, patch: bytes, where: int, how: str
) -> None:
    """Whatever a buffer holds (a valid one with a few bytes replaced, inserted or cut off),
    from_raw answers exactly what the element-by-element loop does: the same elements or the
    same message."""
    data = _raw(_names(80, seed))
    at = where * len(data) // 1000
    if how == "replace":
        data = data[:at] + patch + data[at + len(patch) :]
    elif how == "insert":
        data = data[:at] + patch + data[at:]
    else:
        data = data[:at]
    assert _answer(_bytes, data) == _answer(_varied_elements, data)


def test_valid_buffers_from_64_elements_take_numpys_paths() -> None:
    """The differential tests above hold whichever way a buffer is decoded, so a path that
    stopped vouching for valid buffers (every one falling to the loop, about 0.1 us an element
    instead of one numpy pass) would pass them all: here each path is asked directly."""
    for element in (b"", b"I", b"SCFA", b"Grupo LATAM"):
        elements = [element] * _VECTOR_FROM
        assert _uniform_elements(_raw(elements)) == [element.decode()] * _VECTOR_FROM
        assert _uniform_elements(_raw(elements[1:])) is None  # under 64: the loop is cheaper
    varied = [b"Grupo LATAM", b"Sky Airline", b"Copa Air", "Ñandú".encode(), b"I" * 255] * 26
    assert _short_elements(_raw(varied)) == [element.decode() for element in varied]
    assert _short_elements(_raw([b"A"] * (_VECTOR_FROM - 1))) is None  # under 5 x 64 bytes
    assert _short_elements(_raw([b"A"] * _VECTOR_FROM)) == ["A"] * _VECTOR_FROM


@pytest.mark.parametrize(
    "fault", ["bytes before the first prefix", "every prefix but the last off"]
)
def test_a_buffer_whose_chain_breaks_everywhere_gets_the_loops_answer(fault: str) -> None:
    """Faults the hypothesis test's few-byte patches do not make: bytes without a NUL ahead of
    the first prefix, and every length but the last one too long (no prefix where the one
    before says it is, the last still ending the buffer)."""
    elements = [b"Grupo LATAM", b"Sky Airline", b"Copa Air", b"Iberia"] * 25
    if fault == "bytes before the first prefix":
        data = b"ABCD" + _raw(elements)
    else:
        data = b"".join(
            struct.pack("<I", len(element) + (index < len(elements) - 1)) + element
            for index, element in enumerate(elements)
        )
    assert _answer(_bytes, data) == _answer(_varied_elements, data)
    assert _answer(_varied_elements, data) != [element.decode() for element in elements]
