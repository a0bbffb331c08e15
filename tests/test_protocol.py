"""The sans-IO protocol: framing, round trips, and a fuzzed decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hycan._protocol import (
    MAX_PAYLOAD,
    NEED_DATA,
    BadRequest,
    BufferFull,
    Op,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    encode_request,
    failure,
    ok,
)
from hycan.errors import ErrorCode


def decode_all(decoder: RequestDecoder, data: bytes) -> list[Request | BadRequest]:
    decoder.receive_data(data)
    events: list[Request | BadRequest] = []
    while isinstance(event := decoder.next_event(), Request | BadRequest):
        events.append(event)
    return events


def test_cpp_compatible_request_bytes() -> None:
    assert encode_request(Op.CREATE_VCAN, b"vcan0") == b"\x01\x05vcan0"
    assert encode_request(Op.INTERFACE_UP, b"can0") == b"\x02\x04can0"
    assert encode_request(Op.INTERFACE_DOWN, b"can0") == b"\x03\x04can0"


def test_response_bytes_always_carry_full_header() -> None:
    assert ok().encode() == b"\x01\x00\x00\x00"
    assert ok("hi").encode() == b"\x01\x00\x02\x00hi"
    # msg_len is little-endian whatever the host order
    body = "x" * 0x0102
    assert failure(ErrorCode.INTERFACE_NOT_FOUND, body).encode()[:4] == b"\x00\x07\x02\x01"


def test_message_is_capped_on_a_character_boundary() -> None:
    encoded = ok("é" * 40000).encode()
    assert int.from_bytes(encoded[2:4], "little") == len(encoded) - 4 <= 0xFFFF
    encoded[4:].decode("utf-8")


def test_pipelined_requests_decode_in_order() -> None:
    data = b"".join(encode_request(op, b"vcan0") for op in (1, 2, 3, 5))
    events = decode_all(RequestDecoder(), data)
    assert [e.op for e in events if isinstance(e, Request)] == [1, 2, 3, 5]


def test_byte_by_byte_delivery() -> None:
    decoder = RequestDecoder()
    frame = encode_request(Op.STATUS, b"can0")
    for byte in frame[:-1]:
        assert decode_all(decoder, bytes([byte])) == []
    assert decode_all(decoder, frame[-1:]) == [Request(Op.STATUS, b"can0")]


@pytest.mark.parametrize("op", [0, 42, 200, 255])
def test_unknown_op_is_answered_and_stream_stays_usable(op: int) -> None:
    events = decode_all(RequestDecoder(), bytes([op, 3]) + b"abc" + encode_request(2, b"vcan0"))
    assert isinstance(events[0], BadRequest)
    assert events[0].code == ErrorCode.NETLINK_CONNECT
    assert f"unknown op {op}" in events[0].message
    assert events[1] == Request(Op.INTERFACE_UP, b"vcan0")


@pytest.mark.parametrize(
    "name",
    [
        b"",
        b"0123456789abcdef",
        b".",
        b"..",
        b"a/b",
        b"a:b",
        b"a b",
        b"a\x00b",
        b"a\tb",
        b"\xff\xfe",
    ],
)
def test_invalid_names_get_invalid_name_code(name: bytes) -> None:
    (event,) = decode_all(RequestDecoder(), bytes([1, len(name)]) + name)
    assert isinstance(event, BadRequest)
    assert event.code == ErrorCode.INVALID_NAME


def test_fifteen_byte_name_is_valid() -> None:
    (event,) = decode_all(RequestDecoder(), encode_request(1, b"0123456789abcde"))
    assert event == Request(Op.CREATE_VCAN, b"0123456789abcde")


def test_ping_needs_no_name() -> None:
    assert decode_all(RequestDecoder(), b"\x06\x00") == [Request(Op.PING, b"")]


def test_payload_ops_are_delimited_by_their_length() -> None:
    frame = bytes([0x4F, 2]) + b"c0" + (3).to_bytes(2, "little") + b"xyz"
    events = decode_all(RequestDecoder(), frame + encode_request(2, b"c0"))
    assert isinstance(events[0], BadRequest) and "unknown op 79" in events[0].message
    assert events[1] == Request(Op.INTERFACE_UP, b"c0")


def test_oversized_payload_is_skipped_and_refused() -> None:
    size = MAX_PAYLOAD + 1
    frame = bytes([0x41, 1]) + b"c" + size.to_bytes(2, "little") + b"p" * size
    events = decode_all(RequestDecoder(), frame + encode_request(2, b"c0"))
    assert isinstance(events[0], BadRequest) and "exceeds" in events[0].message
    assert events[1] == Request(Op.INTERFACE_UP, b"c0")


def test_buffer_cap() -> None:
    decoder = RequestDecoder(max_buffer=10)
    decoder.receive_data(b"\x01\x0f" + b"a" * 8)
    with pytest.raises(BufferFull):
        decoder.receive_data(b"a")


def test_encode_request_rejects_what_cannot_be_framed() -> None:
    with pytest.raises(ValueError):
        encode_request(256, b"x")
    with pytest.raises(ValueError):
        encode_request(1, b"x" * 256)
    with pytest.raises(ValueError):
        encode_request(1, b"x", b"payload")


def test_response_decoder_round_trip_split() -> None:
    responses = [ok(), ok("vcan0 created"), failure(7, "interface x not found"), ok("é" * 10)]
    data = b"".join(r.encode() for r in responses)
    decoder = ResponseDecoder()
    got: list[Response] = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        while isinstance(event := decoder.next_event(), Response):
            got.append(event)
    assert got == responses


names = st.binary(min_size=0, max_size=40)


@given(st.lists(st.tuples(st.integers(0, 255), names), max_size=20), st.data())
def test_any_frame_sequence_decodes_one_event_per_frame(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    raw = b"".join(
        encode_request(op, name, b"p" if 0x40 <= op <= 0x7F else b"") for op, name in frames
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    decoder = RequestDecoder()
    events: list[Request | BadRequest] = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        events += decode_all(decoder, raw[start:end])
    assert len(events) == len(frames)
    for (op, name), event in zip(frames, events, strict=True):
        if isinstance(event, Request):
            assert (event.op, event.name) == (op, name) or event.op == Op.PING
        else:
            assert event.code in (ErrorCode.NETLINK_CONNECT, ErrorCode.INVALID_NAME)
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=300), max_size=30))
def test_arbitrary_bytes_never_raise_and_never_overbuffer(chunks: list[bytes]) -> None:
    decoder = RequestDecoder(max_buffer=1024)
    for chunk in chunks:
        try:
            decode_all(decoder, chunk)
        except BufferFull:
            assert decoder.buffered + len(chunk) > 1024
        assert decoder.buffered <= 1024
    assert decoder.next_event() is NEED_DATA or decoder.buffered == 0


@given(st.lists(st.binary(max_size=100), max_size=30))
def test_response_decoder_never_raises_on_garbage(chunks: list[bytes]) -> None:
    decoder = ResponseDecoder()
    for chunk in chunks:
        decoder.receive_data(chunk)
        while isinstance(decoder.next_event(), Response):
            pass
        assert decoder.buffered < 4 + 0xFFFF


@given(st.text(), st.integers(min_value=0, max_value=255), st.booleans())
def test_encoding_a_response_never_raises(message: str, code: int, success: bool) -> None:
    # Any text, lone surrogates included (they arrive from clients' JSON escapes).
    frame = Response(success, code, message).encode()
    decoder = ResponseDecoder()
    decoder.receive_data(frame)
    event = decoder.next_event()
    assert isinstance(event, Response) and (event.success, event.code) == (success, code)
    try:
        exact = len(message.encode("utf-8")) <= 65535
    except UnicodeEncodeError:
        exact = False  # written as \udXXX escapes instead
    if exact:
        assert event.message == message
