"""The trio server: one nursery task per client, bytes through the sans-IO decoder.

A client task reads whatever has arrived, turns every complete frame into a response, and
writes all of them back in one ``send_all`` (so pipelined requests cost one read and one
write). Handlers are synchronous and answer in microseconds; no client waits on another.

Limits (:class:`Limits`) bound what one client can cost: concurrent clients, idle time,
buffered bytes. :meth:`Server.shutdown` stops accepting, drops idle clients at once, and
gives clients in the middle of a request ``grace`` seconds to receive their answers.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from hycan._handler import Handler
from hycan._protocol import (
    DEFAULT_MAX_BUFFER,
    BadRequest,
    Request,
    RequestDecoder,
    Response,
    failure,
)
from hycan.daemon.peercred import PeerCredentials, peer_credentials
from hycan.daemon.policy import AccessPolicy
from hycan.errors import ErrorCode

log = logging.getLogger("hycan.daemon")
audit = logging.getLogger("hycan.audit")

Authorizer = Callable[[PeerCredentials], str | None]
"""Returns None to admit a peer, or the reason it is refused."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the daemon (each has a ``hycan-daemon`` flag)."""

    max_clients: int = 256
    idle_timeout: float = 300.0  # seconds without a complete request or a readable reply
    max_buffer: int = DEFAULT_MAX_BUFFER  # bytes buffered per connection
    grace: float = 2.0  # seconds in-flight requests get at shutdown


class Server:
    """Serves the protocol on a listening socket with a :class:`Handler`.

    ``authorize`` defaults to root and the daemon's own uid (``AccessPolicy.build``).
    """

    def __init__(
        self, handler: Handler, authorize: Authorizer | None = None, limits: Limits | None = None
    ) -> None:
        self.handler = handler
        self.authorize = authorize or AccessPolicy.build(group=None).authorize
        self.limits = limits or Limits()
        self.clients = 0
        self._idle: set[trio.CancelScope] = set()
        self._accepting = trio.CancelScope()
        self._stopping = False
        self._busy_logged = False

    async def serve(
        self,
        sock: socket.socket,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept clients until :meth:`shutdown`; ``started()`` once accepting.

        Returns when every client task has finished (bounded by ``limits.grace``).
        """
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        async with trio.open_nursery() as clients:
            with self._accepting:
                await trio.serve_listeners(
                    self._serve_client, [listener], handler_nursery=clients, task_status=task_status
                )
            clients.cancel_scope.deadline = trio.current_time() + self.limits.grace

    def shutdown(self) -> None:
        """Stop accepting and drop idle clients; busy ones get ``limits.grace`` to finish."""
        self._stopping = True
        self._accepting.cancel()
        for scope in self._idle:
            scope.cancel()

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        self.clients += 1
        try:
            async with stream:
                await self._admit_and_converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to clean up beyond the stream
        finally:
            self.clients -= 1

    async def _admit_and_converse(self, stream: trio.SocketStream) -> None:
        try:
            peer = peer_credentials(stream.socket)
        except OSError:
            return  # the client is already gone
        if self.clients > self.limits.max_clients:
            if not self._busy_logged:
                log.warning("client limit (%d) reached: refusing new clients", self.clients - 1)
                self._busy_logged = True
            message = f"hycan-daemon is busy: {self.limits.max_clients} clients connected"
            await self._send(stream, failure(ErrorCode.BUSY, message).encode())
            return
        self._busy_logged = False
        refusal = self.authorize(peer)
        if refusal is not None:
            audit.warning(
                "uid=%d gid=%d pid=%d op=CONNECT result=refused: %s",
                peer.uid,
                peer.gid,
                peer.pid,
                refusal,
            )
            await self._send(stream, failure(ErrorCode.PERMISSION_DENIED, refusal).encode())
            await _linger(stream)
            return
        await self._converse(stream, peer)

    async def _converse(self, stream: trio.SocketStream, peer: PeerCredentials) -> None:
        decoder = RequestDecoder(self.limits.max_buffer)
        while not self._stopping:
            data = await self._receive(stream, decoder)
            if not data:
                return
            decoder.receive_data(data)
            replies = []
            while isinstance(event := decoder.next_event(), Request | BadRequest):
                replies.append(self._answer(event, peer).encode())
            if replies:
                await self._send(stream, b"".join(replies))

    async def _receive(self, stream: trio.SocketStream, decoder: RequestDecoder) -> bytes:
        """The next bytes, or b"" when the client left, idled out, or we are stopping."""
        with trio.CancelScope() as scope:
            self._idle.add(scope)
            try:
                with trio.move_on_after(self.limits.idle_timeout) as idle:
                    return await stream.receive_some(decoder.max_buffer - decoder.buffered)
            finally:
                self._idle.discard(scope)
        if idle.cancelled_caught:
            log.info("closing a connection idle for %gs", self.limits.idle_timeout)
        return b""

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        """Send, but never wait on a client that does not read for longer than the idle
        timeout; at shutdown the grace deadline of the client nursery bounds it too."""
        with trio.move_on_after(self.limits.idle_timeout) as stalled:
            await stream.send_all(data)
        if stalled.cancelled_caught:
            log.info("dropping a client that does not read its replies")
            raise trio.BrokenResourceError

    def _answer(self, event: Request | BadRequest, peer: PeerCredentials) -> Response:
        if isinstance(event, BadRequest):
            audit.info(
                "uid=%d gid=%d pid=%d op=? result=error %d: %s",
                peer.uid,
                peer.gid,
                peer.pid,
                event.code,
                event.message,
            )
            return failure(event.code, event.message)
        try:
            response = self.handler.handle(event)
        except Exception:
            log.exception("internal error handling %s", event)
            response = failure(ErrorCode.INTERNAL, "internal error in hycan-daemon (see its log)")
        audit.info(
            "uid=%d gid=%d pid=%d op=%s name=%s result=%s",
            peer.uid,
            peer.gid,
            peer.pid,
            event.op.name,
            event.name.decode("utf-8", "backslashreplace"),
            "ok" if response.success else f"error {response.code}: {response.message}",
        )
        return response


async def _linger(stream: trio.SocketStream, seconds: float = 1.0) -> None:
    """Half-close and drain briefly, so a refused client reads our answer instead of a reset."""
    await stream.send_eof()
    with trio.move_on_after(seconds):
        while await stream.receive_some(4096):
            pass
