"""The client loop every server in parts 1 and 2 is measured with (stdlib only).

One persistent blocking AF_UNIX connection: send one request frame, read until the whole
response (``[success][code][len u16 LE][msg]``) has arrived, repeat. The same code talks to
the daemon and to the echo baselines, so the ratio isolates the server.
"""

from __future__ import annotations

import socket

from bench._stats import time_each

RECV_SIZE = 65536
HEADER = 4


def response_length(data: bytes | bytearray) -> int | None:
    """Length of the first complete response in ``data``, or None if it is incomplete."""
    if len(data) < HEADER:
        return None
    total = HEADER + int.from_bytes(data[2:4], "little")
    return total if len(data) >= total else None


class RawClient:
    """A blocking client over one persistent connection."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def roundtrip(self, frame: bytes) -> bytes:
        """Send ``frame`` and return its complete response."""
        sock = self.sock
        sock.sendall(frame)
        data = sock.recv(RECV_SIZE)
        while response_length(data) is None:
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                raise ConnectionError(f"{self.path} closed the connection mid-response")
            data += chunk
        return data

    def measure(self, frame: bytes, count: int) -> list[int]:
        """Round-trip ``frame`` ``count`` times; per-call times in nanoseconds."""
        roundtrip = self.roundtrip
        return time_each(lambda _: roundtrip(frame), count)

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()
