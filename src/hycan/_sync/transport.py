"""Blocking transports for the sync client: the daemon's socket, or the in-process handler."""

from __future__ import annotations

import socket
import struct
import threading
from typing import TYPE_CHECKING

from hycan._protocol import Response, ResponseDecoder
from hycan._transport_common import (
    RECV_SIZE,
    check_server,
    connection_lost,
    handle_locally,
    unavailable,
)
from hycan.errors import Timeout

if TYPE_CHECKING:
    from hycan._handler import Handler


_TIMEVAL = struct.Struct("@ll")  # struct timeval: seconds, microseconds


class SocketTransport:
    """One persistent connection to the daemon; one request in flight at a time."""

    def __init__(self, path: str, tried: tuple[str, ...], timeout: float) -> None:
        self.path = path
        self._tried = tried
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._decoder = ResponseDecoder()

    def connect(self) -> None:
        """Open the connection, or raise ``DaemonUnavailable``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # The kernel enforces the timeout (connect, send and recv each wait at most
            # that long): one system call per send or receive, where a Python-level
            # timeout polls before each.
            # (0 would mean "forever" to the kernel: the shortest timeout is 1 µs.)
            timeval = _TIMEVAL.pack(*divmod(max(1, round(self._timeout * 1e6)), 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.connect(self.path)
            check_server(sock, self.path)
        except BlockingIOError:  # SO_SNDTIMEO expired: the daemon's backlog stayed full
            sock.close()
            raise unavailable(self._tried, "timed out connecting") from None
        except OSError as exc:
            sock.close()
            raise unavailable(self._tried, exc.strerror or str(exc)) from None
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._decoder = ResponseDecoder()

    @property
    def connected(self) -> bool:
        """Whether a connection is open."""
        return self._sock is not None

    def roundtrip(self, frame: bytes) -> Response:
        """Send one request frame and read its response."""
        with self._lock:
            if self._sock is None:
                self.connect()
            sock, decoder = self._sock, self._decoder
            assert sock is not None
            try:
                try:  # noqa: SIM105 (no context manager per call on the hot path)
                    sock.sendall(frame)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a daemon that refused us and hung up may have left its answer
                while True:
                    event = decoder.next_event()
                    if isinstance(event, Response):
                        return event
                    data = sock.recv(RECV_SIZE)
                    if not data:
                        raise ConnectionResetError
                    decoder.receive_data(data)
            except BlockingIOError:  # SO_RCVTIMEO/SO_SNDTIMEO expired
                self.close()
                raise Timeout(f"the hycan daemon on {self.path} did not answer in time") from None
            except OSError:
                self.close()
                raise connection_lost(self.path) from None

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class LocalTransport:
    """Runs requests in this process (fallback for callers holding CAP_NET_ADMIN)."""

    path = "in-process"
    connected = True

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    def connect(self) -> None:
        """Nothing to connect."""

    def roundtrip(self, frame: bytes) -> Response:
        """Handle one request frame in-process."""
        return handle_locally(self._handler, frame)

    def close(self) -> None:
        """Release the netlink socket."""
        self._handler.backend.close()
