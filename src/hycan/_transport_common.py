"""Pieces shared by the sync and trio transports: error texts and the in-process path."""

from __future__ import annotations

import contextlib
import os
import pwd
from typing import TYPE_CHECKING

from hycan._peercred import SocketLike, peer_ucred
from hycan._protocol import BadRequest, Request, RequestDecoder, Response, failure
from hycan.errors import DaemonUnavailable, PermissionDenied

if TYPE_CHECKING:
    from hycan._handler import Handler

NO_FALLBACK_ENV = "HYCAN_NO_FALLBACK"
DAEMON_UID_ENV = "HYCAN_DAEMON_UID"
RECV_SIZE = 65536

SERVICE_USER = "hycan"
"""The system user deploy/ runs the daemon as (deploy/sysusers.d/hycan.conf)."""


def trusted_server_uids() -> set[int]:
    """Who may serve us: root, ourselves, the ``hycan`` system user if it exists, and
    ``$HYCAN_DAEMON_UID``. Creating users takes root, so none of these is a squatter."""
    uids = {0, os.geteuid()}
    with contextlib.suppress(KeyError):
        uids.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    configured = os.environ.get(DAEMON_UID_ENV, "")
    if configured.isdigit():
        uids.add(int(configured))
    return uids


def check_server(sock: SocketLike, path: str) -> None:
    """Refuse a socket served by an unexpected uid (e.g. squatted in /tmp by another user)."""
    _pid, uid, _gid = peer_ucred(sock)
    if uid not in trusted_server_uids():
        raise PermissionDenied(
            f"refusing to use {path}: it is served by uid {uid}, not by root, the "
            f"{SERVICE_USER!r} user or ${DAEMON_UID_ENV}; it may be a socket squatted by "
            f"another user. Set "
            f"{DAEMON_UID_ENV}={uid} if that uid really runs hycan-daemon."
        )


def unavailable(tried: tuple[str, ...], reason: str) -> DaemonUnavailable:
    """The error for "no daemon answered", naming every path tried and how to start one."""
    paths = ", ".join(tried)
    return DaemonUnavailable(
        f"no hycan daemon answered on {paths} ({reason}). Start one with "
        "`sudo hycan-daemon` (or `sudo systemctl start hycan-daemon.socket`), or point "
        "HYCAN_DAEMON_SOCKET at a running daemon's socket."
    )


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

    return Handler(NetlinkBackend(), backend_name="in-process netlink")


def handle_locally(handler: Handler, frame: bytes) -> Response:
    """Run one encoded request through ``handler`` exactly as the daemon would."""
    decoder = RequestDecoder()
    decoder.receive_data(frame)
    event = decoder.next_event()
    if isinstance(event, Request):
        return handler.handle(event)
    if isinstance(event, BadRequest):
        return failure(event.code, event.message)
    raise AssertionError("a client frame is always complete")
