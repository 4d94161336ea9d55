"""app.server.upgrade: the body of a request whose Upgrade is ignored, framed by httptools after a
made-up head of its framing fields."""

from __future__ import annotations

from typing import Any

import httptools
import pytest

from app.server.upgrade import AfterIgnoredUpgrade, framing_head

CHUNKED = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


class Recorder:
    """uvicorn's protocol's callbacks, each call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_message_begin(self) -> None:
        self.calls.append(("begin",))

    def on_url(self, url: bytes) -> None:
        if self.calls and self.calls[-1][0] == "url":  # a URL in pieces, one a read
            url = self.calls.pop()[1] + url
        self.calls.append(("url", url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.calls.append(("header", name, value))

    def on_headers_complete(self) -> None:
        self.calls.append(("headers_complete",))

    def on_body(self, body: bytes) -> None:
        self.calls.append(("body", body))

    def on_message_complete(self) -> None:
        self.calls.append(("complete",))

    def on_chunk_header(self) -> None:
        self.calls.append(("chunk",))


def read(headers: list[tuple[bytes, bytes]], data: bytes, step: int) -> list[tuple[Any, ...]]:
    """The callbacks `data`, fed `step` bytes at a time after the made-up head of `headers`,
    reaches the protocol with."""
    recorder = Recorder()
    parser = httptools.HttpRequestParser(AfterIgnoredUpgrade(recorder))
    parser.feed_data(framing_head(headers, keep_alive=True))
    for start in range(0, len(data), step):
        parser.feed_data(data[start : start + step])
    return recorder.calls


def bodies(calls: list[tuple[Any, ...]]) -> bytes:
    return b"".join(call[1] for call in calls if call[0] == "body")


def test_the_made_up_head_holds_the_framing_fields_alone() -> None:
    headers = [(b"host", b"x"), (b"upgrade", b"h2c"), (b"content-length", b"5")]
    assert framing_head(headers, True) == b"POST / HTTP/1.1\r\nHost: _\r\ncontent-length: 5\r\n\r\n"
    assert b"\r\nConnection: close\r\n" in framing_head(headers, False)


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_sized_body_ends_at_its_length_and_the_next_request_is_the_protocols(step: int) -> None:
    calls = read([(b"host", b"x"), (b"content-length", b"5")], b"hello" + NEXT, step)
    assert bodies(calls) == b"hello"
    complete = calls.index(("complete",))
    assert calls[:complete] == [call for call in calls[:complete] if call[0] == "body"]
    assert calls[complete + 1 :] == [
        ("begin",),
        ("url", b"/next"),
        ("header", b"Host", b"x"),
        ("headers_complete",),
        ("complete",),
    ]


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_chunked_body_is_decoded_to_its_last_chunk(step: int) -> None:
    calls = read([(b"transfer-encoding", b"chunked")], CHUNKED + NEXT, step)
    assert bodies(calls) == b"abcde"
    assert calls.count(("complete",)) == 2
    assert ("url", b"/next") in calls


def test_a_request_without_framing_headers_has_no_body() -> None:
    calls = read([(b"upgrade", b"h2c"), (b"connection", b"Upgrade, HTTP2-Settings")], NEXT, 1000)
    assert calls[0] == ("complete",)  # complete with the made-up head, before a byte of its own
    assert ("url", b"/next") in calls


def test_after_a_closing_request_nothing_more_is_parsed() -> None:
    recorder = Recorder()
    parser = httptools.HttpRequestParser(AfterIgnoredUpgrade(recorder))
    parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as app.server.protocol's
    parser.feed_data(framing_head([(b"content-length", b"2")], keep_alive=False) + b"{}" + NEXT)
    assert recorder.calls == [("body", b"{}"), ("complete",)]


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n",
        b"3 \r\nabc\r\n0\r\n\r\n",
        b"3;a\x00b\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-T: 1\n\n",
        b"10000000000000003\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["not-hex", "size-trailing-space", "extension-nul", "trailer-bare-lf", "size-past-2-64"],
)
def test_chunk_framing_httptools_refuses_elsewhere_is_refused(body: bytes) -> None:
    """h11, which framed these bodies before, took all but the first (reliability.md §26)."""
    with pytest.raises(httptools.HttpParserError):
        read([(b"transfer-encoding", b"chunked")], body + NEXT, 1000)
