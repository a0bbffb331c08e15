"""trio transports for the async client: the daemon's socket, or the in-process handler."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import trio

from hycan._protocol import Response, ResponseDecoder
from hycan._transport_common import (
    RECV_SIZE,
    check_server,
    connection_lost,
    handle_locally,
    unavailable,
)
from hycan._trio_io import receive, send_all
from hycan.errors import Timeout

if TYPE_CHECKING:
    from hycan._handler import Handler


class AsyncSocketTransport:
    """One persistent connection to the daemon; one request in flight at a time.

    A non-blocking stdlib socket driven by trio's wait primitives: an uncontended call
    costs one wait (for the reply) and no other scheduler round.
    """

    def __init__(self, path: str, tried: tuple[str, ...], timeout: float) -> None:
        self.path = path
        self._tried = tried
        self._timeout = timeout
        self._lock = trio.Lock()
        self._sock: socket.socket | None = None
        self._decoder = ResponseDecoder()

    async def connect(self) -> None:
        """Open the connection, or raise ``DaemonUnavailable``."""
        try:
            with trio.fail_after(self._timeout):
                stream = await trio.open_unix_socket(self.path)
        except (OSError, trio.TooSlowError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise unavailable(self._tried, reason) from None
        sock = socket.socket(fileno=stream.socket.detach())  # already non-blocking
        try:
            check_server(sock, self.path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._decoder = ResponseDecoder()

    @property
    def connected(self) -> bool:
        """Whether a connection is open."""
        return self._sock is not None

    async def roundtrip(self, frame: bytes) -> Response:
        """Send one request frame and read its response."""
        try:
            self._lock.acquire_nowait()  # uncontended: no scheduler round
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            if self._sock is None:
                await self.connect()
            sock, decoder = self._sock, self._decoder
            assert sock is not None
            # A bare CancelScope: fail_after() is a generator-based context manager, which
            # costs more than the rest of an uncontended call's Python code.
            scope = trio.CancelScope(deadline=trio.current_time() + self._timeout)
            try:
                with scope:
                    try:  # noqa: SIM105 (no context manager per call on the hot path)
                        await send_all(sock, frame)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # a daemon that refused us and hung up may have left its answer
                    while True:
                        event = decoder.next_event()
                        if isinstance(event, Response):
                            return event
                        data = await receive(sock, RECV_SIZE)
                        if not data:
                            raise ConnectionResetError
                        decoder.receive_data(data)
            except (OSError, trio.ClosedResourceError):
                await self.aclose()
                raise connection_lost(self.path) from None
            await self.aclose()  # only a timeout gets here: the scope swallowed it
            raise Timeout(f"the hycan daemon on {self.path} did not answer in time")
        finally:
            self._lock.release()

    async def aclose(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._sock is not None:
            sock, self._sock = self._sock, None
            trio.lowlevel.notify_closing(sock)  # a task waiting on it gets ClosedResourceError
            sock.close()
        await trio.lowlevel.checkpoint()


class AsyncLocalTransport:
    """Runs requests in this process (fallback for callers holding CAP_NET_ADMIN)."""

    path = "in-process"
    connected = True

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def connect(self) -> None:
        """Nothing to connect."""

    async def roundtrip(self, frame: bytes) -> Response:
        """Handle one request frame in-process (netlink answers in microseconds)."""
        return handle_locally(self._handler, frame)

    async def aclose(self) -> None:
        """Release the netlink socket."""
        self._handler.backend.close()
