"""trio transports for the async client: the daemon's socket, or the in-process handler."""

from __future__ import annotations

import contextlib
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
from hycan.errors import Timeout

if TYPE_CHECKING:
    from hycan._handler import Handler


class AsyncSocketTransport:
    """One persistent connection to the daemon; one request in flight at a time."""

    def __init__(self, path: str, tried: tuple[str, ...], timeout: float) -> None:
        self.path = path
        self._tried = tried
        self._timeout = timeout
        self._lock = trio.Lock()
        self._stream: trio.SocketStream | None = None
        self._decoder = ResponseDecoder()

    async def connect(self) -> None:
        """Open the connection, or raise ``DaemonUnavailable``."""
        try:
            with trio.fail_after(self._timeout):
                stream = await trio.open_unix_socket(self.path)
        except (OSError, trio.TooSlowError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise unavailable(self._tried, reason) from None
        try:
            check_server(stream.socket, self.path)
        except BaseException:
            await stream.aclose()
            raise
        self._stream = stream
        self._decoder = ResponseDecoder()

    @property
    def connected(self) -> bool:
        """Whether a connection is open."""
        return self._stream is not None

    async def roundtrip(self, frame: bytes) -> Response:
        """Send one request frame and read its response."""
        async with self._lock:
            if self._stream is None:
                await self.connect()
            assert self._stream is not None
            try:
                with trio.fail_after(self._timeout):
                    # A daemon that refused us and hung up may have left its answer: read it.
                    with contextlib.suppress(trio.BrokenResourceError):
                        await self._stream.send_all(frame)
                    while True:
                        event = self._decoder.next_event()
                        if isinstance(event, Response):
                            return event
                        data = await self._stream.receive_some(RECV_SIZE)
                        if not data:
                            raise trio.BrokenResourceError
                        self._decoder.receive_data(data)
            except trio.TooSlowError:
                await self.aclose()
                raise Timeout(f"the hycan daemon on {self.path} did not answer in time") from None
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self.aclose()
                raise connection_lost(self.path) from None

    async def aclose(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()


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
