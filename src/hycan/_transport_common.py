"""Pieces shared by the sync and trio transports: error texts and the in-process path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hycan._protocol import BadRequest, Request, RequestDecoder, Response, failure
from hycan._trust import permission_refused
from hycan.errors import DaemonUnavailable, HycanError, ProtocolError, Timeout

if TYPE_CHECKING:
    from hycan._handler import Handler, Session

NO_FALLBACK_ENV = "HYCAN_NO_FALLBACK"
RECV_SIZE = 65536


def unavailable(tried: tuple[str, ...], reason: str) -> DaemonUnavailable:
    """The error for "no daemon answered", naming every path tried and how to start one."""
    paths = ", ".join(tried)
    return DaemonUnavailable(
        f"no hycan daemon answered on {paths} ({reason}). Start one with "
        "`sudo hycan-daemon` (or `sudo systemctl start hycan-daemon.socket`), or point "
        "HYCAN_DAEMON_SOCKET at a running daemon's socket."
    )


def connect_failed(exc: OSError, tried: tuple[str, ...], path: str) -> HycanError:
    """The error for a connect(2) that failed: the kernel's refusal, or no daemon."""
    if isinstance(exc, PermissionError):
        return permission_refused(path)
    return unavailable(tried, exc.strerror or str(exc))


def timed_out(path: str) -> Timeout:
    """The error for a call whose deadline passed."""
    return Timeout(f"the hycan daemon on {path} did not answer in time")


def extra_reply(path: str) -> ProtocolError:
    """The error for bytes beyond the one reply a request gets (replies would shift)."""
    return ProtocolError(f"the daemon on {path} sent more than one reply to one request")


class ConnectionLost(DaemonUnavailable):
    """The daemon closed an open connection; a client may reconnect once and retry."""


def connection_lost(path: str) -> ConnectionLost:
    """The error for a daemon that went away in the middle of a call."""
    return ConnectionLost(f"the hycan daemon on {path} closed the connection mid-call")


def fallback_wanted(explicit_path: bool, fallback: bool | None) -> bool:
    """Whether to act in-process when no daemon answers (see README: fallback rules)."""
    if explicit_path or fallback is False:
        return False
    return os.environ.get(NO_FALLBACK_ENV, "") in ("", "0")


def local_handler() -> Handler | None:
    """A netlink handler for this process, if it holds CAP_NET_ADMIN; else None."""
    from hycan._caps import has_cap_net_admin
    from hycan._handler import Handler

    if not has_cap_net_admin():
        return None
    from hycan.backends.netlink import NetlinkBackend
    from hycan.daemon.policy import Policy

    policy = Policy.unrestricted(os.geteuid())
    return Handler(NetlinkBackend(), backend_name="in-process netlink", policy=policy)


def local_session() -> Session:
    """The in-process fallback's session: this process's own credentials."""
    from hycan._handler import Session
    from hycan._peercred import PeerCredentials

    return Session(PeerCredentials(os.getpid(), os.geteuid(), os.getegid(), tuple(os.getgroups())))


def handle_locally(
    handler: Handler, session: Session, frame: bytes, fd: int | None = None
) -> Response:
    """Run one encoded request through ``handler`` exactly as the daemon would (a passed
    ``fd`` is duplicated, as the kernel does for SCM_RIGHTS)."""
    if fd is not None:
        session.receive_fd(os.dup(fd))
    decoder = RequestDecoder()
    decoder.receive_data(frame)
    event = decoder.next_event()
    if isinstance(event, Request):
        try:
            return handler.answer(event, session).response
        finally:
            session.drop_fd()
    if isinstance(event, BadRequest):
        return failure(event.code, event.message)
    raise AssertionError("a client frame is always complete")
