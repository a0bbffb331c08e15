"""The hycan wire protocol, sans-IO: bytes in, events out (in the spirit of h11).

Request frame::

    [op u8][name_len u8][name bytes]                          ops 0x00-0x3f, 0x80-0xff
    [op u8][name_len u8][name bytes][len u16 LE][payload]     ops 0x40-0x7f

Response frame::

    [success u8][error_code u8][msg_len u16 LE][msg utf-8]

Ops 1-3 are byte-compatible with the C++ HyCAN daemon. Every op shares the framing of its
range, so a frame with an unknown op can be skipped and answered with an error while the
connection stays usable: every byte sequence is either a complete frame or the start of
one. Neither decoder ever raises on bad input except :class:`BufferFull`, when a caller
feeds more than ``max_buffer`` bytes without draining events. See docs/protocol.md for
the full contract.
"""

from __future__ import annotations

import enum
import struct
from typing import Final, NamedTuple

from hycan._names import name_problem
from hycan.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION: Final = 1
MAX_PAYLOAD: Final = 4096  # larger payloads are delimited, skipped and refused
MAX_MESSAGE: Final = 0xFFFF
MAX_FRAME: Final = 2 + 0xFF + 2 + 0xFFFF  # the longest request that can be framed
DEFAULT_MAX_BUFFER: Final = 2 * MAX_FRAME
RESPONSE_HEADER: Final = struct.Struct("<BBH")


class Op(enum.IntEnum):
    """Operation codes (byte 0 of a request)."""

    CREATE_VCAN = 1
    INTERFACE_UP = 2
    INTERFACE_DOWN = 3
    DELETE = 4
    STATUS = 5
    PING = 6
    CAN_RESTART = 7
    # payload ops (0x40-0x7f)
    SET_MTU = 0x40  # payload: mtu u32 LE
    SET_CAN = 0x41  # payload: JSON object of CAN settings (see docs/protocol.md)
    CREATE_LINK = 0x42  # payload: JSON {"kind", "lease", "peer", "up"}
    LIST = 0x43  # payload: JSON object {"after": ifindex} (or empty); name empty
    NETNS = 0x44  # a network namespace fd by SCM_RIGHTS (none: the daemon's); name empty
    ROUTE = 0x45  # name: source link; payload: JSON {"action", "dst", "both", "can_id", ...}
    ROUTES = 0x46  # list CAN gateway routes; name and payload empty
    WATCH = 0x47  # the connection becomes a stream of link events; payload: JSON {"names"}


_NAMELESS_OPS: Final = frozenset({Op.PING, Op.LIST, Op.NETNS, Op.ROUTES, Op.WATCH})
_OPS: Final = {int(op): op for op in Op}  # faster than Op(code) on the hot path


class BufferFull(ProtocolError):
    """More unprocessed bytes arrived than the decoder may hold."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Sentinel returned by ``next_event()`` when a full frame has not arrived yet."""


class Request(NamedTuple):
    """A well-formed request for a known op, with a valid name where the op needs one."""

    op: Op
    name: bytes
    payload: bytes = b""

    @property
    def ifname(self) -> str:
        """The interface name as text (names are validated as UTF-8)."""
        return self.name.decode("utf-8")


class BadRequest(NamedTuple):
    """A complete frame the daemon must answer with an error instead of acting on it."""

    code: ErrorCode
    message: str
    op: int = 0  # as received, for the audit trail
    name: bytes = b""

    @property
    def op_label(self) -> str:
        """The op's name if it is known, else its number (``0x99``)."""
        known = _OPS.get(self.op)
        return known.name if known is not None else f"0x{self.op:02x}"


class Response(NamedTuple):
    """One response frame. ``code`` is 0 on success."""

    success: bool
    code: int
    message: str

    def encode(self) -> bytes:
        """Serialize this response (message capped at 65535 bytes, cut on a char boundary).

        Never raises for any message: text that has no UTF-8 form (a lone surrogate, say,
        from a client's JSON) is written as a ``\\udXXX`` escape instead.
        """
        body = self.message.encode("utf-8", "backslashreplace")
        if len(body) > MAX_MESSAGE:
            body = body[:MAX_MESSAGE].decode("utf-8", "ignore").encode("utf-8")
        return RESPONSE_HEADER.pack(int(self.success), self.code & 0xFF, len(body)) + body


def ok(message: str = "") -> Response:
    """A success response."""
    return Response(True, 0, message)


def failure(code: int, message: str) -> Response:
    """A failure response."""
    return Response(False, int(code), message)


def has_payload(op: int) -> bool:
    """Ops 0x40-0x7f carry a ``[len u16 LE][payload]`` after the name."""
    return 0x40 <= op <= 0x7F


def encode_request(op: int, name: bytes, payload: bytes = b"") -> bytes:
    """Serialize a request frame. The caller validates ``name`` (see ``_names``)."""
    if not 0 <= op <= 0xFF:
        raise ValueError(f"op {op} is outside 0..255")
    if len(name) > 0xFF:
        raise ValueError("name longer than 255 bytes cannot be framed")
    frame = bytes((op, len(name))) + name
    if has_payload(op):
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload longer than {MAX_PAYLOAD} bytes")
        frame += len(payload).to_bytes(2, "little") + payload
    elif payload:
        raise ValueError(f"op {op} carries no payload")
    return frame


class _Decoder:
    """Shared buffer handling: bytes accumulate, complete frames are cut from the front.

    The buffer is the received ``bytes`` object itself while nothing is left over (the
    common case: whole frames per receive, so no copy), and a ``bytearray`` only while a
    partial frame waits for the rest (appends and front deletions stay amortized O(1)).
    """

    def __init__(self, max_buffer: int) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self.max_buffer = max_buffer

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer. Raises :class:`BufferFull` past ``max_buffer``."""
        buf, pos = self._buf, self._pos
        left = len(buf) - pos
        if left + len(data) > self.max_buffer:
            raise BufferFull(
                f"more than {self.max_buffer} bytes buffered without a complete frame being read"
            )
        if not left:
            self._buf = data
        elif isinstance(buf, bytearray):
            del buf[:pos]
            buf += data
        else:
            self._buf = bytearray(buf[pos:]) + data
        self._pos = 0


class RequestDecoder(_Decoder):
    """Server side: turns received bytes into :class:`Request` / :class:`BadRequest` events."""

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        super().__init__(max_buffer)

    def next_event(self) -> Request | BadRequest | _NeedData:
        """Return the next complete event, or ``NEED_DATA``."""
        buf, pos = self._buf, self._pos
        end = len(buf)
        if end - pos < 2:
            return NEED_DATA
        op = buf[pos]
        name_end = pos + 2 + buf[pos + 1]
        if 0x40 <= op <= 0x7F:  # has_payload(op), inlined: this runs once per request
            if end < name_end + 2:
                return NEED_DATA
            payload_len = buf[name_end] | buf[name_end + 1] << 8
            frame_end = name_end + 2 + payload_len
            if end < frame_end:
                return NEED_DATA
            payload = bytes(buf[name_end + 2 : frame_end])
        else:
            if end < name_end:
                return NEED_DATA
            payload_len = 0
            frame_end = name_end
            payload = b""
        self._pos = frame_end
        name = bytes(buf[pos + 2 : name_end])
        if payload_len > MAX_PAYLOAD:
            return BadRequest(
                ErrorCode.NETLINK_CONNECT,
                f"bad frame: payload of {payload_len} bytes exceeds {MAX_PAYLOAD}",
                op,
                name,
            )
        return _check(op, name, payload)


def _check(op: int, name: bytes, payload: bytes) -> Request | BadRequest:
    known = _OPS.get(op)
    if known is None:
        return BadRequest(ErrorCode.NETLINK_CONNECT, f"bad frame: unknown op {op}", op, name)
    if known not in _NAMELESS_OPS:
        problem = name_problem(name)
        if problem is not None:
            return BadRequest(ErrorCode.INVALID_NAME, problem, op, name)
    return Request(known, name, payload)


class ResponseDecoder(_Decoder):
    """Client side: turns received bytes into :class:`Response` events."""

    def __init__(self, max_buffer: int = 4 * (RESPONSE_HEADER.size + MAX_MESSAGE)) -> None:
        super().__init__(max_buffer)

    def next_event(self) -> Response | _NeedData:
        """Return the next complete response, or ``NEED_DATA``."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return NEED_DATA
        end = pos + 4 + (buf[pos + 2] | buf[pos + 3] << 8)
        if len(buf) < end:
            return NEED_DATA
        self._pos = end
        return Response(bool(buf[pos]), buf[pos + 1], str(buf[pos + 4 : end], "utf-8", "replace"))
