"""app.server.upgrade: the body of a request whose Upgrade is ignored, framed with h11."""

from __future__ import annotations

import h11
import pytest

from app.server.upgrade import IgnoredUpgradeBody

CHUNKED = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def read(body: IgnoredUpgradeBody, data: bytes, step: int) -> tuple[bytes, bytes | None]:
    """Everything `body` gives for `data` fed `step` bytes at a time."""
    pieces: list[bytes] = []
    after = None
    for start in range(0, len(data), step):
        more, after = body.feed(data[start : start + step])
        pieces += more
        if after is not None:
            return b"".join(pieces), after + data[start + step :]
    return b"".join(pieces), after


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_sized_body_ends_at_its_length_and_gives_back_what_follows(step: int) -> None:
    body = IgnoredUpgradeBody([(b"host", b"x"), (b"content-length", b"5")])
    assert read(body, b"hello" + b"GET / HTTP/1.1\r\n", step) == (b"hello", b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_chunked_body_is_decoded_to_its_last_chunk(step: int) -> None:
    body = IgnoredUpgradeBody([(b"Transfer-Encoding", b"chunked")])
    assert read(body, CHUNKED + b"next", step) == (b"abcde", b"next")


def test_a_request_without_framing_headers_has_no_body() -> None:
    body = IgnoredUpgradeBody([(b"upgrade", b"h2c"), (b"connection", b"Upgrade, HTTP2-Settings")])
    assert body.feed(b"GET /health HTTP/1.1\r\n") == ([], b"GET /health HTTP/1.1\r\n")


def test_an_incomplete_body_asks_for_more() -> None:
    body = IgnoredUpgradeBody([(b"content-length", b"10")])
    assert body.feed(b"four") == ([b"four"], None)


def test_a_malformed_chunk_is_a_protocol_error() -> None:
    body = IgnoredUpgradeBody([(b"transfer-encoding", b"chunked")])
    with pytest.raises(h11.RemoteProtocolError):
        body.feed(b"zz\r\nabc\r\n")


def test_a_transfer_coding_other_than_chunked_is_a_protocol_error() -> None:
    with pytest.raises(h11.RemoteProtocolError):
        IgnoredUpgradeBody([(b"transfer-encoding", b"gzip, chunked")])
