"""The trio server: one nursery task per client, bytes through the sans-IO decoder.

A client task reads whatever has arrived, turns the complete frames into responses (at
most ``_BATCH`` per turn) and writes them back in one send, so pipelined requests cost one
read and one write. Handlers are synchronous and answer in microseconds; no client waits
on another: a pipelining client yields after each batch, a busy one every ``_STREAK``
reads.

The hot path is kept short (see docs/perf.md): stdlib sockets in non-blocking mode, read
before waiting (``trio.lowlevel.wait_readable`` only when nothing is there yet), one
cancel scope per connection whose deadline (the idle timeout) moves at most once a second,
and audit lines written after the replies, in one write per batch.

Limits (:class:`Limits`) bound what one client can cost: concurrent clients, idle time,
buffered bytes. :meth:`Server.shutdown` stops accepting, drops idle clients at once, and
gives clients in the middle of a request ``grace`` seconds to receive their answers.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from hycan._handler import Handler
from hycan._peercred import PeerCredentials, peer_credentials
from hycan._protocol import (
    DEFAULT_MAX_BUFFER,
    BadRequest,
    Op,
    Request,
    RequestDecoder,
    Response,
    failure,
)
from hycan._trio_io import receive, send_all
from hycan.daemon.audit import AuditLog
from hycan.daemon.policy import AccessPolicy
from hycan.errors import ErrorCode

log = logging.getLogger("hycan.daemon")

# accept() failures that mean "out of resources for now", not "the listener is broken"
# (as in trio's serve_listeners): wait and retry instead of dying.
_ACCEPT_CAPACITY_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_READ_ONLY_OPS = frozenset({Op.PING, Op.STATUS})  # audited at DEBUG when they succeed
_STREAK = 8  # requests read without waiting before other clients get a turn
_BATCH = 64  # pipelined requests answered per turn
_DEADLINE_STEP = 1.0  # move a connection's idle deadline at most this often (seconds)

Authorizer = Callable[[PeerCredentials], str | None]
"""Returns None to admit a peer, or the reason it is refused."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the daemon (each has a ``hycan-daemon`` flag)."""

    max_clients: int = 256
    idle_timeout: float = 300.0  # seconds without a complete request or a readable reply
    max_buffer: int = DEFAULT_MAX_BUFFER  # bytes buffered per connection
    grace: float = 2.0  # seconds in-flight requests get at shutdown


class _Connection:
    """One client's socket and cancel scope, and whether it is waiting for a request."""

    __slots__ = ("_streak", "idle", "scope", "sock")

    def __init__(self, sock: socket.socket, scope: trio.CancelScope) -> None:
        self.sock = sock
        self.scope = scope
        self.idle = False
        self._streak = 0  # reads in a row that did not wait

    async def receive(self, size: int) -> bytes:
        """The next bytes from the client (b"" at EOF).

        Tries the socket first: a busy client's next request is often already here, and
        reading it now skips a trip through the event loop. Every ``_STREAK`` such reads
        the other clients get their turn, so one that always has a request ready cannot
        starve the rest (shielded: what was read gets answered).
        """
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            self._streak = 0
            self.idle = True
            try:
                return await receive(self.sock, size)
            finally:
                self.idle = False
        self._streak += 1
        if self._streak == _STREAK:
            self._streak = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data


class Server:
    """Serves the protocol on a listening socket with a :class:`Handler`.

    ``authorize`` defaults to root and the daemon's own uid (``AccessPolicy.build``).
    """

    def __init__(
        self,
        handler: Handler,
        authorize: Authorizer | None = None,
        limits: Limits | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.handler = handler
        self.authorize = authorize or AccessPolicy.build(group=None).authorize
        self.limits = limits or Limits()
        self.audit = audit or AuditLog()
        self.clients = 0
        self._connections: set[_Connection] = set()
        self._accepting = trio.CancelScope()
        self._stopping = False
        self._busy_logged = False

    async def serve(
        self,
        sock: socket.socket,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept clients until :meth:`shutdown`; ``started()`` once accepting.

        Returns when every client task has finished (bounded by ``limits.grace``).
        """
        sock.setblocking(False)
        async with trio.open_nursery() as clients:
            with self._accepting:
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno not in _ACCEPT_CAPACITY_ERRORS:
                            raise
                        log.warning("accept failed (%s): retrying in 0.1 s", exc.strerror)
                        await trio.sleep(0.1)
                        continue
                    conn.setblocking(False)
                    clients.start_soon(self._serve_client, conn)
            clients.cancel_scope.deadline = trio.current_time() + self.limits.grace

    def shutdown(self) -> None:
        """Stop accepting and drop idle clients; busy ones get ``limits.grace`` to finish."""
        self._stopping = True
        self._accepting.cancel()
        for connection in self._connections:
            if connection.idle:
                connection.scope.cancel()

    async def _serve_client(self, conn: socket.socket) -> None:
        self.clients += 1
        try:
            with conn:
                await self._admit_and_converse(conn)
        except OSError:
            pass  # the client went away (reset, broken pipe); closing is all there is to do
        finally:
            self.clients -= 1
            self.audit.flush()

    async def _admit_and_converse(self, conn: socket.socket) -> None:
        peer = peer_credentials(conn)
        if self.clients > self.limits.max_clients:
            if not self._busy_logged:
                log.warning("client limit (%d) reached: refusing new clients", self.clients - 1)
                self._busy_logged = True
            message = f"hycan-daemon is busy: {self.limits.max_clients} clients connected"
            with trio.move_on_after(self.limits.idle_timeout):
                await send_all(conn, failure(ErrorCode.BUSY, message).encode())
            return
        self._busy_logged = False
        refusal = self.authorize(peer)
        if refusal is not None:
            self.audit.refusal(peer, refusal)
            with trio.move_on_after(self.limits.idle_timeout):
                await send_all(conn, failure(ErrorCode.PERMISSION_DENIED, refusal).encode())
                await _linger(conn)
            return
        await self._converse(conn, peer)

    async def _converse(self, conn: socket.socket, peer: PeerCredentials) -> None:
        decoder = RequestDecoder(self.limits.max_buffer)
        idle_timeout = self.limits.idle_timeout
        with trio.CancelScope() as scope:
            connection = _Connection(conn, scope)
            self._connections.add(connection)
            moved = -math.inf
            more = False  # complete requests left in the decoder after a full batch
            try:
                while not self._stopping:
                    now = trio.current_time()
                    if now - moved >= _DEADLINE_STEP:
                        # At least idle_timeout of silence (or of not reading) ends it.
                        scope.deadline = now + idle_timeout + _DEADLINE_STEP
                        moved = now
                    if more:
                        # A pipelining client gets _BATCH answers per turn, then the others.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    else:
                        data = await connection.receive(decoder.max_buffer - decoder.buffered)
                        if not data:
                            return
                        decoder.receive_data(data)
                    replies: list[bytes] = []
                    while len(replies) < _BATCH and isinstance(
                        event := decoder.next_event(), Request | BadRequest
                    ):
                        replies.append(self._answer(event, peer).encode())
                    more = len(replies) == _BATCH
                    if replies:
                        await send_all(conn, b"".join(replies))
                    self.audit.flush()
            finally:
                self._connections.discard(connection)
        if scope.cancelled_caught and not self._stopping:
            log.info("closing a connection idle (or not reading its replies) for %gs", idle_timeout)

    def _answer(self, event: Request | BadRequest, peer: PeerCredentials) -> Response:
        if isinstance(event, BadRequest):
            self.audit.request(
                peer, event.op_label, event.name, f"error {event.code}: {event.message}"
            )
            return failure(event.code, event.message)
        try:
            response = self.handler.handle(event)
        except Exception:
            log.exception("internal error handling %s", event)
            response = failure(ErrorCode.INTERNAL, "internal error in hycan-daemon (see its log)")
        self.audit.request(
            peer,
            event.op.name,
            event.name,
            "ok" if response.success else f"error {response.code}: {response.message}",
            routine=response.success and event.op in _READ_ONLY_OPS,
        )
        return response


async def _linger(conn: socket.socket, seconds: float = 1.0) -> None:
    """Half-close and drain briefly, so a refused client reads our answer instead of a reset."""
    conn.shutdown(socket.SHUT_WR)
    with trio.move_on_after(seconds):
        while await receive(conn, 4096):
            pass
