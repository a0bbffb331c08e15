"""trio transports for the async client: the daemon's socket, or the in-process handler."""

from __future__ import annotations

import math
import socket
from typing import TYPE_CHECKING

import trio

from hycan._protocol import Response, ResponseDecoder
from hycan._transport_common import (
    RECV_SIZE,
    connect_failed,
    connection_lost,
    extra_reply,
    handle_locally,
    local_session,
    timed_out,
    unavailable,
)
from hycan._trio_io import receive, send_all
from hycan._trust import check_server

if TYPE_CHECKING:
    from hycan._handler import Handler

clock = trio.current_time
"""The clock call deadlines are measured on."""


class AsyncSocketTransport:
    """One persistent connection to the daemon; one request in flight at a time.

    A non-blocking stdlib socket driven by trio's wait primitives: an uncontended call
    costs one wait (for the reply) and no other scheduler round. A call that does not
    complete (cancelled, timed out, failed) closes the connection, synchronously, so no
    later call can read its reply.
    """

    def __init__(self, path: str, tried: tuple[str, ...], daemon_uid: int | None) -> None:
        self.path = path
        self._tried = tried
        self._daemon_uid = daemon_uid
        self._lock = trio.Lock()
        self.generation = 0  # connections opened so far
        self._sock: socket.socket | None = None
        self._decoder = ResponseDecoder()

    async def connect(self, deadline: float) -> None:
        """Open the connection by ``deadline`` unless one is open; raise
        ``DaemonUnavailable``, or ``PermissionDenied`` when the kernel refuses us."""
        if deadline <= clock():  # a reconnect with no time left
            raise timed_out(self.path)
        with trio.CancelScope(deadline=deadline):
            async with self._lock:
                if self._sock is None:
                    await self._open()
                return
        raise unavailable(self._tried, "timed out connecting")

    async def _open(self) -> None:
        try:
            stream = await trio.open_unix_socket(self.path)
        except OSError as exc:
            raise connect_failed(exc, self._tried, self.path) from None
        sock = socket.socket(fileno=stream.socket.detach())  # already non-blocking
        try:
            check_server(sock, self.path, self._daemon_uid)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._decoder = ResponseDecoder()
        self.generation += 1  # a new connection: a new session in the daemon

    def sibling(self) -> AsyncSocketTransport:
        """A transport of its own to the same daemon (not connected yet)."""
        return AsyncSocketTransport(self.path, self._tried, self._daemon_uid)

    @property
    def connected(self) -> bool:
        """Whether a connection is open."""
        return self._sock is not None

    async def roundtrip(
        self, frame: bytes, deadline: float, fd: int | None = None, *, stream: bool = False
    ) -> Response:
        """Send one request frame (with descriptor ``fd`` passed along, by SCM_RIGHTS)
        and read its response, all by ``deadline``. ``stream``: more frames follow the
        response (WATCH's events; read them with :meth:`next_reply`)."""
        # A bare CancelScope: fail_after() is a generator-based context manager, which
        # costs more than the rest of an uncontended call's Python code.
        with trio.CancelScope(deadline=deadline):
            try:
                self._lock.acquire_nowait()  # uncontended: no scheduler round
            except trio.WouldBlock:
                await self._lock.acquire()
            try:
                if self._sock is None:
                    await self._open()
                sock, decoder = self._sock, self._decoder
                assert sock is not None
                try:
                    try:  # noqa: SIM105 (no context manager per call on the hot path)
                        await send_all(sock, frame, fd)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # a daemon that refused us and hung up may have left its answer
                    while True:
                        event = decoder.next_event()
                        if isinstance(event, Response):
                            if decoder.buffered and not stream:
                                raise extra_reply(self.path)
                            return event
                        data = await receive(sock, RECV_SIZE)
                        if not data:
                            raise ConnectionResetError
                        decoder.receive_data(data)
                except (OSError, trio.ClosedResourceError):
                    self.close()
                    raise connection_lost(self.path) from None
                except BaseException:  # cancelled, timed out, bad data: the reply must not
                    self.close()  # reach the next call (no checkpoint: runs while cancelled)
                    raise
            finally:
                self._lock.release()
        raise timed_out(self.path)  # the deadline passed: the scope swallowed Cancelled

    async def next_reply(self, deadline: float | None = None) -> Response | None:
        """The next frame of a stream (after ``roundtrip(..., stream=True)``), waiting
        until ``deadline`` (None: however long it takes; past it: ``Timeout``); None once
        the daemon has closed the connection."""
        sock, decoder = self._sock, self._decoder
        with trio.CancelScope(deadline=math.inf if deadline is None else deadline):
            try:
                while sock is not None:
                    event = decoder.next_event()
                    if isinstance(event, Response):
                        return event
                    data = await receive(sock, RECV_SIZE)
                    if not data:
                        break
                    decoder.receive_data(data)
            except (OSError, trio.ClosedResourceError):
                pass
            self.close()
            return None
        raise timed_out(self.path)

    def close(self) -> None:
        """Close the connection now, without a checkpoint (a later call reconnects)."""
        if self._sock is not None:
            sock, self._sock = self._sock, None
            trio.lowlevel.notify_closing(sock)  # a task waiting on it gets ClosedResourceError
            sock.close()

    async def aclose(self) -> None:
        """Close the connection (a later call reconnects)."""
        self.close()
        await trio.lowlevel.checkpoint()


class AsyncLocalTransport:
    """Runs requests in this process (fallback for callers holding CAP_NET_ADMIN)."""

    path = "in-process"
    connected = True
    generation = 1  # one session, for the transport's life

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._session = local_session()  # its leases end with this transport

    async def connect(self, deadline: float) -> None:
        """Nothing to connect."""

    async def roundtrip(self, frame: bytes, deadline: float, fd: int | None = None) -> Response:
        """Handle one request frame in-process (netlink answers in microseconds)."""
        return handle_locally(self._handler, self._session, frame, fd)

    async def aclose(self) -> None:
        """Delete the links leased in-process and release the netlink socket."""
        try:
            self._handler.release(self._session)
        finally:
            self._handler.backend.close()
