"""The trio server: one nursery task per client, bytes through the sans-IO decoder.

A client task reads whatever has arrived, turns every complete frame into a response, and
writes all of them back in one ``send_all`` (so pipelined requests cost one read and one
write). Handlers are synchronous and answer in microseconds; no client waits on another.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import trio

from hycan._handler import Handler
from hycan._protocol import BadRequest, Request, RequestDecoder, Response, failure
from hycan.errors import ErrorCode

log = logging.getLogger("hycan.daemon")

_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a connection (SO_PEERCRED, taken at connect time)."""

    pid: int
    uid: int
    gid: int


Authorizer = Callable[[Peer], str | None]
"""Returns None to admit a peer, or the reason it is refused."""


def own_uid_or_root(peer: Peer) -> str | None:
    """Admit root and the daemon's own uid."""
    if peer.uid in (0, os.geteuid()):
        return None
    return f"uid {peer.uid} may not use this daemon (only root and uid {os.geteuid()})"


def peer_of(sock: trio.socket.SocketType) -> Peer:
    """Read the kernel's credentials of the peer of a connected Unix socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Peer(pid, uid, gid)


class Server:
    """Serves the protocol on a listening socket with a :class:`Handler`."""

    def __init__(self, handler: Handler, authorize: Authorizer = own_uid_or_root) -> None:
        self.handler = handler
        self.authorize = authorize

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
                peer = peer_of(stream.socket)
            except OSError:
                return  # the client is already gone
            refusal = self.authorize(peer)
            try:
                if refusal is not None:
                    log.warning(
                        "refused pid=%d uid=%d gid=%d: %s", peer.pid, peer.uid, peer.gid, refusal
                    )
                    await stream.send_all(failure(ErrorCode.PERMISSION_DENIED, refusal).encode())
                    return
                await self._converse(stream, peer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; nothing to clean up beyond the stream

    async def _converse(self, stream: trio.SocketStream, peer: Peer) -> None:
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

    def _answer(self, event: Request | BadRequest, peer: Peer) -> Response:
        if isinstance(event, BadRequest):
            log.info("uid=%d pid=%d bad request: %s", peer.uid, peer.pid, event.message)
            return failure(event.code, event.message)
        try:
            response = self.handler.handle(event)
        except Exception:
            log.exception("internal error handling %s", event)
            response = failure(ErrorCode.INTERNAL, "internal error in hycan-daemon (see its log)")
        log.info(
            "uid=%d gid=%d pid=%d op=%s name=%s result=%s",
            peer.uid,
            peer.gid,
            peer.pid,
            event.op.name,
            event.name.decode("utf-8", "backslashreplace"),
            "ok" if response.success else f"error {response.code}: {response.message}",
        )
        return response
