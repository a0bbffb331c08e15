"""Blocking transports for the sync client: the daemon's socket, or the in-process handler."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from hycan._netns import rights
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
from hycan._trust import check_server

if TYPE_CHECKING:
    from hycan._handler import Handler

clock = time.monotonic
"""The clock call deadlines are measured on (a vDSO call: no system call)."""

SLACK = 0.001
"""How far past its deadline a call may end: the kernel timeouts are re-armed only when
they would overshoot the time left by more than this."""

_TIMEVAL = struct.Struct("@ll")  # struct timeval: seconds, microseconds
_NO_WAIT = socket.MSG_DONTWAIT


def _timeval(seconds: float | None) -> bytes:
    """A struct timeval of ``seconds`` (None: "forever", which the kernel writes as 0; the
    shortest timeout is therefore 1 µs)."""
    if seconds is None:
        return _TIMEVAL.pack(0, 0)
    return _TIMEVAL.pack(*divmod(max(1, round(seconds * 1e6)), 1_000_000))


def _arm(sock: socket.socket, seconds: float) -> float:
    """Make each connect, send and receive on ``sock`` wait at most ``seconds``."""
    timeval = _timeval(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    return seconds


class SocketTransport:
    """One persistent connection to the daemon; one request in flight at a time.

    The kernel keeps the deadline: SO_SNDTIMEO/SO_RCVTIMEO hold the full timeout, so a call
    whose send need not wait and whose reply comes in one piece costs one send and one
    receive and no other system call (a Python timeout would poll before each). A call that
    waits more than once (a reply in pieces, a full send buffer, a queue for the lock, a new
    connection) re-arms them to the time left before each further wait and restores them at
    the end. A call that does not complete closes the connection, so no later call can read
    its reply.
    """

    def __init__(
        self, path: str, tried: tuple[str, ...], daemon_uid: int | None, timeout: float
    ) -> None:
        self.path = path
        self._tried = tried
        self._timeout = timeout
        self._daemon_uid = daemon_uid
        self._lock = threading.Lock()
        self.generation = 0  # connections opened so far
        self._sock: socket.socket | None = None
        self._armed = timeout  # the kernel timeouts set on self._sock
        self._full = timeout - SLACK  # armed below this: restore after the call
        self._decoder = ResponseDecoder()

    def connect(self, deadline: float) -> None:
        """Open the connection by ``deadline`` unless one is open; raise
        ``DaemonUnavailable``, or ``PermissionDenied`` when the kernel refuses us."""
        if not self._lock.acquire(timeout=max(0.0, deadline - clock())):
            raise unavailable(self._tried, "timed out connecting")
        try:
            if self._sock is None:
                self._open(deadline)
        finally:
            self._lock.release()

    def _open(self, deadline: float) -> socket.socket:
        remaining = deadline - clock()
        if remaining <= 0:  # a reconnect with no time left
            raise timed_out(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            armed = _arm(sock, remaining)
            sock.connect(self.path)
            check_server(sock, self.path, self._daemon_uid)
        except BlockingIOError:  # SO_SNDTIMEO expired: the daemon's backlog stayed full
            sock.close()
            raise unavailable(self._tried, "timed out connecting") from None
        except OSError as exc:
            sock.close()
            raise connect_failed(exc, self._tried, self.path) from None
        except BaseException:
            sock.close()
            raise
        self._sock, self._armed, self._decoder = sock, armed, ResponseDecoder()
        self.generation += 1  # a new connection: a new session in the daemon
        return sock

    def sibling(self) -> SocketTransport:
        """A transport of its own to the same daemon (not connected yet)."""
        return SocketTransport(self.path, self._tried, self._daemon_uid, self._timeout)

    @property
    def connected(self) -> bool:
        """Whether a connection is open."""
        return self._sock is not None

    def roundtrip(
        self, frame: bytes, deadline: float, fd: int | None = None, *, stream: bool = False
    ) -> Response:
        """Send one request frame (with descriptor ``fd`` passed along, by SCM_RIGHTS)
        and read its response, all by ``deadline``. ``stream``: more frames follow the
        response (WATCH's events; read them with :meth:`next_reply`)."""
        lock = self._lock
        # prompt: the lock came at once, so until this call waits the armed timeout fits
        prompt = lock.acquire(False)
        if not prompt and not lock.acquire(timeout=max(0.0, deadline - clock())):
            raise timed_out(self.path)
        try:
            sock = self._sock
            if sock is None:
                prompt, sock = False, self._open(deadline)
            try:
                if fd is not None:
                    frame, prompt = frame[sock.sendmsg([frame], rights(fd)) :], False
                return self._exchange(sock, frame, deadline, prompt, stream)
            except BlockingIOError:  # SO_RCVTIMEO/SO_SNDTIMEO expired: the deadline passed
                self.close()
                raise timed_out(self.path) from None
            except OSError:
                self.close()
                raise connection_lost(self.path) from None
            except BaseException:  # interrupted (a signal handler raised), timed out, bad data:
                self.close()  # the reply must not reach the next call
                raise
            finally:
                if self._armed < self._full and self._sock is not None:
                    self._armed = _arm(sock, self._timeout)
        finally:
            lock.release()

    def _exchange(
        self, sock: socket.socket, frame: bytes, deadline: float, prompt: bool, stream: bool
    ) -> Response:
        decoder = self._decoder
        if prompt:  # the common case: a send that need not wait, then one receive
            try:
                sent = sock.send(frame, _NO_WAIT)
            except BlockingIOError:
                sent = 0
            except (BrokenPipeError, ConnectionResetError):
                sent = len(frame)  # a daemon that refused us may have left its answer
            frame = frame[sent:]
            prompt = not frame
        while frame:
            self._fit(sock, deadline)
            try:
                frame = frame[sock.send(frame) :]
            except (BrokenPipeError, ConnectionResetError):
                break
        while True:
            event = decoder.next_event()
            if isinstance(event, Response):
                if decoder.buffered and not stream:
                    raise extra_reply(self.path)
                return event
            if not prompt:
                self._fit(sock, deadline)
            prompt = False
            data = sock.recv(RECV_SIZE)
            if not data:
                raise ConnectionResetError
            decoder.receive_data(data)

    def _fit(self, sock: socket.socket, deadline: float) -> None:
        """Before a further wait: re-arm the kernel timeouts if they would overshoot."""
        remaining = deadline - clock()
        if remaining <= 0:
            raise timed_out(self.path)
        if remaining + SLACK < self._armed:
            self._armed = _arm(sock, remaining)

    def next_reply(self, deadline: float | None = None) -> Response | None:
        """The next frame of a stream (after ``roundtrip(..., stream=True)``), waiting
        until ``deadline`` (None: however long it takes; past it: ``Timeout``); None once
        the daemon has closed the connection."""
        sock, decoder = self._sock, self._decoder
        try:
            while sock is not None:
                event = decoder.next_event()
                if isinstance(event, Response):
                    return event
                remaining = None if deadline is None else deadline - clock()
                if remaining is not None and remaining <= 0:
                    raise timed_out(self.path)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(remaining))
                data = sock.recv(RECV_SIZE)
                if not data:
                    break
                decoder.receive_data(data)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise timed_out(self.path) from None
        except OSError:
            pass
        self.close()
        return None

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class LocalTransport:
    """Runs requests in this process (fallback for callers holding CAP_NET_ADMIN)."""

    path = "in-process"
    connected = True
    generation = 1  # one session, for the transport's life

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._session = local_session()  # its leases end with this transport

    def connect(self, deadline: float) -> None:
        """Nothing to connect."""

    def roundtrip(self, frame: bytes, deadline: float, fd: int | None = None) -> Response:
        """Handle one request frame in-process."""
        return handle_locally(self._handler, self._session, frame, fd)

    def close(self) -> None:
        """Delete the links leased in-process and release the netlink socket."""
        try:
            self._handler.release(self._session)
        finally:
            self._handler.backend.close()
