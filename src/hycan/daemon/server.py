"""The trio server: one nursery task per client, bytes through the sans-IO decoder.

A client task reads whatever has arrived, turns every complete frame into a response, and
writes all of them back in one ``send_all`` (so pipelined requests cost one read and one
write). Handlers are synchronous and answer in microseconds; no client waits on another.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio

from hycan._handler import Handler
from hycan._protocol import BadRequest, Request, RequestDecoder, Response, failure
from hycan.daemon.peercred import PeerCredentials, peer_credentials
from hycan.daemon.policy import AccessPolicy
from hycan.errors import ErrorCode

log = logging.getLogger("hycan.daemon")
audit = logging.getLogger("hycan.audit")

Authorizer = Callable[[PeerCredentials], str | None]
"""Returns None to admit a peer, or the reason it is refused."""


class Server:
    """Serves the protocol on a listening socket with a :class:`Handler`.

    ``authorize`` defaults to root and the daemon's own uid (``AccessPolicy.build``).
    """

    def __init__(self, handler: Handler, authorize: Authorizer | None = None) -> None:
        self.handler = handler
        self.authorize = authorize or AccessPolicy.build(group=None).authorize

    async def serve(
        self,
        sock: socket.socket,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept clients forever (until cancelled); ``started()`` once accepting."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await trio.serve_listeners(self._serve_client, [listener], task_status=task_status)

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                peer = peer_credentials(stream.socket)
            except OSError:
                return  # the client is already gone
            refusal = self.authorize(peer)
            try:
                if refusal is not None:
                    audit.warning(
                        "uid=%d gid=%d pid=%d op=CONNECT result=refused: %s",
                        peer.uid,
                        peer.gid,
                        peer.pid,
                        refusal,
                    )
                    await stream.send_all(failure(ErrorCode.PERMISSION_DENIED, refusal).encode())
                    await _linger(stream)
                    return
                await self._converse(stream, peer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; nothing to clean up beyond the stream

    async def _converse(self, stream: trio.SocketStream, peer: PeerCredentials) -> None:
        decoder = RequestDecoder()
        while True:
            data = await stream.receive_some(decoder.max_buffer - decoder.buffered)
            if not data:
                return
            decoder.receive_data(data)
            replies = []
            while isinstance(event := decoder.next_event(), Request | BadRequest):
                replies.append(self._answer(event, peer).encode())
            if replies:
                await stream.send_all(b"".join(replies))

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
