"""The trio server: one nursery task per admitted client, bytes through the sans-IO decoder.

Admission happens in the accept loop itself, before any task exists: the peer's kernel
credentials are read, and a peer that is not admitted, or over a limit (``--max-clients``,
``--max-clients-per-uid``), is answered at once and closed. So a refused or over-cap
connection never holds a slot that an admitted client needs, however many are made.

A client's first request is answered by the accept loop too (the C++ client's pattern,
connect, one request, close, then costs no task; see docs/perf.md): the accept loop waits
on one epoll set that holds the listener and the admitted connections that have no task
yet. Such a connection gets its task as soon as it sends a second time, holds a lease or
a watch, has a reply the socket did not take, or has been open for ``_DOORSTEP`` seconds
(at most one more second passes until the tick sees it); until then its EOF is read and
its session ended there. The accept loop polls that set before it waits (a busy door
costs no scheduler round) and lets the client tasks run every ``_STREAK`` busy passes;
each pass serves for at most ``_TURN``.

A client task reads whatever has arrived, turns the complete frames into responses (at
most ``_BATCH`` per turn) and writes them back in one send, so pipelined requests cost one
read and one write. Handlers are synchronous and answer in microseconds; no client waits
on another: a pipelining client yields after each batch, a busy one every ``_STREAK``
reads.

Fault containment: an unexpected exception while serving one client (a bug) is logged
once with its traceback, that client gets "internal error" and its connection is closed;
the server and every other client go on.

The hot path is kept short (see docs/perf.md): stdlib sockets in non-blocking mode, read
before waiting (``trio.lowlevel.wait_readable`` only when nothing is there yet), one
cancel scope per connection whose deadline (the idle timeout) moves at most once a second,
and audit lines written after the replies, in one write per batch.

:meth:`Server.shutdown` stops accepting, drops idle clients at once, and gives clients in
the middle of a request ``grace`` seconds to receive their answers.
"""

from __future__ import annotations

import errno
import logging
import math
import select
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from hycan._handler import Handler, Session
from hycan._peercred import PeerCredentials, peer_credentials
from hycan._protocol import (
    DEFAULT_MAX_BUFFER,
    BadRequest,
    Op,
    Request,
    RequestDecoder,
    Response,
    failure,
    ok,
)
from hycan._trio_io import receive_with_fds, recv_with_fds, send_all
from hycan.daemon.audit import SUMMARY_EVERY, AuditLog, Throttle
from hycan.daemon.policy import AccessPolicy
from hycan.daemon.watch import Watcher, WatchHub
from hycan.errors import ErrorCode

log = logging.getLogger("hycan.daemon")

# accept() failures that mean "out of resources for now", not "the listener is broken"
# (as in trio's serve_listeners): wait and retry instead of dying.
_ACCEPT_CAPACITY_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_READ_ONLY_OPS = frozenset({Op.PING, Op.STATUS, Op.LIST})  # audited at DEBUG when they succeed
_STREAK = 8  # requests read without waiting before other clients get a turn
_BATCH = 64  # pipelined requests answered per turn...
_TURN = 0.001  # ...or fewer, once a turn has taken this long (seconds of kernel work)
_DEADLINE_STEP = 1.0  # move a connection's idle deadline at most this often (seconds)
_DOORSTEP = 1.0  # seconds a connection may wait without a task of its own
_INTERNAL_ERROR = failure(
    ErrorCode.INTERNAL, "internal error in hycan-daemon (see its log)"
).encode()

T = TypeVar("T")
Authorizer = Callable[[PeerCredentials], str | None]
"""Returns None to admit a peer, or the reason it is refused."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the daemon (each has a ``hycan-daemon`` flag)."""

    max_clients: int = 256
    max_clients_per_uid: int = 16  # root is exempt
    idle_timeout: float = 300.0  # seconds without a complete request (or a reply read)
    max_buffer: int = DEFAULT_MAX_BUFFER  # bytes buffered per connection
    grace: float = 2.0  # seconds in-flight requests get at shutdown


class _OutOfResources(Exception):
    """accept() failed for lack of descriptors or memory: retry later."""


class _Greeting:
    """An admitted connection served by the accept loop until it needs a task."""

    __slots__ = ("answered", "decoder", "session", "since", "sock")

    def __init__(self, sock: socket.socket, session: Session, max_buffer: int) -> None:
        self.sock = sock
        self.session = session
        self.decoder = RequestDecoder(max_buffer)
        self.since = trio.current_time()
        self.answered = False  # its first request has been answered


class _Connection:
    """One client's socket and cancel scope, and whether it is waiting for a request."""

    __slots__ = ("_streak", "idle", "scope", "session", "sock")

    def __init__(self, sock: socket.socket, scope: trio.CancelScope, session: Session) -> None:
        self.sock = sock
        self.scope = scope
        self.session = session
        self.idle = False
        self._streak = 0  # reads in a row that did not wait

    async def receive(self, size: int) -> bytes:
        """The next bytes from the client (b"" at EOF). A descriptor that came with them
        (SCM_RIGHTS, for NETNS) goes to the session: one at most, and it is closed if
        no NETNS request of this read takes it.

        Tries the socket first: a busy client's next request is often already here, and
        reading it now skips a trip through the event loop. Every ``_STREAK`` such reads
        the other clients get their turn, so one that always has a request ready cannot
        starve the rest (shielded: what was read gets answered).
        """
        try:
            data, fds = recv_with_fds(self.sock, size)
        except BlockingIOError:
            self._streak = 0
            self.idle = True
            try:
                data, fds = await receive_with_fds(self.sock, size)
            finally:
                self.idle = False
        else:
            self._streak += 1
            if self._streak == _STREAK:
                self._streak = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
        for fd in fds:
            self.session.receive_fd(fd)
        return data


class Server:
    """Serves the protocol on a listening socket with a :class:`Handler`.

    ``authorize`` defaults to root and the daemon's own uid (``AccessPolicy.build``); the
    audit log defaults to stderr with failures throttled per uid.
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
        self.audit = audit or AuditLog(throttle=Throttle())
        self.hub = WatchHub(handler.backend)
        self.clients = 0
        self._per_uid: dict[int, int] = {}
        self._connections: set[_Connection] = set()
        self._watchers: dict[Session, Watcher] = {}  # after a WATCH: where its events wait
        self._greetings: dict[int, _Greeting] = {}  # by descriptor, oldest first
        self._door = select.epoll()  # the listener and every greeting's socket
        self._accepting = trio.CancelScope()
        self._ticking = trio.CancelScope()
        self._stopping = False
        self._nursery: trio.Nursery | None = None

    async def serve(
        self,
        sock: socket.socket,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept clients until :meth:`shutdown`; ``started()`` once accepting. A server
        serves once.

        Returns when every client task has finished (bounded by ``limits.grace``).
        """
        sock.setblocking(False)
        listener = sock.fileno()
        door = self._door
        door.register(listener, select.EPOLLIN)
        try:
            async with trio.open_nursery() as clients:
                self._nursery = clients
                clients.start_soon(self._tick)
                with self._accepting:
                    task_status.started()
                    streak = 0  # passes in a row that found work without waiting
                    while True:
                        try:
                            served = self._at_the_door(sock, clients)
                        except _OutOfResources as exc:
                            log.warning("accept failed (%s): retrying in 0.1 s", exc)
                            await trio.sleep(0.1)
                            continue
                        if not served:
                            streak = 0
                            await trio.lowlevel.wait_readable(door.fileno())
                        elif (streak := streak + 1) == _STREAK:
                            streak = 0
                            await trio.lowlevel.checkpoint()  # the clients' tasks get a turn
                self._ticking.cancel()
                clients.cancel_scope.deadline = trio.current_time() + self.limits.grace
        finally:
            self._send_away_greetings()
            door.close()
            self.audit.tick(final=True)

    def shutdown(self) -> None:
        """Stop accepting and drop idle clients; busy ones get ``limits.grace`` to finish."""
        self._stopping = True
        self._accepting.cancel()
        self._ticking.cancel()
        self._send_away_greetings()
        for connection in self._connections:
            if connection.idle:
                connection.scope.cancel()

    async def _tick(self) -> None:
        """Once a second: write the audit log's due summaries of suppressed lines, and
        give the connections that waited ``_DOORSTEP`` at the door their tasks."""
        with self._ticking:
            while True:
                await trio.sleep(SUMMARY_EVERY)
                self.audit.tick()
                if self._nursery is not None:
                    self._promote_the_patient(self._nursery)

    def _at_the_door(self, sock: socket.socket, clients: trio.Nursery) -> int:
        """Accept, and serve the greetings that have something to read, for at most one
        ``_TURN`` (the rest are still readable at the next call); how many were ready."""
        started = time.perf_counter()
        listener = sock.fileno()
        ready = self._door.poll(0, _BATCH)
        for fd, _ in ready:
            if fd == listener:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRORS:
                        raise
                    raise _OutOfResources(exc.strerror) from exc
                self._admit(conn, clients)
            elif (greeting := self._greetings.get(fd)) is not None:
                self._greet(greeting, clients)
            if time.perf_counter() - started > _TURN:
                break
        if ready:
            self._promote_the_patient(clients)
        return len(ready)

    def _promote_the_patient(self, clients: trio.Nursery) -> None:
        """Give every connection that has waited ``_DOORSTEP`` at the door its task."""
        greetings = self._greetings
        if not greetings:
            return
        now = trio.current_time()
        while greetings:
            greeting = next(iter(greetings.values()))  # the oldest
            if now - greeting.since < _DOORSTEP:
                return
            self._promote(greeting, clients)

    def _admit(self, conn: socket.socket, clients: trio.Nursery) -> None:
        """Admit ``conn`` (and read its first request) or answer and close it at once."""
        try:
            conn.setblocking(False)
            peer = peer_credentials(conn)
            refusal = self._refusal(peer)
            if refusal is not None:
                result, code, message = refusal
                self.audit.connection(peer, result, code, message)
                _answer_and_close(conn, failure(code, message))
                return
        except OSError:
            conn.close()  # the client is already gone
            return
        except Exception:
            log.exception("unexpected error admitting a client: closed its connection")
            conn.close()
            return
        self.clients += 1
        self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        greeting = _Greeting(conn, Session(peer), self.limits.max_buffer)
        self._greetings[conn.fileno()] = greeting
        self._door.register(conn.fileno(), select.EPOLLIN)
        self._greet(greeting, clients)

    def _greet(self, greeting: _Greeting, clients: trio.Nursery) -> None:
        """Read what ``greeting`` sent: answer its first request here, end it at EOF, or
        give it a task (see the module's docstring on when)."""
        session, decoder = greeting.session, greeting.decoder
        try:
            try:
                data, fds = recv_with_fds(greeting.sock, decoder.max_buffer - decoder.buffered)
            except BlockingIOError:
                return  # nothing yet: it waits at the door
            for fd in fds:
                session.receive_fd(fd)
            if not data:
                self._close_greeting(greeting)
                return
            decoder.receive_data(data)
            if greeting.answered:
                self._promote(greeting, clients)  # a second request: a client of many calls
                return
            replies, fault, more = self._answer_batch(decoder, session)
            unsent = b"".join(replies)
            if unsent:
                greeting.answered = True
                unsent = unsent[_send_now(greeting.sock, unsent) :]
            self.audit.flush()
        except OSError:
            self._close_greeting(greeting)  # the client went away
            return
        except Exception:
            peer = session.peer
            log.exception(
                "unexpected error greeting uid %d pid %d: closed its connection", peer.uid, peer.pid
            )
            self._close_greeting(greeting)
            return
        if fault:
            self._close_greeting(greeting)
        elif more or unsent or session.holds or session in self._watchers:
            self._promote(greeting, clients, unsent)

    def _promote(self, greeting: _Greeting, clients: trio.Nursery, unsent: bytes = b"") -> None:
        """Give ``greeting`` its task: it answers what the decoder holds and sends ``unsent``."""
        self._leave_the_door(greeting)
        clients.start_soon(self._serve_client, greeting, unsent)

    def _close_greeting(self, greeting: _Greeting) -> None:
        self._leave_the_door(greeting)
        greeting.sock.close()
        self._end_session(greeting.session)

    def _leave_the_door(self, greeting: _Greeting) -> None:
        fd = greeting.sock.fileno()
        if self._greetings.pop(fd, None) is not None:  # once, even on an error path
            self._door.unregister(fd)

    def _send_away_greetings(self) -> None:
        """Close the connections that have no task (all idle: shutting down)."""
        for greeting in list(self._greetings.values()):
            self._close_greeting(greeting)

    def _refusal(self, peer: PeerCredentials) -> tuple[str, ErrorCode, str] | None:
        """Why ``peer`` may not have a connection now, as (result, code, message)."""
        reason = self.authorize(peer)
        if reason is not None:
            return "refused", ErrorCode.PERMISSION_DENIED, reason
        limits = self.limits
        if self.clients >= limits.max_clients:
            return (
                "busy",
                ErrorCode.BUSY,
                f"hycan-daemon is busy: {limits.max_clients} clients connected "
                "(--max-clients); try again later",
            )
        cap = limits.max_clients_per_uid
        if peer.uid != 0 and self._per_uid.get(peer.uid, 0) >= cap:
            return (
                "busy",
                ErrorCode.BUSY,
                f"too many connections: uid {peer.uid} already has {cap} open, and "
                f"hycan-daemon allows {cap} connections per uid (--max-clients-per-uid); "
                "close some or share one (a client carries any number of calls)",
            )
        return None

    async def _serve_client(self, greeting: _Greeting, unsent: bytes) -> None:
        session = greeting.session
        try:
            with greeting.sock:
                await self._converse(greeting, unsent)
        except OSError:
            pass  # the client went away (reset, broken pipe); closing is all there is to do
        except Exception:
            peer = session.peer
            log.exception(
                "unexpected error serving uid %d pid %d: closed its connection", peer.uid, peer.pid
            )
        finally:
            self._end_session(session)

    def _end_session(self, session: Session) -> None:
        """However a connection ended (EOF, reset, idle timeout, shutdown, a bug), its
        leases end with it: synchronous, so no cancellation can cut this short."""
        if (watcher := self._watchers.pop(session, None)) is not None:
            self.hub.unsubscribe(watcher)
        self._end_leases(session)
        self.clients -= 1
        uid = session.peer.uid
        left = self._per_uid[uid] - 1
        if left:
            self._per_uid[uid] = left
        else:
            del self._per_uid[uid]
        self.audit.flush()

    def _end_leases(self, session: Session) -> None:
        """Delete what the session leased; close the namespaces it entered."""
        if not (session.holds or session.places or session.pending_fd is not None):
            return
        try:
            for name, problem in self.handler.release(session):
                self.audit.lease_ended(session.peer, name, problem)
        except Exception:
            log.exception("unexpected error ending the leases of uid %d", session.peer.uid)

    async def _converse(self, greeting: _Greeting, unsent: bytes) -> None:
        conn, session, decoder = greeting.sock, greeting.session, greeting.decoder
        idle_timeout = self.limits.idle_timeout
        # The deadline is moved only when a complete request was answered (at most once a
        # _DEADLINE_STEP, hence the extra step): a connection that completes no request for
        # idle_timeout (idle, dripping a partial frame, or not reading its replies) is closed
        # within idle_timeout + _DEADLINE_STEP. A connection holding leases may wait for
        # its next request as long as it likes (closing it would delete its links), but
        # not take longer than idle_timeout to read a reply.
        moved = greeting.since
        deadline = math.inf if session.holds else moved + idle_timeout + _DEADLINE_STEP
        with trio.CancelScope(deadline=deadline) as scope:
            connection = _Connection(conn, scope, session)
            self._connections.add(connection)
            # What the accept loop could not send, and whether requests it read are left.
            replies, fault, more = ([unsent] if unsent else []), False, decoder.buffered > 0
            try:
                while True:
                    if replies:
                        if session.holds:
                            scope.deadline = trio.current_time() + idle_timeout
                        await send_all(conn, b"".join(replies))
                        now = trio.current_time()
                        if session.holds:
                            scope.deadline = math.inf
                        elif now - moved >= _DEADLINE_STEP or scope.deadline == math.inf:
                            scope.deadline = now + idle_timeout + _DEADLINE_STEP
                            moved = now
                    self.audit.flush()
                    if fault or self._stopping:
                        return
                    if (watcher := self._watchers.get(session)) is not None:
                        if not decoder.buffered:  # a watching connection sends nothing
                            await self._stream(connection, watcher)
                        return
                    if more:
                        # A pipelining client gets one batch per turn, then the others.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    else:
                        data = await connection.receive(decoder.max_buffer - decoder.buffered)
                        if not data:
                            return
                        decoder.receive_data(data)
                    replies, fault, more = self._answer_batch(decoder, session)
            finally:
                self._connections.discard(connection)
        if scope.cancelled_caught and not self._stopping:
            log.info(
                "closed the connection of uid %d pid %d: no complete request (or reply read) "
                "for %gs",
                session.peer.uid,
                session.peer.pid,
                idle_timeout,
            )

    async def _stream(self, connection: _Connection, watcher: Watcher) -> None:
        """Send ``watcher``'s events until the client closes the connection or sends
        anything (a watching connection carries no more requests), or the watch ends."""
        connection.scope.deadline = math.inf  # a watcher may wait for events for ever
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_input, connection, nursery.cancel_scope)
            while (events := await _idle(connection, watcher.events())) is not None:
                await send_all(connection.sock, b"".join(ok(e.to_json()).encode() for e in events))
            nursery.cancel_scope.cancel()

    def _answer_batch(
        self, decoder: RequestDecoder, session: Session
    ) -> tuple[list[bytes], bool, bool]:
        """The encoded replies of one turn: at most ``_BATCH``, and no more once the turn took
        ``_TURN`` (a pipeline of slow link changes must not hold up other clients). Also
        whether answering failed (a bug: logged, answered "internal error", and the
        connection is to be closed) and whether the turn ended with requests left; once
        none are left, a received descriptor no NETNS took is closed."""
        replies: list[bytes] = []
        fault = more = False
        started = time.perf_counter()
        while isinstance(event := decoder.next_event(), Request | BadRequest):
            try:
                replies.append(self._answer(event, session))
            except Exception:
                log.exception(
                    "internal error answering uid %d pid %d: closing its connection",
                    session.peer.uid,
                    session.peer.pid,
                )
                replies.append(_INTERNAL_ERROR)
                fault = True
                break
            if session in self._watchers:
                break  # the connection carries events from now on
            if len(replies) == _BATCH or time.perf_counter() - started > _TURN:
                more = True
                break
        if not more:
            session.drop_fd()  # a descriptor sent with requests none of which was NETNS
        return replies, fault, more

    def _answer(self, event: Request | BadRequest, session: Session) -> bytes:
        audit = self.audit
        peer = session.peer
        if isinstance(event, BadRequest):
            audit.request(peer, event.op_label, event.name, code=event.code, message=event.message)
            return failure(event.code, event.message).encode()
        response, link = self.handler.answer(event, session)
        if session.watch is not None:  # WATCH answered: listen before it is sent
            response = self._subscribe(session, session.watch) or response
        ok = response.success
        audit.request(
            peer,
            event.op.name,
            event.name,
            code=None if ok else response.code,
            message=response.message,
            link=link,
            routine=ok and event.op in _READ_ONLY_OPS,
        )
        return response.encode()

    def _subscribe(self, session: Session, names: frozenset[str]) -> Response | None:
        """Start ``session``'s watch before its WATCH is answered (no later change is
        missed); if the kernel cannot be listened to, the response that replaces WATCH's."""
        assert self._nursery is not None
        try:
            self._watchers[session] = self.hub.subscribe(names or None, self._nursery)
        except OSError as exc:
            session.watch = None
            return failure(ErrorCode.INTERNAL, f"cannot watch links: {exc.strerror or exc}")
        return None


async def _idle(connection: _Connection, waiting: Awaitable[T]) -> T:
    """Await ``waiting`` with the connection marked idle (shutdown closes idle ones)."""
    connection.idle = True
    try:
        return await waiting
    finally:
        connection.idle = False


async def _cancel_on_input(connection: _Connection, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client closes its end or sends anything."""
    await connection.receive(1)
    scope.cancel()


def _send_now(sock: socket.socket, data: bytes) -> int:
    """Send what the socket takes without waiting; how many bytes that was."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def _answer_and_close(conn: socket.socket, response: Response) -> None:
    """Send ``response`` if the socket takes it now, and close: a refused client reads the
    answer before the EOF (its own unread request does not destroy what we sent)."""
    try:
        conn.send(response.encode())
    except OSError:
        pass
    finally:
        conn.close()
