"""app.rest.http's body reading, on raw ASGI scopes: which header values it goes by."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from app.rest.http import (
    decimal,
    http_error,
    parse_json,
    read_body,
    read_json_body,
    unexpected_error,
)

BODY = b'{"flights":[]}'


def body_of(headers: list[tuple[bytes, bytes]], json: bool = True, max_bytes: int = 100) -> bytes:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    read = read_json_body if json else read_body
    return asyncio.run(read({"headers": headers}, receive, max_bytes))


def test_a_json_body_is_read_whatever_the_order_of_its_headers() -> None:
    for headers in (
        [(b"content-type", b"application/json"), (b"content-length", b"14")],
        [(b"content-length", b"14"), (b"host", b"x"), (b"content-type", b"application/json")],
        [(b"content-type", b"Application/JSON; charset=utf-8")],  # no length: read as it comes
    ):
        assert body_of(headers) == BODY


def test_a_content_type_sent_twice_differently_is_a_400_naming_both() -> None:
    """The first was read, whatever the second said (a proxy in front may judge by the last)."""
    json_type = (b"content-type", b"application/json")
    for headers in (
        [(b"content-type", b"text/plain"), json_type],
        [json_type, (b"CONTENT-TYPE", b"x")],
    ):
        with pytest.raises(BadRequest, match=r"^Content-Type is sent twice, "):
            body_of([(name.lower(), value) for name, value in headers])
    assert body_of([json_type, json_type]) == BODY


def test_the_first_of_repeated_lengths_counts() -> None:
    too_long = [(b"content-type", b"application/json"), (b"content-length", b"101")]
    with pytest.raises(PayloadTooLarge):  # refused before reading, by the first length
        body_of([*too_long, (b"content-length", b"14")])
    assert body_of([too_long[0], (b"content-length", b"14"), too_long[1]]) == BODY


def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_not() -> None:
    """Whether the limit is known from Content-Length or met while the body streams in."""
    json_type = (b"content-type", b"application/json")
    for headers in ([json_type, (b"content-length", b"14")], [json_type]):
        assert body_of(headers, max_bytes=len(BODY)) == BODY
        with pytest.raises(PayloadTooLarge):
            body_of(headers, max_bytes=len(BODY) - 1)


def test_a_missing_content_type_is_415_for_json_only() -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        body_of([(b"content-length", b"14")])
    assert refused.value.to_json()["detail"] == {"received": None}
    with pytest.raises(UnsupportedMediaType) as refused:
        body_of([(b"content-type", b"text/plain; charset=utf-8")])
    assert refused.value.to_json()["detail"] == {"received": "text/plain; charset=utf-8"}
    assert body_of([(b"content-length", b"14")], json=False) == BODY
    with pytest.raises(PayloadTooLarge):
        body_of([(b"content-length", b"101")], json=False)


def test_a_compressed_body_is_415_naming_its_coding_and_identity_passes() -> None:
    json_type = (b"content-type", b"application/json")
    for json in (True, False):
        for encoding in (b"gzip", b"GZIP", b"identity, br", b"deflate"):
            with pytest.raises(UnsupportedMediaType, match="Content-Encoding") as refused:
                body_of([json_type, (b"content-encoding", encoding)], json=json)
            assert refused.value.to_json()["detail"]["received"] == encoding.decode().lower()
        # a second header is a coding too: not hidden behind an identity first
        with pytest.raises(UnsupportedMediaType):
            body_of([json_type, (b"content-encoding", b"identity"), (b"content-encoding", b"gzip")])
        assert body_of([json_type, (b"content-encoding", b"identity")], json=json) == BODY
        assert body_of([json_type, (b"content-encoding", b" Identity ")], json=json) == BODY


def test_a_length_of_any_number_of_digits_is_a_number() -> None:
    """The HTTP parser takes a zero-padded Content-Length (leading zeros never overflow), which
    int() refused past 4,300 digits: a 500 and a traceback, where 4,299 zeros were served."""
    padded = b"0" * 5_000 + b"14"
    assert body_of([(b"content-type", b"application/json"), (b"content-length", padded)]) == BODY
    with pytest.raises(PayloadTooLarge):
        body_of([(b"content-length", b"0" * 5_000 + b"101")], json=False)
    with pytest.raises(PayloadTooLarge):
        body_of([(b"content-length", b"9" * 5_000)], json=False)
    assert decimal("0" * 5_000 + "7") == 7
    assert decimal("9" * 5_000) == 10**20
    assert decimal("") is None
    assert decimal("²") is None
    assert decimal("-4") is None


def test_json_is_parsed_without_collections_and_the_collector_is_left_as_found() -> None:
    """Found by a hostile-client probe: a 1-MiB body of one-integer rows set off about 370
    collections inside orjson's parse, half of the time it kept the GIL (and the event loop)."""
    import gc

    body = b"[" + b",".join([b"[0]"] * 50_000) + b"]"
    collections: list[str] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(phase)

    gc.callbacks.append(count)
    try:
        assert len(parse_json(body)) == 50_000
        assert collections == []
        assert gc.isenabled()
        gc.disable()
        try:
            parse_json(b"[]")
            assert not gc.isenabled()  # a caller that paused it keeps it paused
        finally:
            gc.enable()
        with pytest.raises(BadRequest, match="malformed JSON"):
            parse_json(b"[[0],")
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(count)


def test_a_body_in_several_messages_is_read_whole() -> None:
    """A chunked body reaches the app as several `http.request` messages: all of them are the
    body, not only the first (the tests above send one message, which hid a reader that stopped
    after it)."""
    parts = [b'{"flights"', b":", b"[]}"]

    async def receive() -> dict[str, Any]:
        body = parts.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(parts)}

    scope = {"headers": [(b"content-type", b"application/json")]}
    assert asyncio.run(read_json_body(scope, receive, 100)) == BODY


def test_an_empty_body_is_a_400_saying_so() -> None:
    """Not orjson's 'malformed JSON: Input is a zero-length, empty document' at a position."""
    with pytest.raises(BadRequest) as refused:
        parse_json(b"")
    assert refused.value.message == "the request body is empty: send a JSON object"


def test_a_charset_is_found_among_other_parameters_and_only_charset_is_judged() -> None:
    """RFC 9110 media-type parameters: any number, any order; one other than charset passes."""
    assert body_of([(b"content-type", b"application/json; foo=latin-1")]) == BODY
    for content_type in (
        b"application/json; foo=bar; charset=latin-1",
        b"application/json;q=1;charset=ascii",
    ):
        with pytest.raises(UnsupportedMediaType, match="charset") as refused:
            body_of([(b"content-type", content_type)])
        assert refused.value.detail["received"] == content_type.rsplit(b"=", 1)[1].decode()


def test_another_starlette_http_error_keeps_its_status_and_detail() -> None:
    """Only 404 and 405 are reworded; any other HTTPException is answered as itself, in the
    service's JSON shape, not as a 405."""
    request = Request({"type": "http", "method": "POST", "path": "/x", "headers": []})
    answer = asyncio.run(http_error(request, HTTPException(400, "bad form")))
    assert (answer.status_code, orjson.loads(answer.body)) == (400, {"error": "bad form"})


def test_an_unexpected_error_is_logged_on_the_app_logger(caplog: pytest.LogCaptureFixture) -> None:
    """The "app" logger is the one app.observability.logs gives the service's handler (and no
    propagation): a record of another logger would miss the service's log format."""
    request = Request({"type": "http", "method": "GET", "path": "/x", "headers": []})
    with caplog.at_level(logging.ERROR):
        answer = asyncio.run(unexpected_error(request, RuntimeError("boom")))
    assert answer.status_code == 500
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("app", "unhandled error on GET /x")
    ]


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        (b'{"flights": [{"OPERA": "Aerol\xedneas"}]}', 29),  # Latin-1, sent undeclared
        (b'{"flights": [{"OPERA": "\xed\xa0\x80"}]}', 24),  # a surrogate, UTF-8 encoded
        (b'{"flights": []}\xff', 15),
    ],
)
def test_a_body_that_is_not_utf8_is_a_400_naming_the_byte_and_its_offset(
    body: bytes, offset: int
) -> None:
    """orjson called every such body 'str is not valid UTF-8: surrogates not allowed: line 1
    column 1 (char 0)': a position with nothing wrong, surrogates that were not there."""
    with pytest.raises(BadRequest) as refused:
        parse_json(body)
    assert refused.value.message == (
        f"the body is not UTF-8: byte {body[offset]:#04x} at offset {offset} (JSON is UTF-8)"
    )
